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

from qwen3vl_summarizer.export import (
    PARTS_HEADING,
    QUESTION_HEADING,
    Chapter,
    Summary,
    get_writer,
    parse_chapters,
)
from qwen3vl_summarizer.timestamps import link_timestamps, parse_timestamp
from web.render import chapter_timeline

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


# --- which lines are chapters -----------------------------------------------------------------------


def test_chapters_come_from_the_summary_not_from_follow_up_answers() -> None:
    summary = "## Chapters\n- [00:00–02:00] Intro\n- [02:00–05:00] Demo\n"
    follow_up = "- [00:30] A logo\n- [01:10] A chart\n- [04:00] A dog\n"
    markdown = summary + QUESTION_HEADING.format(question="What happens **at** 00:30?") + follow_up
    assert parse_chapters(markdown, 300) == parse_chapters(summary, 300)
    # A summary without chapters: the latest follow-up answer that has them gives them.
    markdown = "Just prose." + QUESTION_HEADING.format(question="请按时间顺序划分章节") + summary
    assert parse_chapters(markdown, 300) == parse_chapters(summary, 300)


def test_a_segmented_answer_reads_its_merged_summary_first() -> None:
    from qwen3vl_summarizer import summarize

    assert summarize.PARTS_HEADING == PARTS_HEADING  # the answer summarize writes is the one read here
    merged = "## Chapters\n### [00:00–10:00] First half\n### [10:00–20:00] Second half\n"
    parts = "### Part 1 of 2 (00:00–12:00)\n### [00:00–05:00] Opening\n### Part 2 of 2 (12:00–20:00)\n"
    chapters, _ = parse_chapters(f"{merged}\n{PARTS_HEADING}\n\n{parts}", 1200)
    assert [c.title for c in chapters] == ["First half", "Second half"]


@pytest.mark.parametrize(
    "text",
    [
        "The video begins at 00:30 with a logo.\nThen the speaker talks from 01:00 to 02:00 about trees.\n",
        "讲者在03:25打开终端。\n随后在05:00时展示了结果。\n",
        "The talk covers trees and graphs, as the title card says at the start (00:00–10:00).\n",
        "- The demo starts at 03:00\n- The talk ends at 09:00\n",
        "Requires Python 3.11; the video is 16:9.\n| Version | Ratio |\n|---|---|\n| 3.11 | 16:9 |\n",
    ],
)
def test_sentences_about_times_are_not_chapters(text: str) -> None:
    assert parse_chapters(text, 600) == ([], [])


def test_one_ranged_line_above_a_list_does_not_hide_the_list() -> None:
    md = "Summary (00:00–10:00)\n\n- [00:00] Intro\n- [04:00] Demo\n- [08:00] Outro\n"
    assert [c.title for c in parse_chapters(md, 600)[0]] == ["Intro", "Demo", "Outro"]


def test_a_sentence_with_a_range_does_not_hide_the_chapter_list() -> None:
    md = (
        "## Overview\nThe talk (00:00–45:00) covers three topics.\n\n"
        "## Chapters\n- [00:00] Intro\n- [10:00] Trees\n- [30:00] Graphs\n"
    )
    assert [c.title for c in parse_chapters(md, 2700)[0]] == ["Intro", "Trees", "Graphs"]


def test_a_bold_title_may_be_followed_by_what_happens() -> None:
    md = "**Intro** (00:00–01:00) The host waves.\n**Demo** (01:00–03:00) A robot walks.\n"
    assert [(c.start, c.title) for c in parse_chapters(md, 180)[0]] == [(0, "Intro"), (60, "Demo")]


def test_one_heading_with_a_range_does_not_hide_the_list_under_it() -> None:
    md = "## Overview (00:00–05:32)\n- [00:00] Intro\n- [02:00] Demo\n- [04:00] Outro\n"
    assert [c.title for c in parse_chapters(md, 332)[0]] == ["Intro", "Demo", "Outro"]
    # Alone, it is the chapter.
    assert [c.title for c in parse_chapters("## Overview (00:00–05:32)\nText.\n", 332)[0]] == ["Overview"]
