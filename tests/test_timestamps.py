"""Finding, normalising and linking timestamps in model output."""

from __future__ import annotations

import pytest

from qwen3vl_summarizer.timestamps import (
    find_timestamps,
    format_seek,
    format_timestamp,
    link_timestamps,
    normalize_timestamps,
    parse_timestamp,
)

# --- format_timestamp -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "hours", "expected"),
    [
        (0, None, "00:00"),
        (12.9, None, "00:12"),  # floors
        (205, None, "03:25"),
        (204.9999999999, None, "03:25"),  # float noise is not a second early
        (3599.99, None, "59:59"),
        (3600, None, "01:00:00"),
        (3723.5, None, "01:02:03"),
        (36000, None, "10:00:00"),
        (205, True, "00:03:25"),
        (3723, False, "62:03"),
    ],
)
def test_format_timestamp(seconds: float, hours: bool | None, expected: str) -> None:
    assert format_timestamp(seconds, hours) == expected


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_format_timestamp_rejects_negative_and_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        format_timestamp(bad)


def test_format_seek() -> None:
    assert format_seek(205.0) == "205"
    assert format_seek(12.5) == "12.5"
    assert format_seek(0) == "0"
    assert format_seek(1.23456) == "1.235"


# --- parse_timestamp --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12:34", 754),
        ("0:05", 5),
        ("1:02:03", 3723),
        ("00:00:12", 12),
        ("00:12.5", 12.5),
        ("125:30", 7530),
        ("12.5s", 12.5),
        ("12.5 seconds", 12.5),
        ("1 second", 1),
        ("<12.5 seconds>", 12.5),
        ("< 7 seconds >", 7),
        ("90 sec", 90),
        ("90 secs", 90),
        ("1m30s", 90),
        ("1h2m3s", 3723),
        ("[03:25]", 205),
        ("  03:25 ", 205),
        ("12.5", 12.5),
        ("1分30秒", 90),
        ("第30秒", 30),
        ("1小时2分3秒", 3723),
        ("第25分钟", 1500),
        ("25分钟", 1500),
        ("1小时10分", 4200),
        ("1小时", 3600),
        ("二十五分钟", 1500),
        ("一小时十分", 4200),
        ("一百零五秒", 105),
        ("两分钟", 120),
        ("12：34", 754),
        ("（03:25）", 205),
    ],
)
def test_parse_timestamp(text: str, expected: float) -> None:
    assert parse_timestamp(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "abc", "1:75", "1:2", "12:34:56:78", "2024-01-02", "5 minutes", "-3s"])
def test_parse_timestamp_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(bad)


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 205, 3599, 3600, 3723, 86399])
def test_format_parse_round_trip(seconds: int) -> None:
    assert parse_timestamp(format_timestamp(seconds)) == seconds
    assert parse_timestamp(format_timestamp(seconds, hours=True)) == seconds


# --- find_timestamps --------------------------------------------------------------------------------


