"""Timestamps in model output: find them, normalise them to ``MM:SS``/``HH:MM:SS``, link them.

Qwen3-VL sees a video as groups of frames, each prefixed by ``<12.5 seconds>``. Its answers cite times
in many styles (``[03:25]``, ``0:12``, ``1:02:03``, ``12.5s``, ``<12.5 seconds>``, ``第30秒``, ``第25分钟``) and
ranges (``03:10–05:20``, ``3:10 to 5:20``, ``03:10至05:20``). This module is the one place that reads
and writes them; every writer and the web app go through :func:`format_timestamp`.

What counts as a time in prose (:func:`find_timestamps`), chosen to avoid false positives:

- Clock times need two-digit seconds below 60 (``M:SS``, ``MM:SS``, ``MMM:SS``, ``H:MM:SS``,
  ``HH:MM:SS``, optionally ``.mmm``). So ratios such as ``16:9`` or ``4:3`` are not times, but
  ``16:10`` is (ambiguous; we read it as a time). Clock times of day (``10:30 AM``, ``10:30 p.m.``) and
  the time part of a date-time (``2024-01-02 10:30:00``, ``2024-01-02T10:30``) are not video times.
- A bare number (``12.5``, a version such as ``3.10``) is never a time. Seconds need a unit: ``12.5s``,
  ``12 sec``, ``90 seconds``, the model's own ``<12.5 seconds>``, compact ``1m30s``/``1h02m03s``, or in
  Chinese ``第30秒``, ``1分30秒处``, ``30秒时``. A unit-seconds number that reads as a duration
  (``for 30 seconds``, ``every 5 sec``, ``10 seconds later``) or a decade or age (``the 80s``,
  ``'90s``, ``in their 30s``) is not a point in time and is skipped (``iPhone 4s`` still reads as 00:04).
- Chinese minutes and hours, in Arabic or Chinese numerals (``第25分钟``, ``第二十五分钟``, ``1小时10分``,
  ``一小时到一小时十分``), are points when their context says so: ``第…`` (but ``第一小时`` is the first
  hour, a span), a range of two of them, a point word after (``25分钟处``, ``25分钟时``) or a preposition
  before (``在25分钟``, not ``在25分钟内``); never after a length word (``持续25分钟``, ``用了两分钟``). A bare
  ``分`` is a minute only after an hour or with ``第`` (``得了10分`` is a score, ``十分`` means "very").
- A full-width colon works as ``:`` in a clock time when it has two digits before it (``12：30``).
- Nothing inside Markdown code (inline code spans, fenced code blocks), URLs, or link destinations is
  touched. Indented code blocks are not detected: model output indents nested list items by four
  spaces far more often than it writes indented code.
- Ranges join two times with an en/em dash (or two: ``——``), a hyphen, ``~``/``～``, ``to``/``until``/
  ``till`` or ``至``/``到``, on one line; ``12-20 seconds`` (unit only after the second number) is a range.

Linking (:func:`link_timestamps`): each time becomes ``[MM:SS](#t=SECONDS)``, which the web app
intercepts to seek its player. A time written in square brackets, ``[03:25]``, becomes
``[03:25](#t=205)``: the model's brackets turn into the link's brackets, so the rendered text is the time
itself, shown as a link, with no stray brackets. A bracketed range ``[03:10–05:20]`` becomes
``[03:10](#t=190)–[05:20](#t=320)`` for the same reason. The model's ``<...>`` around a time is its
input syntax (and looks like an HTML tag to a Markdown renderer), so it is replaced along with the time.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from dataclasses import dataclass

from .markdown import code_ranges

logger = logging.getLogger(__name__)

SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
FLOOR_EPSILON = 1e-6  # seconds; 204.9999999 (float noise) formats as 03:25, not 03:24
DURATION_TOLERANCE = 1.0  # seconds a cited time may pass the duration and still be linked (rounding)
RANGE_DASH = "\u2013"  # en dash, as in "03:10–05:20"
SEEK_ANCHOR = "#t="  # link target prefix the web app intercepts: [03:25](#t=205)


@dataclass(frozen=True)
class TimestampSpan:
    """One time (or range of times) found in a text.

    ``start``/``end`` are character offsets of the whole match (``text[start:end]``), including the
    model's ``<...>`` when present; ``seconds`` is the (start) time, ``end_seconds`` the end of a range
    or ``None``. ``parts`` holds the character offsets of each time on its own (one pair, or two for a
    range), which is what gets linked.
    """

    start: int
    end: int
    seconds: float
    end_seconds: float | None = None
    parts: tuple[tuple[int, int], ...] = ()

    @property
    def is_range(self) -> bool:
        return self.end_seconds is not None


# --- formatting -------------------------------------------------------------------------------------


def format_timestamp(seconds: float, hours: bool | None = None) -> str:
    """Format ``seconds`` as ``MM:SS`` below one hour and ``HH:MM:SS`` from one hour on.

    ``hours=True`` forces ``HH:MM:SS``; ``hours=False`` forces ``MM:SS`` (minutes may pass 59).
    Fractions are floored to whole seconds (what a player shows). Negative or non-finite -> ValueError.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a timestamp must be a finite number of seconds >= 0, got {seconds!r}")
    total = int(math.floor(seconds + FLOOR_EPSILON))
    if hours is None:
        hours = total >= SECONDS_PER_HOUR
    if hours:
        h, rest = divmod(total, SECONDS_PER_HOUR)
        m, s = divmod(rest, SECONDS_PER_MINUTE)
        return f"{h:02d}:{m:02d}:{s:02d}"
    m, s = divmod(total, SECONDS_PER_MINUTE)
    return f"{m:02d}:{s:02d}"


