"""Write a summary to files: Markdown, JSON, SRT, WebVTT and YouTube chapters.

One small registry, as in whisper's ``get_writer``: ``get_writer("srt").write(summary, "talk.srt")``.
Adding a format is one :class:`Writer` subclass and one entry in ``_WRITERS``.

Chapters come from the summary's Markdown (:func:`parse_chapters`): any heading, list item, bold or plain
line, or table row that carries one time or range with a title before or after it, as models write them
in English and Chinese (``### [03:10–05:20] Title``, ``1. **Title** (03:10–05:20): ...``,
``【章节一：标题】(03:10 - 05:20)``, ``| 03:10 | 05:20 | Title |``), in any time style :mod:`.timestamps`
reads. The timeline, the JSON's chapters and the SRT/WebVTT/YouTube chapter files all use this reading.
"""

from __future__ import annotations

import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .errors import OptionsError
from .markdown import lines_outside_fences
from .timestamps import (
    SECONDS_PER_HOUR,
    SEEK_ANCHOR,
    find_timestamps,
    format_timestamp,
    normalize_timestamps,
)

logger = logging.getLogger(__name__)

MIN_CUE_SECONDS = 1.0  # a subtitle cue of zero length is invisible; shortest cue written, seconds
YOUTUBE_MIN_CHAPTERS = 3  # YouTube ignores chapter lists shorter than this
YOUTUBE_MIN_CHAPTER_SECONDS = 10.0  # ... or with a chapter shorter than this
INTRO_TITLE = "Intro"
JSON_SCHEMA_VERSION = 1
VTT_HEADER = "WEBVTT"
QUESTION_HEADING = "\n\n---\n\n**Q: {question}**\n\n"  # before each follow-up's answer


@dataclass(frozen=True)
class Chapter:
    """A stretch of the video: ``start``/``end`` in seconds from its start, and a one-line title."""

    start: float
    end: float
    title: str


@dataclass(frozen=True)
class Summary:
    """What a run produced, everything a writer needs."""

    markdown: str  # the model's answer, as written (times in any style)
    video: str  # file name of the video (no folders)
    duration: float  # seconds; 0 when unknown
    model: str  # model id or folder
    prompt: str  # prompt name ("lecture") or text
    stats: dict[str, Any] = field(default_factory=dict)  # free-form numbers: tokens, timings...
    # What is said in the video (``speech.Transcript.to_dict()``): segments with start, end and text.
    transcript: dict[str, Any] | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def known_duration(self) -> float | None:
        return self.duration if self.duration > 0 else None


# --- chapters ---------------------------------------------------------------------------------------

PARTS_HEADING = "## Notes by part"  # a segmented video's answer: the merged summary, this, then each part's
TITLE_MAX_CHARS = 80  # a title written before its time is at most this long (longer: a sentence of prose)

