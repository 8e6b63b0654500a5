"""Answers as models (and people's own prompts) write them: the corpus in tests/answers/ gives its chapters.

Each ``NAME.md`` is an answer; ``NAME.json`` beside it holds the video's duration and the chapters a
person reads in it (start, end, title). The timeline, the SRT/WebVTT/YouTube chapter files and the JSON's
chapters all follow from the same reading, so each answer must give all of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qwen3vl_summarizer.export import Chapter, Summary, get_writer, parse_chapters
from qwen3vl_summarizer.timeline import chapter_timeline
from qwen3vl_summarizer.timestamps import link_timestamps, parse_timestamp

ANSWERS = Path(__file__).parent / "answers"
NAMES = sorted(p.stem for p in ANSWERS.glob("*.md"))


def _expected(name: str) -> tuple[float, list[Chapter]]:
    data = json.loads((ANSWERS / f"{name}.json").read_text(encoding="utf-8"))
    chapters = [Chapter(parse_timestamp(a), parse_timestamp(b), t) for a, b, t in data["chapters"]]
    return parse_timestamp(data["duration"]), chapters


def _answer(name: str) -> str:
    return (ANSWERS / f"{name}.md").read_text(encoding="utf-8")


def test_the_corpus_has_twenty_shapes_in_both_languages() -> None:
    assert len(NAMES) >= 20
    assert all((ANSWERS / f"{n}.json").is_file() for n in NAMES)
    chinese = [n for n in NAMES if re.search(r"[\u4e00-\u9fff]", _answer(n))]
    assert len(chinese) >= 8 and len(NAMES) - len(chinese) >= 8


@pytest.mark.parametrize("name", NAMES)
def test_answer_gives_its_chapters(name: str) -> None:
    duration, expected = _expected(name)
    chapters, warnings = parse_chapters(_answer(name), duration)
    assert chapters == expected
    assert warnings == []


@pytest.mark.parametrize("name", NAMES)
def test_linked_answer_gives_the_same_chapters(name: str) -> None:
    """The page shows the answer with its times as seek links; reading that gives the same chapters."""
    duration, _ = _expected(name)
    answer = _answer(name)
    assert parse_chapters(link_timestamps(answer, duration), duration) == parse_chapters(answer, duration)


@pytest.mark.parametrize("name", NAMES)
def test_answer_gives_a_timeline_and_chapter_files(name: str) -> None:
    duration, expected = _expected(name)
    answer = _answer(name)
    html = chapter_timeline(answer, duration)
    assert html.count('class="timeline-span"') == len(expected)
    for chapter in expected:
        assert f'data-title="{chapter.title.replace("&", "&amp;")}"' in html

    summary = Summary(markdown=answer, video="v.mp4", duration=duration, model="m", prompt="p")
    srt = get_writer("srt").to_string(summary)
    assert srt.count(" --> ") == len(expected)
    vtt = get_writer("vtt")
    assert vtt.has_content(vtt.to_string(summary))
    youtube = get_writer("chapters").to_string(summary).splitlines()
    assert [line.split(" ", 1)[1] for line in youtube][-len(expected) :] == [c.title for c in expected]
    data = json.loads(get_writer("json").to_string(summary))
    assert [(c["start"], c["end"], c["title"]) for c in data["chapters"]] == [
        (c.start, c.end, c.title) for c in expected
    ]