def format_seek(seconds: float) -> str:
    """Seconds as they appear in a seek link: ``205``, ``12.5`` (at most milliseconds, no trailing 0)."""
    text = f"{round(seconds, 3):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def seek_link(seconds: float, hours: bool | None = None) -> str:
    """``[MM:SS](#t=SECONDS)``: the link the web app turns into a seek of its player."""
    return f"[{format_timestamp(seconds, hours)}]({SEEK_ANCHOR}{format_seek(seconds)})"


# --- parsing ----------------------------------------------------------------------------------------

_NUM = r"\d{1,9}(?:\.\d{1,9})?"  # longer runs of digits are never a time (nor a float overflow)
_SEC_WORD = r"(?:seconds?|secs?)"
_COLON = "[:：]"  # a full-width colon (Chinese text) joins a clock time as well as ":"
_CLOCK3_RE = re.compile(rf"(\d{{1,2}}){_COLON}([0-5]\d){_COLON}([0-5]\d(?:\.\d+)?)")
_CLOCK2_RE = re.compile(rf"(\d{{1,3}}){_COLON}([0-5]\d(?:\.\d+)?)")
_UNIT_RE = re.compile(
    rf"(?:(\d{{1,9}})\s*(?:h|hours?|hrs?)\s*)?(?:(\d{{1,9}})\s*(?:m|min|mins|minutes?)\s*)?({_NUM})\s*(?:{_SEC_WORD}|s)",
    re.IGNORECASE,
)
# Chinese numbers as models write them in times: 二十五, 一百零五, 两, 十.
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}  # fmt: skip
_ZH_INT = r"(?:\d{1,9}|[零〇一二两三四五六七八九十百]{1,9})"
# Chinese hours/minutes/seconds: 1小时10分, 第25分钟, 1分30秒, 第30秒, 一小时十分 (at least one part).
_ZH_H = rf"(?:{_ZH_INT}\s*个?\s*小时)"  # in prose only 小时: "下午1时10分" is a time of day
_ZH_M = rf"(?:{_ZH_INT}\s*分(?:钟)?)"
_ZH_S = rf"(?:(?:{_NUM}|{_ZH_INT})\s*秒(?:钟)?)"
_ZH_RE = re.compile(
    rf"第?\s*(?:({_ZH_INT})\s*个?\s*(?:小时|时)\s*)?(?:({_ZH_INT})\s*分(?:钟)?\s*)?(?:({_NUM}|{_ZH_INT})\s*秒(?:钟)?)?"
)


