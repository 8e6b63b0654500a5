"""Property-based tests (hypothesis) of reading answers: chapter lists written in the shapes models use,
with arbitrary titles, give back their chapters; arbitrary text never raises; a text of things that are not
times (versions, ratios, scores, durations, dates) gives no time and no link."""

from __future__ import annotations

import html
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3vl_summarizer.export import Summary, get_writer, parse_chapters
from qwen3vl_summarizer.timestamps import (
    find_timestamps,
    format_timestamp,
    link_timestamps,
    normalize_timestamps,
    parse_timestamp,
)
from web.render import chapter_timeline

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Title words: CJK, emoji, version numbers, ratios, symbols; none is a time on its own.
WORDS = [
    "Intro", "Setup", "Q&A", "Python 3.11", "16:9", "4:3", "v2.0", "C++", "GPT-4", "3D", "100%", "x86",
    "Live demo", "Wrap-up", "Ünïcode", "naïve café", "引言", "具身AI", "多模态挑战", "总结", "问答环节",
    "🎬", "🐍", "🚀 Launch", "😀", "第3版", "AI发展现状", "Ratio 21:9", "Top-10", "R2-D2", "O'Brien",
]  # fmt: skip
# A title is not one of these at its end: it would read as the start of a sentence about the time.
STOP_WORDS = {"at", "from", "around", "about", "by", "to", "until", "till", "between", "after", "before",
              "since", "in", "on", "near", "and", "or", "of", "the", "a", "an", "is", "was", "are", "were",
              "start", "starts", "end", "ends", "approximately"}  # fmt: skip
CJK = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=1, max_size=6)
LATIN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10)


def _usable(title: str) -> bool:
    last = title.split()[-1]
    return (
        not find_timestamps(title)
        and last.lower() not in STOP_WORDS
        and last[-1] not in "在从于自到至约是的第"
        and not title.startswith(("第", "章节"))  # a chapter marker, stripped from titles on purpose
        and not re.match(r"[ap]\.?m\b", title, re.IGNORECASE)  # "00:01 AM" is a time of day
    )


TITLES = (
    st.lists(st.one_of(st.sampled_from(WORDS), CJK, LATIN), min_size=1, max_size=4)
    .map(" ".join)
    .filter(_usable)
)

# Chapter lines as models write them: (start text, end text, title) -> line. "{d}" is a description.
SHAPES = {
    "heading range first": "### [{s}–{e}] {t}",
    "list range first": "- {s}-{e} {t}",
    "bold line": "**[{s} - {e}] {t}**",
    "numbered bold title": "{n}. **{t}** ({s}–{e}): {d}",
    "heading full-width brackets": "## {t}（{s}–{e}）",
    "seed": "【{t}】({s} - {e})",
    "list title colon": "- {t}: {s} – {e}",
    "heading dash to": "### {t} — {s} to {e}",
    "square after": "* {t} [{s}–{e}]",
    "zh colon zhi": "- {t}：{s}至{e}",
    "zh dao": "- {t}：{s}到{e}",
    "em dashes": "### {t}——{s}-{e}",
    "table": "| {s}–{e} | {t} | {d} |",
    "table start end": "| {n} | {s} | {e} | {t} |",
    "plain title then range": "{t} ({s} ~ {e})",
}
SINGLE_SHAPES = {
    "youtube": "{s} {t}",
    "list bracket": "- [{s}] {t}",
    "bold title": "- **{t}** {s}",
    "title dash": "- {t} - {s}",
    "zh title colon": "{t}：{s}",
    "title in brackets after": "{n}. {t} ({s})",
}
DESCRIPTIONS = ["the speaker opens", "讲者介绍主题", "a demo at 16:9", "see Python 3.11"]


@st.composite
def chapter_lists(draw, shapes: dict[str, str] = SHAPES):
    """(markdown, duration, [(start, end, title)]) in one shape, with key points under some chapters."""
    shape = draw(st.sampled_from(sorted(shapes)))
    count = draw(st.integers(2, 8))
    duration = draw(st.integers(count * 10, 4 * 3600))
    starts = sorted(draw(st.sets(st.integers(1, duration - 1), min_size=count - 1, max_size=count - 1)))
    starts = [0, *starts]
    ends = [*starts[1:], duration]
    titles = draw(st.lists(TITLES, min_size=count, max_size=count))
    hours = draw(st.booleans()) or duration >= 3600
    lines = []
    if shape.startswith("table"):
        lines += ["| a | b | c | d |"[: 4 * shapes[shape].count("|") - 3], "|---|---|---|---|"]
    for n, (s, e, t) in enumerate(zip(starts, ends, titles, strict=True), 1):
        d = draw(st.sampled_from(DESCRIPTIONS))
        lines.append(
            shapes[shape].format(s=format_timestamp(s, hours), e=format_timestamp(e, hours), t=t, n=n, d=d)
        )
        if not shape.startswith("table") and draw(st.booleans()):  # key points under the chapter
            lines.append(f"    - {d}")
    return "\n".join(lines) + "\n", duration, list(zip(starts, ends, titles, strict=True))


