"""Chapters parsed from summaries, and the md/json/srt/vtt/chapters writers."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qwen3vl_summarizer.errors import OptionsError
from qwen3vl_summarizer.export import (
    FORMATS,
    Chapter,
    Summary,
    get_writer,
    parse_chapters,
)
from qwen3vl_summarizer.timestamps import link_timestamps

LECTURE = """## Topic
Binary search trees.

## Chapters
### [00:00–02:15] Motivation
- Sorted arrays make lookups fast ([01:10]).

### [02:15 - 07:40] **Insertion**
- At <300.0 seconds> the lecturer draws a tree.

### [07:40] Deletion & balancing
- Rotations at 08:30.

## Key terms
- **BST**: a binary tree ordered by key.
"""


def _summary(markdown: str = LECTURE, duration: float = 600.0, **kw) -> Summary:
    return Summary(
        markdown=markdown,
        video="lecture.mp4",
        duration=duration,
        model="Qwen/Qwen3-VL-2B-Instruct",
        prompt="lecture",
        stats={"prompt_tokens": 1234, "seconds": 5.5},
        created="2025-01-02T03:04:05+00:00",
        **kw,
    )


# --- parse_chapters ---------------------------------------------------------------------------------


def test_chapters_from_headings_ignore_nested_items() -> None:
    chapters, warnings = parse_chapters(LECTURE, duration=600)
    assert chapters == [
        Chapter(0, 135, "Motivation"),
        Chapter(135, 460, "Insertion"),
        Chapter(460, 600, "Deletion & balancing"),
    ]
    assert warnings == []


def test_chapters_from_linked_markdown_are_the_same() -> None:
    assert parse_chapters(link_timestamps(LECTURE, 600), 600) == parse_chapters(LECTURE, 600)


def test_chapters_from_list_items_use_top_level_only() -> None:
    md = (
        "## Key moments\n"
        "- [0:05] Host says hello\n"
        "    - [0:07] a detail\n"
        "- **[1:30]** – The recipe\n"
        "- <150 seconds>: Cooking\n"
        "- No time here\n"
    )
    chapters, warnings = parse_chapters(md, duration=200)
    assert chapters == [
        Chapter(5, 90, "Host says hello"),
        Chapter(90, 150, "The recipe"),
        Chapter(150, 200, "Cooking"),
    ]
    assert warnings == []


def test_chapters_from_plain_lines_youtube_style() -> None:
    md = "00:00 Intro\n01:30 Setup\n1:02:03 Q&A\n"
    chapters, _ = parse_chapters(md, duration=4000)
    assert [(c.start, c.end, c.title) for c in chapters] == [
        (0, 90, "Intro"),
        (90, 3723, "Setup"),
        (3723, 4000, "Q&A"),
    ]


def test_chapters_mixed_styles_and_two_bracket_ranges() -> None:
    md = (
        "### [0:00] - [1:00] Opening\n"
        "### 00:01:00 to 00:02:30: Main part\n"
        "### <150 seconds> - <180 seconds> Wrap-up\n"
    )
    chapters, warnings = parse_chapters(md)
    assert chapters == [
        Chapter(0, 60, "Opening"),
        Chapter(60, 150, "Main part"),
        Chapter(150, 180, "Wrap-up"),
    ]
    assert warnings == []


def test_chapters_chinese() -> None:
    md = "## 章节\n### [00:00至02:30] 开场介绍\n- 要点\n### [02:30–05:00] 安装步骤\n"
    chapters, _ = parse_chapters(md, duration=300)
    assert chapters == [Chapter(0, 150, "开场介绍"), Chapter(150, 300, "安装步骤")]


def test_chapters_out_of_order_are_sorted_with_a_warning() -> None:
    md = "- [02:00] B\n- [00:00] A\n- [04:00] C\n"
    chapters, warnings = parse_chapters(md, duration=300)
    assert [c.title for c in chapters] == ["A", "B", "C"]
    assert [(c.start, c.end) for c in chapters] == [(0, 120), (120, 240), (240, 300)]
    assert len(warnings) == 1 and "order" in warnings[0]


def test_chapters_out_of_range_are_clamped_with_warnings() -> None:
    md = "### [00:00–03:00] A\n### [03:00–12:00] B\n### [15:00] C\n"
    chapters, warnings = parse_chapters(md, duration=300)
    assert chapters == [Chapter(0, 180, "A"), Chapter(180, 300, "B"), Chapter(300, 300, "C")]
    assert len(warnings) == 2
    assert any("'B'" in w and "clamped" in w for w in warnings)
    assert any("'C'" in w and "after the end" in w for w in warnings)


def test_chapters_last_end_without_duration() -> None:
    chapters, warnings = parse_chapters("- [00:00] A\n- [01:00] B\n")
    assert chapters == [Chapter(0, 60, "A"), Chapter(60, 60, "B")]
    assert len(warnings) == 1 and "unknown" in warnings[0]
    # An explicit end needs no duration.
    assert parse_chapters("- [00:00–01:00] A\n") == ([Chapter(0, 60, "A")], [])


def test_chapters_bad_ends_are_corrected() -> None:
    md = "### [00:00–02:00] A\n### [01:30–01:00] B\n### [03:00–04:00] C\n"
    chapters, warnings = parse_chapters(md, duration=300)
    assert chapters == [Chapter(0, 90, "A"), Chapter(90, 180, "B"), Chapter(180, 240, "C")]
    assert len(warnings) == 2
    assert any("'A'" in w and "shortened" in w for w in warnings)
    assert any("'B'" in w and "before it starts" in w for w in warnings)


def test_chapters_ignore_code_blocks_and_untitled_get_a_name() -> None:
    md = "```\n00:00 not a chapter\n```\n- [00:10]\n- [00:20] Real\n"
    chapters, _ = parse_chapters(md, duration=30)
    assert chapters == [Chapter(10, 20, "Chapter 1"), Chapter(20, 30, "Real")]


def test_no_chapters() -> None:
    assert parse_chapters("Just prose, no times.\n", duration=10) == ([], [])
    assert parse_chapters("") == ([], [])


# --- registry ---------------------------------------------------------------------------------------


def test_formats_and_registry() -> None:
    assert FORMATS == (
        "md", "json", "srt", "vtt", "chapters", "transcript.srt", "transcript.vtt", "transcript.txt"
    )  # fmt: skip
    for fmt in FORMATS:
        writer = get_writer(fmt)
        assert writer.extension and not writer.extension.startswith(".")
    assert get_writer(".SRT").extension == "srt"


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(OptionsError, match="md, json, srt, vtt, chapters"):
        get_writer("docx")


def test_write_to_path_and_stream(tmp_path: Path) -> None:
    summary = _summary()
    for fmt in FORMATS:
        writer = get_writer(fmt)
        path = tmp_path / f"out.{writer.extension}"
        writer.write(summary, path)
        buffer = io.StringIO()
        writer.write(summary, buffer)
        assert path.read_text(encoding="utf-8") == buffer.getvalue() == writer.to_string(summary)


# --- md / json --------------------------------------------------------------------------------------


def test_markdown_writer_normalizes_and_unlinks() -> None:
    text = get_writer("md").to_string(_summary(link_timestamps(LECTURE, 600)))
    assert "### [00:00–02:15] Motivation" in text
    assert "At [05:00] the lecturer" in text  # a linked bare time comes back in the prompts' [MM:SS] style
    assert "#t=" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_json_writer_fields_and_round_trip() -> None:
    summary = _summary()
    data = json.loads(get_writer("json").to_string(summary))
    for key in (
        "video",
        "duration",
        "model",
        "prompt",
        "created",
        "markdown",
        "chapters",
        "stats",
        "warnings",
    ):
        assert key in data
    assert data["video"] == "lecture.mp4"
    assert data["duration"] == 600.0
    assert data["duration_text"] == "10:00"
    assert data["stats"] == {"prompt_tokens": 1234, "seconds": 5.5}
    assert data["warnings"] == []
    assert data["chapters"][1] == {
        "start": 135,
        "end": 460,
        "start_text": "02:15",
        "end_text": "07:40",
        "title": "Insertion",
    }
    again = parse_chapters(data["markdown"], data["duration"])[0]
    assert [(c["start"], c["end"], c["title"]) for c in data["chapters"]] == [
        (c.start, c.end, c.title) for c in again
    ]


def test_json_keeps_unicode_and_warnings() -> None:
    summary = _summary("- [02:00] 第二\n- [00:00] 第一\n", duration=0)
    data = json.loads(get_writer("json").to_string(summary))
    assert "第一" in get_writer("json").to_string(summary)
    assert data["duration_text"] is None
    assert [c["title"] for c in data["chapters"]] == ["第一", "第二"]
    assert len(data["warnings"]) == 2  # out of order, and no duration for the last end


def test_json_long_video_uses_hours() -> None:
    data = json.loads(get_writer("json").to_string(_summary("- [00:00] A\n- [1:00:00] B\n", duration=4000)))
    assert [c["start_text"] for c in data["chapters"]] == ["00:00:00", "01:00:00"]


# --- srt / vtt --------------------------------------------------------------------------------------

_SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d"
_VTT_TIME = r"\d\d:\d\d:\d\d\.\d\d\d"


def test_srt_is_valid() -> None:
    text = get_writer("srt").to_string(_summary())
    assert text == (
        "1\n00:00:00,000 --> 00:02:15,000\nMotivation\n\n"
        "2\n00:02:15,000 --> 00:07:40,000\nInsertion\n\n"
        "3\n00:07:40,000 --> 00:10:00,000\nDeletion & balancing\n"
    )
    for block in text.strip().split("\n\n"):
        index, times, title = block.split("\n")
        assert index.isdigit() and title
        assert re.fullmatch(rf"{_SRT_TIME} --> {_SRT_TIME}", times)


def test_vtt_is_valid_and_escapes() -> None:
    text = get_writer("vtt").to_string(_summary())
    assert text.startswith("WEBVTT\n\n")
    blocks = text.split("\n\n")[1:]
    assert len(blocks) == 3
    for block in blocks:
        _, times, _ = block.strip().split("\n")
        assert re.fullmatch(rf"{_VTT_TIME} --> {_VTT_TIME}", times)
    assert "Deletion &amp; balancing" in text


def test_cues_have_milliseconds_and_minimum_length() -> None:
    summary = _summary("- [<1.25 seconds>] A\n- [00:03] B --> C\n", duration=0)
    text = get_writer("srt").to_string(summary)
    assert "00:00:01,250 --> 00:00:03,000\nA" in text
    assert "00:00:03,000 --> 00:00:04,000\nB → C" in text  # zero-length last cue gets 1 s; no "-->"


def test_empty_tracks() -> None:
    summary = _summary("No chapters.", duration=60)
    assert get_writer("srt").to_string(summary) == ""
    assert get_writer("vtt").to_string(summary) == "WEBVTT\n"
    assert get_writer("chapters").to_string(summary) == ""


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
@pytest.mark.parametrize(("fmt", "other"), [("srt", "webvtt"), ("vtt", "srt")])
def test_ffmpeg_reads_the_tracks(tmp_path: Path, fmt: str, other: str) -> None:
    """FFmpeg's own demuxer parses every cue (converted to the other format to see them)."""
    path = tmp_path / f"chapters.{fmt}"
    get_writer(fmt).write(_summary(), path)
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", other, "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert result.stdout.count("-->") == 3
    for title in ("Motivation", "Insertion", "Deletion & balancing"):
        assert title in result.stdout