def _zh_int(text: str) -> int:
    """An integer written in Arabic or Chinese digits: ``25``, ``二十五``, ``一百零五``, ``十``, ``两``."""
    if text.isdigit():
        return int(text)
    total, digit = 0, 0
    for ch in text:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        elif ch == "十":
            total += (digit or 1) * 10
            digit = 0
        elif ch == "百":
            total += (digit or 1) * 100
            digit = 0
        else:
            raise ValueError(f"not a number: {text!r}")
    return total + digit


def _zh_number(text: str) -> float:
    return float(text) if re.fullmatch(_NUM, text) else float(_zh_int(text))


def parse_timestamp(text: str) -> float:
    """Seconds from one time written in any style the model uses.

    Accepts ``12:34``, ``1:02:03``, ``00:00:12``, ``00:12.5``, ``12：34`` (full-width colon), ``12.5s``,
    ``12.5 seconds``, ``<12.5 seconds>``, ``90 sec``, ``1m30s``, ``1h2m3s``, ``1分30秒``, ``第30秒``,
    ``第25分钟``, ``1小时10分``, ``1小时``, ``二十五分钟``, and a bare number of seconds (``12.5``: the
    caller has already decided this string is a time). Surrounding brackets and spaces are ignored.
    Anything else -> ValueError.
    """
    s = text.strip().strip("<>[]()【】（）").strip()
    if re.fullmatch(_NUM, s):
        return float(s)
    if m := _CLOCK3_RE.fullmatch(s):
        return int(m[1]) * SECONDS_PER_HOUR + int(m[2]) * SECONDS_PER_MINUTE + float(m[3])
    if m := _CLOCK2_RE.fullmatch(s):
        return int(m[1]) * SECONDS_PER_MINUTE + float(m[2])
    if m := _UNIT_RE.fullmatch(s):
        h, mi, sec = m.groups()
        return int(h or 0) * SECONDS_PER_HOUR + int(mi or 0) * SECONDS_PER_MINUTE + float(sec)
    if (m := _ZH_RE.fullmatch(s)) and any(m.groups()):
        h, mi, sec = m.groups()
        return (
            (_zh_int(h) if h else 0) * SECONDS_PER_HOUR
            + (_zh_int(mi) if mi else 0) * SECONDS_PER_MINUTE
            + (_zh_number(sec) if sec else 0.0)
        )
    raise ValueError(f"not a timestamp: {text!r} (expected e.g. 12:34, 1:02:03, 12.5s or <12.5 seconds>)")


# --- finding ----------------------------------------------------------------------------------------