def _title(t: str) -> str:
    return " ".join(t.split())


@SETTINGS
@given(chapter_lists())
def test_chapter_lists_give_their_chapters(case) -> None:
    markdown, duration, expected = case
    chapters, warnings = parse_chapters(markdown, duration)
    assert [(c.start, c.end, _title(c.title)) for c in chapters] == [
        (s, e, _title(t)) for s, e, t in expected
    ]
    assert warnings == []
    # The page shows it linked; the same chapters come back.
    assert parse_chapters(link_timestamps(markdown, duration), duration) == (chapters, warnings)


@SETTINGS
@given(chapter_lists(SINGLE_SHAPES))
def test_lists_of_single_times_give_their_starts(case) -> None:
    markdown, duration, expected = case
    chapters, _ = parse_chapters(markdown, duration)
    assert [c.start for c in chapters] == [s for s, _, _ in expected]
    assert [_title(c.title) for c in chapters] == [_title(t) for _, _, t in expected]


@SETTINGS
@given(chapter_lists())
def test_every_chapter_list_gives_a_timeline_and_chapter_files(case) -> None:
    markdown, duration, expected = case
    timeline = chapter_timeline(markdown, duration)
    assert timeline.count('class="timeline-span"') == len(expected)
    summary = Summary(markdown=markdown, video="v.mp4", duration=duration, model="m", prompt="p")
    assert get_writer("srt").to_string(summary).count(" --> ") == len(expected)
    assert get_writer("vtt").to_string(summary).count(" --> ") == len(expected)
    youtube = get_writer("chapters").to_string(summary).splitlines()
    assert [parse_timestamp(line.split(" ", 1)[0]) for line in youtube] == [s for s, _, _ in expected]
    assert html.escape(_title(expected[-1][2])) in timeline


ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from(list("0123456789:：-–—~～至到秒分钟小时第()（）[]【】|#*_`<>\n .")),
    ),
    max_size=200,
)


# ...and a long run of digits inside it: never a time, never an overflow.
DIGITS = st.text(alphabet="0123456789", min_size=10, max_size=5000)
ANY_TEXT = st.one_of(ANY_TEXT, st.tuples(ANY_TEXT, DIGITS, ANY_TEXT).map("".join))


@SETTINGS
@given(ANY_TEXT, st.one_of(st.none(), st.floats(0, 10_000)))
def test_arbitrary_text_never_raises(text: str, duration: float | None) -> None:
    for span in find_timestamps(text):
        assert 0 <= span.start < span.end <= len(text)
        assert span.seconds >= 0
    linked = link_timestamps(text, duration)
    assert link_timestamps(linked, duration) == linked
    normalize_timestamps(text, duration)
    chapters, _ = parse_chapters(text, duration)
    assert all(0 <= c.start <= c.end for c in chapters)
    chapter_timeline(text, duration or 0.0)


# Things that are not a moment of the video, in English and Chinese.
NOT_TIMES = [
    "Python 3.11", "version 3.10", "16:9", "4:3", "21:9", "12.5", "2024-01-02", "10:30 AM", "11:15 p.m.",
    "the 80s", "in their 30s", "for 30 seconds", "every 5 s", "10 seconds later", "score 3-2",
    "持续25分钟", "用了两分钟", "这十分重要", "得了10分", "第三章", "25分钟后", "在25分钟内", "视频长1小时",
    "第一小时", "下午1时10分", "共30秒", "1:2", "`03:25`", "https://x.org/?t=03:25", "100%", "v2.0",
    "Chapter 3", "第2版", "3.5 stars", "x86", "GPT-4",
]  # fmt: skip
GLUE = [" ", ", ", "。", "；", "\n", " and ", "，", " - ", "：", "\n- "]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(NOT_TIMES), st.sampled_from(GLUE)), min_size=1, max_size=8))
def test_non_times_never_become_links(pieces) -> None:
    text = "".join(a + b for a, b in pieces)
    assert find_timestamps(text) == []
    assert link_timestamps(text) == text
    assert link_timestamps(text, duration=7200) == text