# --- youtube chapters -------------------------------------------------------------------------------


def test_youtube_chapters() -> None:
    assert get_writer("chapters").to_string(_summary()) == (
        "00:00 Motivation\n02:15 Insertion\n07:40 Deletion & balancing\n"
    )


def test_youtube_chapters_insert_intro(caplog: pytest.LogCaptureFixture) -> None:
    summary = _summary("- [00:30] Setup\n- [02:00] Build\n- [05:00] Test\n")
    with caplog.at_level("WARNING", logger="qwen3vl_summarizer.export"):
        text = get_writer("chapters").to_string(summary)
    assert text == "00:00 Intro\n00:30 Setup\n02:00 Build\n05:00 Test\n"
    assert any("00:00" in r.getMessage() and "Intro" in r.getMessage() for r in caplog.records)


def test_youtube_chapters_long_video_and_short_warnings(caplog: pytest.LogCaptureFixture) -> None:
    summary = _summary("- [00:00] A\n- [00:05] B\n", duration=4000)
    with caplog.at_level("WARNING", logger="qwen3vl_summarizer.export"):
        text = get_writer("chapters").to_string(summary)
    assert text == "00:00:00 A\n00:00:05 B\n"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "at least 3" in messages and "'A'" in messages


def test_summary_defaults() -> None:
    s = Summary(markdown="x", video="v.mp4", duration=1.0, model="m", prompt="general")
    assert s.stats == {}
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", s.created)