_PARTS_RE = re.compile(rf"^{re.escape(PARTS_HEADING)}[ \t]*$", re.MULTILINE)
_QUESTION_BEFORE, _QUESTION_AFTER = QUESTION_HEADING.split("{question}")
_QUESTION_RE = re.compile(re.escape(_QUESTION_BEFORE) + ".*?" + re.escape(_QUESTION_AFTER), re.DOTALL)
_MD_LINK_RE = re.compile(r"!?\[([^\[\]\n]*)\]\([^)\n]*\)")
_SEEK_LINK = r"\[([^\[\]\n]*)\]\(" + re.escape(SEEK_ANCHOR) + r"[^)\n]*\)"
_SEEK_LINK_RE = re.compile(_SEEK_LINK)
_SEEK_TARGET_RE = re.compile(r"\[[^\[\]\n]*\]\(" + re.escape(SEEK_ANCHOR) + r"(\d+(?:\.\d+)?)\)")
_SEEK_RANGE_RE = re.compile(_SEEK_LINK + "\u2013" + _SEEK_LINK)
_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s+")
_LIST_RE = re.compile(r"^(\s*)(?:[-*+•]|\d+[.)、])\s+")
_TABLE_ROW_RE = re.compile(r"^\s{0,3}\|.*\|\s*$")
_BOLD_LINE_RE = re.compile(r"^\s*(\*\*|__)(?P<inner>.+?)\1\s*[:：]?\s*$")
_OPENERS, _CLOSERS = "[(（【", "])）】"  # brackets around a time or a title
_OPEN, _CLOSE = re.escape(_OPENERS), re.escape(_CLOSERS)  # the same, inside a regex's [...]
_TITLE_ENDS = " \t:：|｜-\u2013\u2014"  # separators stripped from either end of a title
_DASHES = "\u2013\u2014\\-－~～〜"
# Chapter markers a title may start with: 第一章, 第2部分, 章节一, Chapter 1, Part 2, 1., ①.
_ZH_NUMERALS = "0-9零〇一二两三四五六七八九十百"
_ZH_MARKER = rf"第\s*[{_ZH_NUMERALS}]+\s*(?:章|节|部分|段|集|回|讲|课|篇|幕|步|part)|章节\s*[{_ZH_NUMERALS}]+"
_EN_MARKER = r"(?:chapter|part|section|segment|step|scene|act|topic)\s+(?:\d+|[ivx]+)\b"
_MARKER = (
    rf"(?:{_ZH_MARKER}|{_EN_MARKER}|\d+\s*[.)]|[{_ZH_NUMERALS}]+\s*、|[(（][{_ZH_NUMERALS}]+[)）]|[①-⑳])"
)
_MARK_SEP = rf"[:：.、|｜{_DASHES}]"
# Stripped from a title's start when more follows: a Chinese marker (then a space or punctuation), an
# English one only before punctuation ("Chapter 2: Graphs" is "Graphs", "Part 1 of 2" stays).
_MARKER_LEAD_RE = re.compile(
    rf"^(?:(?:{_ZH_MARKER})\s*(?:{_MARK_SEP}\s*)?|(?:{_EN_MARKER})\s*{_MARK_SEP}\s*"
    rf"|\d+\s*[.)]\s*|[{_ZH_NUMERALS}]+\s*、\s*|[(（][{_ZH_NUMERALS}]+[)）]\s*|[①-⑳]\s*)",
    re.IGNORECASE,
)
# What may stand before a time that opens a line: no letter or digit (emphasis, brackets, a bullet such as
# "▶" or "📌"), or a chapter marker.
_OPENERS_RE = re.compile(rf"^[\W_]*(?:{_MARKER}[\W_]*)?$", re.IGNORECASE)
_BOLD_TEXT_RE = re.compile(r"(\*\*|__)[^*_\s].*?\1")  # "**🎬** (03:10)": a title in bold, not a bullet
# Between a title and the time after it: a bracket (with "from"/"at"), a colon, a pipe, a dash or spaces.
_GLUE_RE = re.compile(
    rf"(?:[\s*_]*[{_OPEN}][\s*_{_OPEN}]*(?:(?:from|at|around|about|approx\.?|从|自|在|约|大约)\s*)?"
    rf"|[\s*_]*[:：|｜][\s*_]*(?:(?:from|从|自)\s*)?|[\s*_]*[{_DASHES}]{{1,2}}[\s*_]*|[\s*_]+)$",
    re.IGNORECASE,
)
# A title that ends with one of these is the start of a sentence about the time ("The demo starts at").
_TITLE_STOP_RE = re.compile(
    r"(?:(?:^|\s)(?:at|from|around|about|by|to|until|till|between|after|before|since|in|on|near|approximately|"
    r"and|or|of|the|a|an|is|was|are|were)|[在从于自到至约是的])$",
    re.IGNORECASE,
)
_SENTENCE_RE = re.compile(r"[.!?;](?:\s|$)|[。！？；]")
_AFTER_TITLE_RE = re.compile(rf"^[\s*_{_CLOSE}]*(?:$|[:：|｜,，;；{_DASHES}])")  # "(03:10)." ends a sentence
_BOLD_BEFORE_RE = re.compile(rf"(?:\*\*|__)[\s{_OPEN}]*$")
_RANGE_GLUE_RE = re.compile(rf"^[\s{_CLOSE}*_]*(?:[{_DASHES}]{{1,2}}|to|至|到)[\s{_OPEN}*_]*$", re.IGNORECASE)
_TITLE_LEAD_RE = re.compile(rf"^[\s{_CLOSE}*_]*(?:(?:[{_DASHES}]{{1,2}}|[:：|｜·.、])\s*)?(?:\*\*|__)?\s*")
_EMPHASIS_RE = re.compile(r"(\*\*|__|`)")
_WRAPPED_RE = re.compile(rf"^[{_OPEN}](.*)[{_CLOSE}]$")
_NUMBER_CELL_RE = re.compile(r"^[#\d.\s]*$")
# A line that is not a chapter but starts a new part of the answer: a heading, a bold line, "Key moments:".
_SECTION_LINE_RE = re.compile(
    r"^\s{0,3}(?:#{1,6}\s|(\*\*|__).*(\*\*|__)[:：]?\s*$|[^-*+|\s].{0,40}[:：]\s*$)"
)