# ASCII-only boundaries: a Chinese character right next to a time ("在03:25时") must not block it.
# A colon or dot counts only before/after a digit, so "at 03:25: the" and "Start:03:25" still match.
_BEFORE = r"(?<![0-9A-Za-z_])(?<!\d[:.])"
_CLOCK_AFTER = r"(?![0-9A-Za-z_]|[:.：]\d)"
# One kind of colon in a time ("10：00:01" is a title's "10" and the time 00:01), and two digits before a
# full-width one ("00：12", not the "2：12" of "比分3-2：12").
_CLOCK = (
    rf"{_BEFORE}(?:\d{{1,2}}:[0-5]\d:[0-5]\d|\d{{2}}：[0-5]\d：[0-5]\d|\d{{1,3}}:[0-5]\d|\d{{2,3}}：[0-5]\d)"
    rf"(?:\.\d{{1,3}})?{_CLOCK_AFTER}"
)
_UNIT = rf"{_BEFORE}(?<!['’])(?:\d{{1,9}}h\s?)?(?:\d{{1,9}}m\s?)?{_NUM}(?:\s?{_SEC_WORD}|s)(?![0-9A-Za-z_])"  # 1m30s
_ANGLE = rf"<\s*(?:{_NUM}\s*(?:{_SEC_WORD}|s)|\d{{1,2}}(?::[0-5]\d){{1,2}}(?:\.\d+)?)\s*>"  # <12.5 seconds>
# Chinese: 第25分钟, 1小时10分, 1分30秒, 第30秒, 二十五分钟; whether one is a point in the video is
# decided by its context (_zh_is_point): "持续25分钟" (lasts 25 minutes) is not.
_ZH = (
    rf"(?:第\s*)?(?<![0-9.零〇一二两三四五六七八九十百])"
    rf"(?:{_ZH_H}(?:\s*{_ZH_M})?(?:\s*{_ZH_S})?|{_ZH_M}(?:\s*{_ZH_S})?|{_ZH_S})"
)
_TIME = rf"(?:{_ANGLE}|{_CLOCK}|{_ZH}|{_UNIT})"
_DASH = r"(?:\u2013|\u2014|-|－|~|～|〜){1,2}"  # "——" and "--" as well as one dash
_SEP = rf"(?:[ \t]*{_DASH}[ \t]*|[ \t]+(?:to|until|till)[ \t]+|[ \t]*(?:至|到)[ \t]*)"
_TIMES_RE = re.compile(
    rf"(?P<na>{_BEFORE}{_NUM}){_SEP}(?P<nb>{_NUM}\s?{_SEC_WORD}(?![0-9A-Za-z_])|{_NUM}s(?![0-9A-Za-z_]))"
    rf"|(?P<a>{_TIME})(?:{_SEP}(?P<b>{_TIME}))?",
    re.IGNORECASE,
)
_ZH_UNIT_RE = re.compile("[秒分时]")
# Chinese context: words before a time that make it a length ("持续25分钟"), characters after a time that
# make it a point ("25分钟处", "25分钟时", "25分钟的时候"), before it ("在25分钟", "从1小时"), and after such a
# "在" that make it a span again ("在25分钟内", "25分钟后").
_ZH_DURATION_BEFORE_RE = re.compile(
    r"(?:持续|长达|历时|用了|用时|花了|花费|耗时|时长|需要|大约|约|共|总共|每|全长|长)\s*$"
)
_ZH_POINT_AFTER_RE = re.compile(r"^\s*(?:处|时(?![间长])|的时候|的地方|的位置|那里)")
_ZH_POINT_BEFORE_RE = re.compile(r"(?:在|从|于|自|到|至)\s*$")
_ZH_SPAN_AFTER_RE = re.compile(r"^\s*(?:内|以内|之内|里|中|后|以后|之后|前|以前|之前)")

# Context that makes a match something other than a point in the video.
_DURATION_BEFORE_RE = re.compile(
    r"\b(?:for|lasts?|lasting|lasted|takes?|took|every|each|per|within)\s+$", re.IGNORECASE
)
_DURATION_AFTER_RE = re.compile(r"^\s+(?:long|later|earlier|ago|apart|each)\b", re.IGNORECASE)
_DECADE_BEFORE_RE = re.compile(r"\b(?:the|their|his|her|my|early|late|mid-?)\s*$", re.IGNORECASE)
_TIME_OF_DAY_AFTER_RE = re.compile(r"^\s*[ap]\.?m\b\.?", re.IGNORECASE)
_DATE_BEFORE_RE = re.compile(r"(?:\d{4}-\d{2}-\d{2}[ T]|\d{4}[-/]\d{1,2}[-/])$")  # after a date, or its day

# What is never rewritten: fenced code blocks, inline code spans, URLs, link destinations.
_URL_RE = re.compile(r"(?:[a-z][a-z0-9+.-]*://|www\.)[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"]", re.IGNORECASE)
_LINK_DEST_RE = re.compile(r"\]\([^)\n]*\)")
_LINK_TEXT_RE = re.compile(r"(?<!\\)\[([^\[\]\n]*)\]\([^)\n]*\)")