# --- the transcript ---------------------------------------------------------------------------------


def test_the_transcript_is_exported_as_subtitles_text_and_json() -> None:
    transcript = {
        "segments": [
            {"start": 2.0, "end": 4.25, "text": "Welcome to the lecture."},
            {"start": 61.5, "end": 61.5, "text": "A <b>bold</b> claim --> here"},
        ],
        "language": "en",
        "source": "asr:tiny.en",
        "damage": None,
    }
    summary = Summary("Notes.", "talk.mp4", 90.0, "m", "p", transcript=transcript)
    assert get_writer("transcript.srt").to_string(summary) == (
        "1\n00:00:02,000 --> 00:00:04,250\nWelcome to the lecture.\n\n"
        "2\n00:01:01,500 --> 00:01:02,500\nA <b>bold</b> claim \u2192 here\n"
    )
    vtt = get_writer("transcript.vtt").to_string(summary)
    assert vtt.startswith("WEBVTT\n\n00:00:02.000 --> 00:00:04.250\nWelcome")
    assert "A &lt;b&gt;bold&lt;/b&gt; claim" in vtt
    assert get_writer("transcript.txt").to_string(summary) == (
        "Welcome to the lecture.\nA <b>bold</b> claim --> here\n"
    )
    assert json.loads(get_writer("json").to_string(summary))["transcript"] == transcript
    # Without a transcript the tracks hold nothing, and say so.
    empty = Summary("Notes.", "talk.mp4", 90.0, "m", "p")
    for fmt in ("transcript.srt", "transcript.vtt", "transcript.txt"):
        writer = get_writer(fmt)
        assert not writer.has_content(writer.to_string(empty))