@dataclass
class _Line:
    kind: str  # "heading" | "list" | "paragraph" (a plain or bold line, or a table row)
    indent: int
    start: float
    end: float | None
    title: str
    section: int = 0  # which part of the answer (parts are separated by headings that are not chapters)


def _clean_title(title: str) -> str:
    """A title without emphasis, wrapping brackets, a leading chapter marker ("第一章", "Chapter 2:") when
    more than the marker is written, and separators at either end."""
    title = _EMPHASIS_RE.sub("", title).strip()
    # A title neither starts with a closing bracket nor ends with an opening one (left by the time's removal).
    title = title.lstrip(_TITLE_ENDS + _CLOSERS).rstrip(_TITLE_ENDS + _OPENERS)
    while m := _WRAPPED_RE.match(title):
        title = m[1].strip(_TITLE_ENDS)
    if not any(ch in title for ch in _OPENERS):  # an unpaired bracket
        title = title.strip(_CLOSERS)
    if not any(ch in title for ch in _CLOSERS):
        title = title.strip(_OPENERS)
    if (m := _MARKER_LEAD_RE.match(title)) and title[m.end() :].strip(_TITLE_ENDS + _CLOSERS):
        title = title[m.end() :]
    return title.strip(_TITLE_ENDS)


def _time_of(body: str) -> tuple[float, float | None, int, int] | None:
    """The first time (or range) of ``body``: (start, end or None, its first character, its last + 1); two
    single times joined by a dash ("[03:10] – [05:20]") are one range."""
    spans = find_timestamps(body)
    if not spans:
        return None
    first = spans[0]
    end_seconds, until = first.end_seconds, first.end
    if end_seconds is None and len(spans) > 1 and _RANGE_GLUE_RE.match(body[first.end : spans[1].start]):
        end_seconds, until = spans[1].seconds, spans[1].end
    return first.seconds, end_seconds, first.start, until


def _table_row(text: str) -> _Line | None:
    """A table row with a time cell (a time or range, or a start and an end cell), titled by its first cell
    that holds words."""
    cells = [c.strip() for c in text.strip().strip("|").split("|")]
    times: list[tuple[int, float, float | None]] = []
    for i, cell in enumerate(cells):
        found = _time_of(_EMPHASIS_RE.sub("", cell))
        if found and not _EMPHASIS_RE.sub("", cell)[: found[2]].strip(_OPENERS + " "):
            times.append((i, found[0], found[1]))
    if not times:
        return None
    i, start, end = times[0]
    if end is None and len(times) > 1 and times[1][0] == i + 1 and times[1][2] is None:
        end = times[1][1]  # | 03:10 | 05:20 | Title |
    used = {t[0] for t in times}
    words = [c for j, c in enumerate(cells) if j not in used and not _NUMBER_CELL_RE.match(c)]
    return _Line("paragraph", 0, start, end, _clean_title(words[0]) if words else "")