def _found(text: str) -> list[tuple[str, float, float | None]]:
    return [(text[s.start : s.end], s.seconds, s.end_seconds) for s in find_timestamps(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("At [03:25] the speaker opens a terminal.", [("03:25", 205, None)]),
        ("At 0:12 and again at 1:02:03.", [("0:12", 12, None), ("1:02:03", 3723, None)]),
        ("Around <12.5 seconds>, a cat appears.", [("<12.5 seconds>", 12.5, None)]),
        ("The logo is shown at 12.5s.", [("12.5s", 12.5, None)]),
        ("At 90 sec the slide changes.", [("90 sec", 90, None)]),
        ("At 1m30s the slide changes.", [("1m30s", 90, None)]),
        ("- 00:00:12 Intro", [("00:00:12", 12, None)]),
        ("Chapter 03:10–05:20 covers setup.", [("03:10–05:20", 190, 320)]),
        ("Chapter 03:10 - 05:20 covers setup.", [("03:10 - 05:20", 190, 320)]),
        ("Chapter 03:10-05:20 covers setup.", [("03:10-05:20", 190, 320)]),
        ("From 3:10 to 5:20 he codes.", [("3:10 to 5:20", 190, 320)]),
        ("<12.5 seconds> - <20 seconds>: a dog runs.", [("<12.5 seconds> - <20 seconds>", 12.5, 20)]),
        ("The intro (12.5s–20s) shows a logo.", [("12.5s–20s", 12.5, 20)]),
        ("Between 10-20 seconds a car passes.", [("10-20 seconds", 10, 20)]),
        ("at 00:12.5 exactly", [("00:12.5", 12.5, None)]),
        ("At 03:25: the speaker sits.", [("03:25", 205, None)]),
        ("Start:03:25, end:1:02:03.", [("03:25", 205, None), ("1:02:03", 3723, None)]),
        ("**[0:00:05]** Title card", [("0:00:05", 5, None)]),
    ],
)
def test_find_english(text: str, expected: list[tuple[str, float, float | None]]) -> None:
    assert _found(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("在03:25时，讲者打开了终端。", [("03:25", 205, None)]),
        ("视频在第30秒出现标题。", [("第30秒", 30, None)]),
        ("在1分30秒处画面切换。", [("1分30秒", 90, None)]),
        ("03:10至05:20介绍安装步骤。", [("03:10至05:20", 190, 320)]),
        ("从1:02:03到1:05:00是问答环节。", [("1:02:03到1:05:00", 3723, 3900)]),
        ("[00:00–02:30] 开场介绍", [("00:00–02:30", 0, 150)]),
        ("- [01:15] 主持人展示了一张幻灯片", [("01:15", 75, None)]),
    ],
)
def test_find_chinese(text: str, expected: list[tuple[str, float, float | None]]) -> None:
    assert _found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Requires Python 3.10 or newer.",  # version: a bare number is never a time
        "The video is 16:9; the slide says 4:3.",  # ratios: one-digit seconds
        "Released on 2024-01-02.",
        "Logged at 2024-01-02 10:30:00 and 2024-01-02T10:30.",
        "See https://example.com/watch?t=03:25 for details.",
        "Open www.example.com/03:25/page",
        "Run `ffmpeg -ss 00:01:30 -i in.mp4` first.",
        "```\nstart = 03:25\nend = 05:20\n```",
        "~~~text\n03:25\n~~~",
        "The meeting starts at 10:30 AM and ends at 11:15 p.m.",
        "He waits for 30 seconds, then 10 seconds later it rings every 5 s.",
        "Music from the 80s and the '90s.",
        "Two people in their 30s, one in her mid-20s.",
        "The score is 12.5 out of 20.",
        "MAC 00:1A:2B:3C:4D:5E and 00:11:22:33:44:55",
        "[docs](https://x.org/a#03:25) and ![img](pic-03:25.png)",
        "Clip 12:34:56:78 is not a time.",
    ],
)
def test_find_ignores_non_times(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The seed's follow-up questions.
        ("请详细说明第25分钟提到的'具身AI'概念", [("第25分钟", 1500, None)]),
        ("请总结1小时到1小时10分之间发生了什么", [("1小时到1小时10分", 3600, 4200)]),
        ("第二十五分钟讲了什么？", [("第二十五分钟", 1500, None)]),
        ("一小时到一小时十分之间", [("一小时到一小时十分", 3600, 4200)]),
        ("在25分钟处出现了图表。", [("25分钟", 1500, None)]),
        ("约25分钟处出现了图表。", [("25分钟", 1500, None)]),
        ("从1小时10分开始是问答。", [("1小时10分", 4200, None)]),
        ("在第3分钟时，讲者开始演示。", [("第3分钟", 180, None)]),
        ("1分30秒到2分10秒是开场。", [("1分30秒到2分10秒", 90, 130)]),
        ("25分钟到30分钟讨论了数据。", [("25分钟到30分钟", 1500, 1800)]),
        ("在12：30时切换画面", [("12：30", 750, None)]),
        ("【00:00——03:11】开场", [("00:00——03:11", 0, 191)]),
    ],
)
def test_find_chinese_minutes_and_hours(text: str, expected: list[tuple[str, float, float | None]]) -> None:
    assert _found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "讲座持续25分钟。",  # a length
        "他用了两分钟完成。",
        "这一点十分重要。",  # 十分: "very"
        "比赛得了10分。",  # a score
        "在25分钟内完成了安装。",  # within
        "25分钟后他离开了。",  # later
        "视频长1小时。",
        "第一小时讲了基础。",  # the first hour: a span
        "会议下午1时10分开始。",  # a time of day
        "第三章介绍了方法。",
        "共30秒的片头。",
        "他用了1小时到2小时。",
    ],
)
def test_find_ignores_chinese_lengths(text: str) -> None:
    assert _found(text) == []