def _protected_ranges(text: str) -> list[tuple[int, int]]:
    """Sorted, merged character ranges where times are left exactly as written."""
    ranges = code_ranges(text)
    ranges += [m.span() for m in _URL_RE.finditer(text)]
    ranges += [m.span() for m in _LINK_DEST_RE.finditer(text)]
    return _merge(ranges)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _overlaps(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) overlaps any of the sorted, merged ``ranges``."""
    i = bisect.bisect_right(ranges, (start, math.inf)) - 1
    if i >= 0 and ranges[i][1] > start:
        return True
    return i + 1 < len(ranges) and ranges[i + 1][0] < end


def _is_zh(matched: str) -> bool:
    """Whether a matched time is a Chinese hour/minute/second form (not a clock time)."""
    return _ZH_UNIT_RE.search(matched) is not None and not re.search(r"\d[:：]\d", matched)


def _zh_is_point(text: str, start: int, end: int, in_range: bool) -> bool:
    """Whether the Chinese time (or range of them) ``text[start:end]`` is a point in the video.

    ``第…`` is (``第25分钟``, ``第30秒``), unless it counts hours (``第一小时`` is the first hour, a span). A
    minute written ``分`` without ``钟`` needs ``第`` or an hour before it (``10分`` is a score, ``十分`` means
    "very"). Otherwise the words around it decide: a point word after (``25分钟处``, ``约25分钟处``, ``30秒时``);
    else, unless a length word comes before (``持续25分钟``, ``用了1小时到2小时``), a range of two such times
    (``1小时到1小时10分``) or a preposition before (``在25分钟``, not ``在25分钟内``)."""
    matched = text[start:end]
    before, after = text[max(0, start - 8) : start], text[end : end + 8]
    if re.search(rf"第\s*{_ZH_H}", matched):  # 第一小时: the first hour
        return False
    if matched.startswith("第"):
        return True
    if re.search(r"分(?!钟)", matched) and "小时" not in matched and "秒" not in matched:
        return False
    if _ZH_POINT_AFTER_RE.match(after):  # "约25分钟处": at about 25 minutes
        return True
    if _ZH_DURATION_BEFORE_RE.search(before):
        return False
    return in_range or bool(_ZH_POINT_BEFORE_RE.search(before)) and not _ZH_SPAN_AFTER_RE.match(after)


def _is_point_in_video(text: str, start: int, end: int) -> bool:
    """Reject matches that the surrounding words show are durations, decades, clock times or dates."""
    matched = text[start:end]
    before, after = text[max(0, start - 40) : start], text[end : end + 40]
    if _DATE_BEFORE_RE.search(before):
        return False
    is_clock = ":" in matched or "：" in matched
    if is_clock:
        return not _TIME_OF_DAY_AFTER_RE.match(after)
    if "<" in matched:
        return True
    if _DURATION_BEFORE_RE.search(before) or _DURATION_AFTER_RE.match(after):
        return False
    bare_s = re.fullmatch(r"\d+s", matched, re.IGNORECASE) is not None
    return not (bare_s and _DECADE_BEFORE_RE.search(before))


def _find(text: str, protected: list[tuple[int, int]]) -> list[TimestampSpan]:
    spans: list[TimestampSpan] = []
    for m in _TIMES_RE.finditer(text):
        if _overlaps(protected, m.start(), m.end()):
            continue
        if m["na"] is not None:
            names = ("na", "nb")
            seconds, end_seconds = float(m["na"]), parse_timestamp(m["nb"])
        elif m["b"] is not None:
            names = ("a", "b")
            seconds, end_seconds = parse_timestamp(m["a"]), parse_timestamp(m["b"])
        else:
            names = ("a",)
            seconds, end_seconds = parse_timestamp(m["a"]), None
        zh = [_is_zh(m[n]) for n in names]
        if all(zh):  # Chinese times decide by their context; two joined as a range are points
            if not _zh_is_point(text, m.start(), m.end(), in_range=len(names) == 2):
                continue
        elif any(zh):  # a Chinese time and another: each must be a point on its own
            if not all(
                _zh_is_point(text, *m.span(n), in_range=False)
                for n, is_zh in zip(names, zh, strict=True)
                if is_zh
            ) or not _is_point_in_video(text, m.start(), m.end()):
                continue
        elif not _is_point_in_video(text, m.start(), m.end()):
            continue
        parts = tuple(m.span(n) for n in names)
        spans.append(TimestampSpan(m.start(), m.end(), seconds, end_seconds, parts))
    return spans


def find_timestamps(text: str) -> list[TimestampSpan]:
    """Every time and range of times in ``text``, in order, outside code, URLs and link targets."""
    return _find(text, _protected_ranges(text))


# --- rewriting --------------------------------------------------------------------------------------


def _hours_for(duration: float | None) -> bool | None:
    """``True`` (``HH:MM:SS`` everywhere) for videos of an hour or more, else per value."""
    return True if duration is not None and duration >= SECONDS_PER_HOUR else None


def _plain(span: TimestampSpan, hours: bool | None) -> str:
    text = format_timestamp(span.seconds, hours)
    if span.end_seconds is not None:
        text += RANGE_DASH + format_timestamp(span.end_seconds, hours)
    return text


def normalize_timestamps(markdown: str, duration: float | None = None) -> str:
    """Rewrite every time to ``MM:SS`` (``HH:MM:SS`` when ``duration`` >= 1 h) and ranges to
    ``MM:SS–MM:SS``; brackets and other markup around a time stay as they are."""
    hours = _hours_for(duration)
    out: list[str] = []
    pos = 0
    for span in find_timestamps(markdown):
        out += [markdown[pos : span.start], _plain(span, hours)]
        pos = span.end
    out.append(markdown[pos:])
    return "".join(out)


def _linkable(seconds: float, duration: float | None) -> bool:
    return duration is None or seconds <= duration + DURATION_TOLERANCE


def link_timestamps(markdown: str, duration: float | None = None) -> str:
    """Normalise every time (see :func:`normalize_timestamps`) and make it a seek link
    ``[MM:SS](#t=SECONDS)``; for a range, each end is its own link.

    ``[03:25]`` becomes ``[03:25](#t=205)`` (the brackets become the link's). Times inside existing
    link text stay text (normalised), as do those past ``duration`` (when given). Code, URLs and link
    targets are untouched. Linking already linked text changes nothing.
    """
    hours = _hours_for(duration)
    link_texts = _merge([m.span(1) for m in _LINK_TEXT_RE.finditer(markdown)])
    out: list[str] = []
    pos = 0
    for span in find_timestamps(markdown):
        if _overlaps(link_texts, span.start, span.end):
            out += [markdown[pos : span.start], _plain(span, hours)]
            pos = span.end
            continue
        start, end = span.start, span.end
        if markdown[start - 1 : start] == "\\":  # the backslash would escape the link's "[": text
            out += [markdown[pos:start], _plain(span, hours)]
            pos = end
            continue
        bracketed = (
            start > 0
            and markdown[start - 1] == "["
            and markdown[end : end + 1] == "]"
            and markdown[end + 1 : end + 2] not in ("(", "[")
            and not markdown[max(0, start - 2) : start].startswith("!")
            and not markdown[max(0, start - 2) : start].startswith("\\")
        )
        if bracketed:
            start, end = start - 1, end + 1
        values = [span.seconds] if span.end_seconds is None else [span.seconds, span.end_seconds]
        pieces = [
            seek_link(v, hours) if _linkable(v, duration) else format_timestamp(v, hours) for v in values
        ]
        if bracketed and not any(_linkable(v, duration) for v in values):
            pieces[0] = "[" + pieces[0]  # nothing linked: keep the brackets
            pieces[-1] += "]"
        out += [markdown[pos:start], RANGE_DASH.join(pieces)]
        pos = end
    out.append(markdown[pos:])
    return "".join(out)