def _classify(line: str) -> _Line | None:
    """A chapter candidate if ``line`` (a heading, list item, bold or plain line, or table row) carries a time
    or range with its title after it (``[03:10] Title``) or before it (``Title (03:10–05:20)``)."""
    text = _MD_LINK_RE.sub(r"\1", _SEEK_TARGET_RE.sub(r"<\1 seconds>", line))  # a seek link's exact time
    if _TABLE_ROW_RE.match(text):
        return _table_row(text)
    if m := _HEADING_RE.match(text):
        kind, indent, body = "heading", 0, text[m.end() :]
    elif m := _LIST_RE.match(text):
        kind, indent, body = "list", len(m[1].expandtabs(4)), text[m.end() :]
    else:
        kind, indent, body = "paragraph", 0, text
    if m := _BOLD_LINE_RE.match(body):
        body = m["inner"]
    found = _time_of(body)
    if found is None:
        return None
    start, end, first, until = found
    before, after = body[:first], body[until:]
    if _OPENERS_RE.match(before) and not _BOLD_TEXT_RE.search(
        before
    ):  # time first: "[03:10] Title", "第一章 03:10–05:20 引言"
        title = _TITLE_LEAD_RE.sub("", after, count=1)
        title = _EMPHASIS_RE.sub("", title).strip().rstrip(":：").strip()
        if not _clean_title(title):
            title = before  # "## Chapter 2 (03:10–05:20)": the marker is all the title there is
        return _Line(kind, indent, start, end, _clean_title(title))
    # Title first: "Title (03:10–05:20): what happens", "**Title** — 03:10 to 05:20", "Title 03:10". After
    # the time: nothing, or a separator before what happens; or anything, after a title in bold.
    glue = _GLUE_RE.search(before)
    title = _clean_title(before[: glue.start()] if glue else before)
    if (
        not title
        or len(title) > TITLE_MAX_CHARS
        or _SENTENCE_RE.search(title)
        or _TITLE_STOP_RE.search(title)
        or not (_AFTER_TITLE_RE.match(after) or _BOLD_BEFORE_RE.search(before))
    ):
        return None
    return _Line(kind, indent, start, end, title)


def _candidates(markdown: str) -> list[_Line]:
    lines: list[_Line] = []
    section = 0
    for raw in lines_outside_fences(markdown):
        if (line := _classify(raw)) is not None:
            line.section = section
            lines.append(line)
        elif _SECTION_LINE_RE.match(raw):
            section += 1
    return lines


def _chosen(candidates: list[_Line]) -> list[_Line]:
    """The chapter list among the candidates (see :func:`parse_chapters`)."""
    # Chapters with ranges, and elsewhere a list of single moments: the moments are not chapters.
    ranged = [c.section for c in candidates if c.end is not None]
    if len(ranged) >= 2:
        candidates = [c for c in candidates if c.section in ranged]
    items = [c for c in candidates if c.kind == "list"]
    top = min((c.indent for c in items), default=0)
    groups = (
        [c for c in candidates if c.kind == "heading"],
        [c for c in candidates if c.kind == "paragraph"],
        [c for c in items if c.indent == top],
    )
    return next((g for g in groups if len(g) >= 2), next((g for g in groups if g), []))


def parse_chapters(markdown: str, duration: float | None = None) -> tuple[list[Chapter], list[str]]:
    """Chapters from a summary's Markdown, and a description of each correction made.

    A chapter is a line that carries one time or range with its title after it (``### [03:10–05:20]
    Title``, ``- 03:10 Title``, ``**[03:10 - 05:20] Title**``) or before it (``1. **Title** (03:10–05:20):
    what happens``, ``## 第一章 引言（03:10–05:20）``, ``【章节一：标题】(03:10 - 05:20)``, ``- Title: 03:10 to
    05:20``, ``| 03:10–05:20 | Title |``), in any time style :mod:`.timestamps` reads. A title written before
    its time is a title, not a sentence about it: at most TITLE_MAX_CHARS, no sentence break, not ending in
    "at", "from", "在"... Chapter markers are dropped from titles ("第一章 引言" is "引言").

    Which lines are the chapters:

    - Where the answer has chapters with ranges, the parts of it (between headings that are not chapters,
      bold lines, "Key moments:") that hold only single moments are not chapters.
    - The chapters are the headings that carry a time, when two or more do; else the plain and bold lines
      and table rows that do; else the least-indented list items (and when no kind has two, the first kind
      that has one). So the key points under chapters (list items, nested items) stay key points, and one
      "## Overview (00:00–05:32)" does not hide a list of chapters.
    - A segmented video's answer is its merged summary, then ``## Notes by part`` (PARTS_HEADING) and each
      part's notes; follow-up answers come after QUESTION_HEADING. Chapters come from the merged summary;
      if it has none, from the parts' notes; if they have none, from the latest follow-up answer that has.

    Corrections (each one adds a warning): times past ``duration`` are clamped to it; chapters out of
    order are sorted by start; an end before its start, or past the next chapter's start, is replaced by
    the next chapter's start. Missing ends are the next chapter's start, and for the last chapter
    ``duration`` (or its own start when the duration is unknown, with a warning).
    """
    if duration is not None and duration <= 0:
        duration = None
    summary, *follow_ups = _QUESTION_RE.split(markdown)
    merged, *parts = _PARTS_RE.split(summary, maxsplit=1)
    for text in (merged, *parts, *reversed(follow_ups)):
        if chosen := _chosen(_candidates(text)):
            break
    else:
        return [], []

    warnings: list[str] = []
    raw: list[tuple[float, float | None, str]] = []
    for i, c in enumerate(chosen, 1):
        title = c.title or f"Chapter {i}"
        start, end = c.start, c.end
        if duration is not None:
            if start > duration:
                warnings.append(
                    f"chapter '{title}' starts at {format_timestamp(start)}, after the end of the video "
                    f"({format_timestamp(duration)}); moved to the end"
                )
                start = duration
            if end is not None and end > duration:
                warnings.append(
                    f"chapter '{title}' ends at {format_timestamp(end)}, after the end of the video "
                    f"({format_timestamp(duration)}); clamped"
                )
                end = duration
        raw.append((start, end, title))

    if any(a[0] > b[0] for a, b in zip(raw, raw[1:], strict=False)):
        warnings.append("chapters were out of order; sorted by start time")
        raw.sort(key=lambda r: r[0])  # stable: equal starts keep the model's order

    chapters: list[Chapter] = []
    for i, (start, end, title) in enumerate(raw):
        next_start = raw[i + 1][0] if i + 1 < len(raw) else None
        fallback = next_start if next_start is not None else duration
        if end is not None and end < start:
            warnings.append(
                f"chapter '{title}' ends ({format_timestamp(end)}) before it starts "
                f"({format_timestamp(start)}); ends at the next chapter instead"
            )
            end = None
        elif end is not None and next_start is not None and end > next_start:
            warnings.append(
                f"chapter '{title}' ends at {format_timestamp(end)}, after the next chapter starts "
                f"({format_timestamp(next_start)}); shortened"
            )
            end = next_start
        if end is None:
            if fallback is None:
                warnings.append(
                    f"chapter '{title}' has no end time and the video's duration is unknown; "
                    "it ends where it starts"
                )
                fallback = start
            end = max(fallback, start)
        chapters.append(Chapter(start, end, title))
    return chapters, warnings