def test_link_the_seeds_questions() -> None:
    assert link_timestamps("请详细说明第25分钟提到的概念", duration=5400) == (
        "请详细说明[00:25:00](#t=1500)提到的概念"
    )
    assert link_timestamps("请总结1小时到1小时10分之间发生了什么", duration=5400) == (
        "请总结[01:00:00](#t=3600)–[01:10:00](#t=4200)之间发生了什么"
    )


@pytest.mark.parametrize("digits", ["1" * 400 + "s", "1" * 5000 + "m30s", "<" + "9" * 400 + " seconds>",
                                    "1" * 5000 + "分钟处", "第" + "1" * 5000 + "秒", "1" * 20 + ".5s"])  # fmt: skip
def test_long_runs_of_digits_are_not_times(digits: str) -> None:
    assert find_timestamps(digits) == []
    assert link_timestamps(digits) == digits


def test_find_spans_parts_for_ranges() -> None:
    text = "x [03:10 – 05:20] y"
    (span,) = find_timestamps(text)
    assert span.is_range
    assert [text[a:b] for a, b in span.parts] == ["03:10", "05:20"]


def test_find_outside_code_but_not_inside() -> None:
    text = "At 01:00 run `sleep 02:00`, then at 03:00.\n```\n04:00\n```\nAnd 05:00."
    assert [s.seconds for s in find_timestamps(text)] == [60, 180, 300]


def test_unclosed_fence_protects_the_rest() -> None:
    assert find_timestamps("At 01:00.\n```\n02:00 and more") == find_timestamps("At 01:00.")


# --- normalize_timestamps ---------------------------------------------------------------------------

MODEL_OUTPUT_MIXED = """## Overview
A cooking video: the host makes pancakes.

## Key moments
- [0:05] The host introduces the recipe.
- <12.5 seconds> Flour is added to the bowl.
- **1:02** Eggs are cracked (see `step 1:02`).
- 95s: The batter is poured.
- [2:10 - 2:40] Flipping the pancake.
"""

MODEL_OUTPUT_MIXED_NORMALIZED = """## Overview
A cooking video: the host makes pancakes.

## Key moments
- [00:05] The host introduces the recipe.
- 00:12 Flour is added to the bowl.
- **01:02** Eggs are cracked (see `step 1:02`).
- 01:35: The batter is poured.
- [02:10–02:40] Flipping the pancake.
"""


def test_normalize_mixed_model_output() -> None:
    assert normalize_timestamps(MODEL_OUTPUT_MIXED) == MODEL_OUTPUT_MIXED_NORMALIZED


def test_normalize_uses_hours_for_long_videos() -> None:
    text = "- [03:25] Intro\n- [1:02:03] Q&A\n- 03:10 to 05:20 setup"
    assert normalize_timestamps(text, duration=4000) == (
        "- [00:03:25] Intro\n- [01:02:03] Q&A\n- 00:03:10–00:05:20 setup"
    )
    # Short video: per value (the out-of-range 1:02:03 still gets its hours).
    assert normalize_timestamps(text, duration=600) == (
        "- [03:25] Intro\n- [01:02:03] Q&A\n- 03:10–05:20 setup"
    )


def test_normalize_chinese() -> None:
    text = "### [0:00至2:30] 开场\n- 在第30秒，主持人出现。\n- 在1:45时切换到幻灯片。"
    assert normalize_timestamps(text) == (
        "### [00:00–02:30] 开场\n- 在00:30，主持人出现。\n- 在01:45时切换到幻灯片。"
    )


