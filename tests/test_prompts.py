"""The prompt files in prompts/ and the loader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwen3vl_summarizer.errors import OptionsError
from qwen3vl_summarizer.prompts import PROMPTS_DIR, PromptTemplate, list_prompts, load_prompt
from qwen3vl_summarizer.timestamps import find_timestamps

KINDS = ("general", "lecture", "meeting", "highlights", "merge")
NAMES = list(KINDS) + [f"{k}.zh" for k in KINDS]
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _cjk_share(text: str) -> float:
    """Share of CJK characters among letters (CJK + ASCII letters), outside the format placeholders."""
    text = re.sub(r"\{\w+\}|HH|MM|SS|<[^>]*>|\*\*|Markdown", "", text)
    cjk = len(_CJK.findall(text))
    latin = len(re.findall(r"[A-Za-z]", text))
    return cjk / max(cjk + latin, 1)


def test_default_dir_is_the_repository_prompts_folder() -> None:
    assert Path(__file__).resolve().parent.parent / "prompts" == PROMPTS_DIR
    assert PROMPTS_DIR.is_dir()


def test_every_expected_prompt_exists() -> None:
    names = [p.name for p in list_prompts()]
    assert names == sorted(names)
    assert set(NAMES) <= set(names)


@pytest.mark.parametrize("name", NAMES)
def test_prompt_loads_with_front_matter(name: str) -> None:
    p = load_prompt(name)
    assert isinstance(p, PromptTemplate)
    assert p.name == name
    assert p.title and p.title != name
    assert p.language == ("zh" if name.endswith(".zh") else "en")
    assert p.text and not p.text.startswith("---")
    assert "title:" not in p.text and "language:" not in p.text
    raw = (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8")
    assert raw.startswith(f"---\ntitle: {p.title}\nlanguage: {p.language}\n---\n")


@pytest.mark.parametrize("name", NAMES)
def test_prompt_asks_for_timestamps_in_the_expected_style(name: str) -> None:
    text = load_prompt(name).text
    assert "[MM:SS]" in text or "[MM:SS–MM:SS]" in text
    assert "HH:MM:SS" in text  # long videos
    if not name.startswith("merge"):
        assert "<12.5 seconds>" in text  # explains how the model sees time
        assert "[03:25]" in text  # one worked example
        assert find_timestamps(text)  # the example itself is a time our parser reads


@pytest.mark.parametrize("name", [n for n in NAMES if not n.endswith(".zh")])
def test_english_prompts_mention_timestamps(name: str) -> None:
    text = load_prompt(name).text.lower()
    assert "time" in text
    assert _cjk_share(text) == 0


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith(".zh")])
def test_chinese_prompts_are_in_chinese(name: str) -> None:
    p = load_prompt(name)
    assert _CJK.search(p.title)
    assert _cjk_share(p.text) > 0.8
    assert "时间" in p.text


@pytest.mark.parametrize("kind", KINDS)
def test_chinese_prompts_have_the_same_structure(kind: str) -> None:
    en, zh = load_prompt(kind).text, load_prompt(f"{kind}.zh").text
    headings = re.compile(r"^#{2,3} ", re.MULTILINE)
    assert len(headings.findall(en)) == len(headings.findall(zh))
    assert en.count("- [MM:SS]") == zh.count("- [MM:SS]")
    assert en.count("[MM:SS–MM:SS]") == zh.count("[MM:SS–MM:SS]")


@pytest.mark.parametrize("name", ["merge", "merge.zh"])
def test_merge_prompts_take_segments(name: str) -> None:
    p = load_prompt(name)
    assert p.text.count("{segments}") == 1
    filled = p.render(segments="## Part 1\n- [00:05] Hello")
    assert "{segments}" not in filled and "- [00:05] Hello" in filled
    assert "### [MM:SS–MM:SS]" in filled


@pytest.mark.parametrize("name", ["lecture", "lecture.zh"])
def test_lecture_prompts_show_chapter_headings(name: str) -> None:
    assert "### [MM:SS–MM:SS]" in load_prompt(name).text


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("merge")])
def test_only_merge_prompts_have_placeholders(name: str) -> None:
    assert "{segments}" not in load_prompt(name).text


def test_prompts_are_concise() -> None:
    for p in list_prompts():
        assert len(p.text.splitlines()) <= 40, p.name


def test_unknown_prompt_lists_the_available_ones() -> None:
    with pytest.raises(OptionsError, match=r"available: .*general.*lecture"):
        load_prompt("nope")
    with pytest.raises(OptionsError):
        load_prompt("../pyproject")


def test_load_accepts_file_name() -> None:
    assert load_prompt("lecture.md") == load_prompt("lecture")


def test_custom_folder_and_missing_front_matter(tmp_path: Path) -> None:
    (tmp_path / "mine.md").write_text("Just describe it.\n", encoding="utf-8")
    (tmp_path / "mine.zh.md").write_text("---\ntitle: 'Mine'\n---\n描述一下。\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    prompts = list_prompts(tmp_path)
    assert [p.name for p in prompts] == ["mine", "mine.zh"]
    assert prompts[0] == PromptTemplate("mine", "mine", "en", "Just describe it.")
    assert prompts[1] == PromptTemplate("mine.zh", "Mine", "zh", "描述一下。")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="not found"):
        list_prompts(tmp_path / "absent")