def summary_chapters(summary: Summary) -> tuple[list[Chapter], list[str]]:
    """:func:`parse_chapters` applied to a summary."""
    return parse_chapters(summary.markdown, summary.known_duration)


def _hours(summary: Summary, chapters: list[Chapter]) -> bool:
    """One style for a whole file: ``HH:MM:SS`` when the video (or a chapter) reaches an hour."""
    longest = max([summary.duration, *(c.end for c in chapters)], default=0.0)
    return longest >= SECONDS_PER_HOUR


def _log_warnings(fmt: str, warnings: list[str]) -> None:
    for w in warnings:
        logger.warning("%s: %s", fmt, w)


# --- writers ----------------------------------------------------------------------------------------


class Writer(ABC):
    """Turns a :class:`Summary` into one file format."""

    format: str  # registry key, e.g. "srt"
    extension: str  # file name extension without the dot
    description: str  # what a person is offered: "SRT subtitles"

    @abstractmethod
    def to_string(self, summary: Summary) -> str:
        """The whole file as text."""

    def has_content(self, text: str) -> bool:
        """Whether ``to_string``'s ``text`` holds anything for a person (a track may have no cue)."""
        return bool(text.strip())

    def write(self, summary: Summary, file: str | os.PathLike[str] | IO[str]) -> None:
        """Write to a path (UTF-8, ``\\n`` line ends) or to an open text file."""
        text = self.to_string(summary)
        if hasattr(file, "write"):
            file.write(text)  # type: ignore[union-attr]
            return
        with open(file, "w", encoding="utf-8", newline="\n") as f:  # type: ignore[arg-type]
            f.write(text)


def _unlink_seek_links(markdown: str) -> str:
    """``[03:25](#t=205)`` -> ``[03:25]`` and ``[03:10](#t=190)–[05:20](#t=320)`` -> ``[03:10–05:20]``
    (what :func:`link_timestamps` made of them): seek links only work inside the web app."""
    markdown = _SEEK_RANGE_RE.sub("[\\1\u2013\\2]", markdown)
    return _SEEK_LINK_RE.sub(r"[\1]", markdown)


class MarkdownWriter(Writer):
    format = "md"
    extension = "md"
    description = "Markdown"

    def to_string(self, summary: Summary) -> str:
        text = normalize_timestamps(_unlink_seek_links(summary.markdown), summary.known_duration)
        return text.strip() + "\n"