def test_normalize_is_idempotent() -> None:
    once = normalize_timestamps(MODEL_OUTPUT_MIXED)
    assert normalize_timestamps(once) == once


def test_normalize_leaves_text_without_times_alone() -> None:
    text = "No times here: version 3.10, ratio 16:9, `00:12` in code."
    assert normalize_timestamps(text) == text


# --- link_timestamps --------------------------------------------------------------------------------


def test_link_bracketed_time_becomes_the_link() -> None:
    assert link_timestamps("- [03:25] Opens a terminal") == "- [03:25](#t=205) Opens a terminal"


def test_link_bare_and_angle_times() -> None:
    assert link_timestamps("At 3:25 and <12.5 seconds>.") == "At [03:25](#t=205) and [00:12](#t=12.5)."


def test_link_ranges_link_both_ends() -> None:
    assert link_timestamps("### [03:10–05:20] Setup") == "### [03:10](#t=190)–[05:20](#t=320) Setup"
    assert link_timestamps("from 3:10 to 5:20") == "from [03:10](#t=190)–[05:20](#t=320)"


def test_link_skips_existing_links_code_and_urls() -> None:
    text = (
        "[see 03:25](https://example.com) and [03:25](#t=205) and `03:25` and "
        "https://youtu.be/x?t=03:25 and ![frame 03:25](f.png)"
    )
    assert link_timestamps(text) == text


def test_link_is_idempotent() -> None:
    once = link_timestamps(MODEL_OUTPUT_MIXED, duration=300)
    assert link_timestamps(once, duration=300) == once


def test_link_out_of_range_times_stay_text() -> None:
    assert link_timestamps("- [03:25] ok\n- [12:00] too late", duration=300) == (
        "- [03:25](#t=205) ok\n- [12:00] too late"
    )
    # A range whose end is past the duration links only its start.
    assert link_timestamps("04:00–06:00 outro", duration=300) == "[04:00](#t=240)–06:00 outro"


def test_link_tolerates_rounding_at_the_end() -> None:
    assert link_timestamps("[02:05] end", duration=124.6) == "[02:05](#t=125) end"


def test_link_long_video_uses_hours() -> None:
    assert link_timestamps("[1:02:03] Q&A, [03:25] intro", duration=4000) == (
        "[01:02:03](#t=3723) Q&A, [00:03:25](#t=205) intro"
    )


def test_link_chinese_output() -> None:
    text = "## 关键时刻\n- [00:12] 标题出现\n- 在1:30时，讲者开始演示。\n- 第95秒：结束。"
    assert link_timestamps(text, duration=120) == (
        "## 关键时刻\n- [00:12](#t=12) 标题出现\n- 在[01:30](#t=90)时，讲者开始演示。\n- [01:35](#t=95)：结束。"
    )


def test_link_keeps_emphasis_and_escaped_brackets() -> None:
    assert link_timestamps("**[03:25]** bold") == "**[03:25](#t=205)** bold"
    assert link_timestamps(r"\[03:25\] escaped") == r"\[[03:25](#t=205)\] escaped"


def test_link_realistic_lecture_output() -> None:
    text = """## Topic
Binary search trees.

## Chapters
### [00:00–02:15] Motivation
- Sorted arrays make lookups fast (see slide at 01:10).

### [02:15 - 07:40] Insertion
- At <300.0 seconds> the lecturer draws a tree.
- Code: `insert(node, key)` runs in O(h).

## Key terms
- **BST**: a binary tree ordered by key.
"""
    linked = link_timestamps(text, duration=480)
    assert "### [00:00](#t=0)–[02:15](#t=135) Motivation" in linked
    assert "(see slide at [01:10](#t=70))" in linked
    assert "### [02:15](#t=135)–[07:40](#t=460) Insertion" in linked
    assert "At [05:00](#t=300) the lecturer" in linked
    assert "`insert(node, key)` runs in O(h)." in linked