def test_a_transcript_alone_is_written_like_the_summarys(tmp_path: Path) -> None:
    from qwen3vl_summarizer.export import transcript_string

    transcript = {"segments": [{"start": 2.0, "end": 4.25, "text": "Welcome."}], "language": "en",
                  "source": "asr:tiny.en", "damage": None}  # fmt: skip
    summary = Summary("Notes.", "talk.mp4", 90.0, "m", "p", transcript=transcript)
    for fmt in ("srt", "vtt", "txt"):
        assert transcript_string(transcript, fmt) == get_writer(f"transcript.{fmt}").to_string(summary)
    assert json.loads(transcript_string(transcript, "json")) == transcript


# --- every export at once -----------------------------------------------------------------------------


def test_write_all_writes_each_format_and_can_leave_out_the_empty_ones(tmp_path: Path) -> None:
    from qwen3vl_summarizer.export import write_all

    summary = _summary("No chapter times here.")
    written, skipped = write_all(summary, tmp_path, "talk", ["md", "chapters", "transcript.srt"])
    assert [p.name for p in written] == ["talk.md", "talk.txt", "talk.transcript.srt"]
    assert skipped == [] and written[0].read_text(encoding="utf-8") == get_writer("md").to_string(summary)

    written, skipped = write_all(summary, tmp_path, "page", skip_empty=True)
    names = {p.name for p in written}
    assert "page.md" in names and "page.json" in names and "page.transcript.srt" not in names
    assert "transcript (SRT)" in skipped and len(written) + len(skipped) == len(FORMATS)