class JSONWriter(Writer):
    format = "json"
    extension = "json"
    description = "JSON"

    def to_string(self, summary: Summary) -> str:
        chapters, warnings = summary_chapters(summary)
        hours = _hours(summary, chapters)
        data = {
            "schema_version": JSON_SCHEMA_VERSION,
            "video": summary.video,
            "duration": summary.duration,
            "duration_text": format_timestamp(summary.duration, hours) if summary.duration > 0 else None,
            "model": summary.model,
            "prompt": summary.prompt,
            "created": summary.created,
            "markdown": MarkdownWriter().to_string(summary),
            "chapters": [
                {
                    "start": c.start,
                    "end": c.end,
                    "start_text": format_timestamp(c.start, hours),
                    "end_text": format_timestamp(c.end, hours),
                    "title": c.title,
                }
                for c in chapters
            ],
            "stats": summary.stats,
            "transcript": summary.transcript,
            "warnings": warnings,
        }
        return json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"


def _cue_time(seconds: float, separator: str) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (WebVTT)."""
    millis = round(max(seconds, 0.0) * 1000)
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _srt(cues: list[tuple[float, float, str]]) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm``."""
    return "\n".join(
        f"{i}\n{_cue_time(start, ',')} --> {_cue_time(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(cues, 1)
    )


def _vtt(cues: list[tuple[float, float, str]], numbered: bool) -> str:
    """WebVTT: the header, then the cues (with their numbers as identifiers when ``numbered``), text escaped."""
    blocks = [VTT_HEADER + "\n"]
    for i, (start, end, text) in enumerate(cues, 1):
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        cue_id = f"{i}\n" if numbered else ""
        blocks.append(f"{cue_id}{_cue_time(start, '.')} --> {_cue_time(end, '.')}\n{text}\n")
    return "\n".join(blocks)


def _cues(summary: Summary, fmt: str) -> list[tuple[float, float, str]]:
    """One cue per chapter, at least :data:`MIN_CUE_SECONDS` long, title on one line."""
    chapters, warnings = summary_chapters(summary)
    _log_warnings(fmt, warnings)
    if not chapters:
        logger.warning("%s: no chapters found in the summary; writing an empty track", fmt)
    cues = []
    for c in chapters:
        end = c.end if c.end > c.start else c.start + MIN_CUE_SECONDS
        title = " ".join(c.title.split()).replace("-->", "\u2192")
        cues.append((c.start, end, title))
    return cues


class SRTWriter(Writer):
    format = "srt"
    extension = "srt"
    description = "SRT chapters"

    def to_string(self, summary: Summary) -> str:
        return _srt(_cues(summary, self.format))


class VTTWriter(Writer):
    format = "vtt"
    extension = "vtt"
    description = "WebVTT chapters"

    def has_content(self, text: str) -> bool:
        return text.strip() != VTT_HEADER

    def to_string(self, summary: Summary) -> str:
        return _vtt(_cues(summary, self.format), numbered=True)


class ChaptersWriter(Writer):
    """YouTube description chapters: ``00:00 Title`` per line, the first at 00:00."""

    format = "chapters"
    extension = "txt"
    description = "YouTube chapter lines"

    def to_string(self, summary: Summary) -> str:
        chapters, warnings = summary_chapters(summary)
        if chapters and chapters[0].start >= 1.0:  # 00:00 as YouTube reads it (whole seconds)
            chapters.insert(0, Chapter(0.0, chapters[0].start, INTRO_TITLE))
            warnings.append(
                f"YouTube needs a chapter at 00:00; added '{INTRO_TITLE}' before the first chapter "
                f"({format_timestamp(chapters[1].start)})"
            )
        if chapters and len(chapters) < YOUTUBE_MIN_CHAPTERS:
            warnings.append(f"YouTube shows chapters only when there are at least {YOUTUBE_MIN_CHAPTERS}")
        short = [c.title for c in chapters[:-1] if c.end - c.start < YOUTUBE_MIN_CHAPTER_SECONDS]
        if short:
            warnings.append(
                f"YouTube needs chapters of at least {YOUTUBE_MIN_CHAPTER_SECONDS:g} s; shorter: "
                + ", ".join(f"'{t}'" for t in short)
            )
        _log_warnings(self.format, warnings)
        hours = _hours(summary, chapters)
        return "".join(f"{format_timestamp(c.start, hours)} {c.title}\n" for c in chapters)


# --- the transcript ---------------------------------------------------------------------------------


def _speech_cues(transcript: dict[str, Any] | None) -> list[tuple[float, float, str]]:
    """(start, end, text) of each transcript segment, times as recognised; a segment of no length is
    shown MIN_CUE_SECONDS."""
    segments = (transcript or {}).get("segments", [])
    return [
        (
            s["start"],
            s["end"] if s["end"] > s["start"] else s["start"] + MIN_CUE_SECONDS,
            s["text"].replace("-->", "\u2192"),
        )
        for s in segments
    ]


class TranscriptWriter(Writer):
    """A writer of the summary's transcript alone; :meth:`transcript_string` writes a transcript that
    came without a summary (the CLI's ``transcribe``)."""

    def to_string(self, summary: Summary) -> str:
        return self.transcript_string(summary.transcript)

    @abstractmethod
    def transcript_string(self, transcript: dict[str, Any] | None) -> str:
        """The whole file for ``transcript`` (``speech.Transcript.to_dict()``; None: no transcript)."""


class TranscriptSRTWriter(TranscriptWriter):
    """What is said, as SubRip subtitles (empty without a transcript)."""

    format = "transcript.srt"
    extension = "transcript.srt"
    description = "transcript (SRT)"

    def transcript_string(self, transcript: dict[str, Any] | None) -> str:
        return _srt(_speech_cues(transcript))


class TranscriptVTTWriter(TranscriptWriter, VTTWriter):
    """What is said, as WebVTT subtitles (only the header without a transcript)."""

    format = "transcript.vtt"
    extension = "transcript.vtt"
    description = "transcript (WebVTT)"

    def transcript_string(self, transcript: dict[str, Any] | None) -> str:
        return _vtt(_speech_cues(transcript), numbered=False)


class TranscriptTextWriter(TranscriptWriter):
    """What is said, one segment a line, without times."""

    format = "transcript.txt"
    extension = "transcript.txt"
    description = "transcript (text)"

    def transcript_string(self, transcript: dict[str, Any] | None) -> str:
        return "".join(f"{s['text']}\n" for s in (transcript or {}).get("segments", []))


_WRITERS: dict[str, type[Writer]] = {
    w.format: w
    for w in (
        MarkdownWriter,
        JSONWriter,
        SRTWriter,
        VTTWriter,
        ChaptersWriter,
        TranscriptSRTWriter,
        TranscriptVTTWriter,
        TranscriptTextWriter,
    )
}
FORMATS: tuple[str, ...] = tuple(_WRITERS)


def get_writer(fmt: str) -> Writer:
    """The writer for ``fmt`` (one of :data:`FORMATS`; case and a leading dot are ignored)."""
    key = fmt.strip().lower().lstrip(".")
    if key not in _WRITERS:
        raise OptionsError(f"unknown output format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return _WRITERS[key]()


# --- every export at once ---------------------------------------------------------------------------


def write_all(
    summary: Summary,
    folder: str | os.PathLike[str],
    stem: str,
    formats: Sequence[str] = FORMATS,
    *,
    skip_empty: bool = False,
) -> tuple[list[Path], list[str]]:
    """Write ``summary`` as ``folder/<stem>.<extension>`` in each of ``formats`` (the page offers every
    format, the CLI those asked for). ``skip_empty``: leave out a file with nothing for a person in it (a
    summary without chapter times, an empty transcript). Returns (the files written, the descriptions of
    the formats left out)."""
    written, skipped = [], []
    for fmt in formats:
        writer = get_writer(fmt)
        text = writer.to_string(summary)
        if skip_empty and not writer.has_content(text):
            skipped.append(writer.description)
            continue
        path = Path(folder) / f"{stem}.{writer.extension}"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        written.append(path)
    return written, skipped


def transcript_string(transcript: dict[str, Any], fmt: str) -> str:
    """A transcript alone (``speech.Transcript.to_dict()``) as ``fmt``: srt, vtt, txt, or json (the
    dictionary itself)."""
    if fmt == "json":
        return json.dumps(transcript, ensure_ascii=False, indent=2) + "\n"
    writer = get_writer(f"transcript.{fmt}")
    assert isinstance(writer, TranscriptWriter)
    return writer.transcript_string(transcript)
