"""A chapter timeline for the page: a bar with one clickable span per chapter, and a card per chapter with
a thumbnail of the sampled frame nearest its start, its title and its start–end.

Thumbnails come from the frames the model reads, as they are read: :meth:`Thumbnails.tap` wraps the frame
stream a session iterates and keeps a small JPEG of at most one frame per ``interval_s`` (the first frame
in each slot of that length), so there is no second decode and memory stays bounded (MAX_THUMBNAILS
slots, MAX_THUMBNAIL_BYTES in all). A session whose vision features came from the feature cache decodes
no frame: then :func:`frame_reader` seeks to the few frames the chapters need (one per chapter at most).

Under the chapter bar, a thinner track marks where speech is (the transcript's segments), each mark a link
to its time.

Every link is ``href="#t=SECONDS"``, the anchor the page's seek script already handles; a link's text is
the chapter's start time, so the seek pre-fills the question box with "What is happening at 03:10?".
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from .errors import SummarizerError
from .export import Chapter, parse_chapters
from .timestamps import SECONDS_PER_HOUR, SEEK_ANCHOR, format_seek, format_timestamp
from .video import Frame, sample

log = logging.getLogger(__name__)

THUMBNAIL_WIDTH = 160  # pixels; never wider than the sampled frame
THUMBNAIL_QUALITY = 70  # JPEG quality: ~4-8 KB at 160x90
MAX_THUMBNAILS = 240  # per video: a long video keeps one frame per (duration / MAX_THUMBNAILS) seconds
MIN_THUMBNAIL_INTERVAL_S = 2.0  # seconds: never more than one thumbnail per this long
MAX_THUMBNAIL_BYTES = 4 * 2**20  # JPEG bytes kept per video at most; later frames are not kept
# Span and card colours, cycled (a colour-blind-safe palette: Okabe-Ito, minus black and yellow).
CHAPTER_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7F7F7F")
NO_SUMMARY_NOTE = "Chapters appear here once the video is summarised."
NO_CHAPTERS_NOTE = "No chapters: the summary gives no chapter times, so there is no timeline."
MIN_SPAN_PERCENT = 0.4  # a chapter shorter than this share of the video still gets a visible span
MERGE_SPEECH_PERCENT = 0.3  # speech marks closer than this share of the video are drawn as one
MAX_FRAMES_READ = 32  # frames decoded for missing thumbnails per timeline, at most

# Styles of the rendered HTML, for the component that shows it (gr.HTML's css_template). Card titles use
# the regular weight: Gradio's semibold web font drew some letters of them in another face in Chromium.
TIMELINE_CSS = """
.timeline-note { margin: 4px 0; color: var(--body-text-color-subdued); font-size: 0.9em; }
.timeline-bar { position: relative; height: 22px; margin: 6px 0 10px; border-radius: 4px;
  background: var(--neutral-200, #e5e7eb); overflow: hidden; }
.timeline-span { position: absolute; top: 0; bottom: 0; display: block; box-sizing: border-box;
  border-right: 2px solid var(--background-fill-primary, #fff); color: #fff; font-size: 11px;
  line-height: 22px; padding: 0 4px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;
  text-decoration: none; cursor: pointer; }
.timeline-span::before { content: attr(data-title); }
.timeline-span:hover, .timeline-span:focus-visible { filter: brightness(1.15); outline: 2px solid #000;
  outline-offset: -2px; }
.timeline-speech { position: relative; height: 8px; margin: -6px 0 10px; border-radius: 2px;
  background: var(--neutral-100, #f3f4f6); overflow: hidden; }
.timeline-said { position: absolute; top: 0; bottom: 0; display: block; min-width: 2px;
  background: var(--neutral-500, #6b7280); }
.timeline-said:hover, .timeline-said:focus-visible { background: #000; }
.timeline-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
.timeline-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px;
  list-style: none; margin: 0; padding: 0; max-height: 420px; overflow-y: auto; }
.timeline-card { position: relative; border-radius: 6px; border: 1px solid var(--border-color-primary, #ddd);
  border-top-width: 4px; overflow: hidden; background: var(--background-fill-secondary, #fafafa); }
.timeline-card:hover { box-shadow: 0 1px 6px rgba(0, 0, 0, 0.2); }
.timeline-card img, .timeline-card .timeline-blank { display: block; width: 100%; aspect-ratio: 16 / 9;
  object-fit: cover; background: var(--neutral-300, #d1d5db); }
.timeline-card .timeline-text { display: block; padding: 4px 6px 6px; font-size: 12px; line-height: 1.3; }
.timeline-card .timeline-title { display: block; font-size: 13px; color: var(--body-text-color, #111);
  max-height: 2.6em; overflow: hidden; }
.timeline-card a { padding: 0; text-decoration: none; color: var(--link-text-color, #2563eb);
  font-variant-numeric: tabular-nums; }
.timeline-card a::after { content: ""; position: absolute; inset: 0; }
"""


class Thumbnails:
    """Small JPEGs of a video's sampled frames, at most one per ``interval_s`` seconds, by time."""

    def __init__(self, interval_s: float = MIN_THUMBNAIL_INTERVAL_S, max_bytes: int = MAX_THUMBNAIL_BYTES,
                 width: int = THUMBNAIL_WIDTH):  # fmt: skip
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self.width = width
        self.nbytes = 0  # JPEG bytes held
        self._slots: dict[int, tuple[float, bytes]] = {}  # slot floor(t / interval_s) -> (t, JPEG)

    @classmethod
    def for_span(cls, seconds: float) -> Thumbnails:
        """Thumbnails for ``seconds`` of video: at most MAX_THUMBNAILS of them (and MAX_THUMBNAIL_BYTES)."""
        return cls(max(MIN_THUMBNAIL_INTERVAL_S, seconds / MAX_THUMBNAILS))

    def add(self, t: float, image: np.ndarray) -> bool:
        """Keep ``image`` ([H, W, 3] uint8 RGB, shown at ``t`` seconds) if its slot has none yet and the
        byte budget allows; True when kept."""
        slot = math.floor(t / self.interval_s)
        if slot in self._slots or self.nbytes >= self.max_bytes:
            return False
        jpeg = _jpeg(image, self.width)
        self._slots[slot] = (t, jpeg)
        self.nbytes += len(jpeg)
        return True

    def tap(self, frames: Iterable[Frame]) -> _Tap:
        """``frames`` as they are, keeping thumbnails of them while they are iterated."""
        return _Tap(frames, self)

    @property
    def times(self) -> list[float]:
        """Times (s) of the thumbnails held, in order."""
        return [t for t, _ in sorted(self._slots.values())]

    def covers(self, t: float) -> bool:
        """Whether a thumbnail is held in the slot of ``t`` seconds."""
        return math.floor(t / self.interval_s) in self._slots

    def nearest(self, t: float) -> tuple[float, bytes] | None:
        """(time, JPEG) of the thumbnail nearest ``t`` seconds (the later one on a tie); None when empty."""
        items = sorted(self._slots.values())
        if not items:
            return None
        i = bisect_left([time for time, _ in items], t)
        candidates = items[max(0, i - 1) : i + 1]
        return min(candidates, key=lambda item: (abs(item[0] - t), -item[0]))

    def __len__(self) -> int:
        return len(self._slots)


class _Tap:
    """A frame stream that keeps thumbnails of the frames read through it; reports the stream's damage."""

    def __init__(self, frames: Iterable[Frame], thumbnails: Thumbnails):
        self.frames = frames
        self.thumbnails = thumbnails

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.frames:
            self.thumbnails.add(frame.t, frame.image)
            yield frame

    @property
    def damage(self) -> str | None:  # read by VideoSession once the stream is consumed
        return getattr(self.frames, "damage", None)


def _jpeg(image: np.ndarray, width: int) -> bytes:
    from PIL import Image

    picture = Image.fromarray(image)
    if picture.width > width:
        picture = picture.resize(
            (width, max(1, round(picture.height * width / picture.width))), Image.BILINEAR
        )
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def frame_reader(
    path: str | os.PathLike, fps: float, size: tuple[int, int], start: float = 0.0, end: float | None = None
) -> Callable[[float], Frame | None]:
    """A function that decodes, by seeking, the first frame a session samples at or after ``t`` seconds
    (``fps`` and ``size`` as planned, inside the range ``[start, end)``), or None past the range's end or
    when the file gives none. For thumbnails of a session that decoded nothing (its vision features came
    from the feature cache)."""

    def read(t: float) -> Frame | None:
        target = max(math.ceil(start * fps - 1e-9), math.ceil(t * fps - 1e-9)) / fps
        if end is not None and target >= end:
            return None
        try:
            return next(iter(sample(path, fps, size, start=target, end=target + 0.5 / fps)), None)
        except SummarizerError as e:
            log.warning("no thumbnail at %.1f s of %s: %s", t, path, e)
            return None

    return read


# --- rendering ------------------------------------------------------------------------------------------


class Said(Protocol):
    """A stretch of speech (a transcript's segment): seconds on the video's clock, and its words."""

    start: float
    end: float
    text: str


def chapter_timeline(
    markdown: str,
    duration: float,
    thumbnails: Thumbnails | None = None,
    *,
    end: float | None = None,
    speech: Sequence[Said] = (),
    read_frame: Callable[[float], Frame | None] | None = None,
) -> str:
    """The timeline of a summary's chapters (:func:`~.export.parse_chapters`) on a video of ``duration``
    seconds, as HTML. ``end``: where the summarised range ends, when it is not the video's end (the last
    chapter ends there). ``speech``: the transcript's segments, marked under the chapters. ``read_frame``
    (:func:`frame_reader`): decodes the frames a chapter's card needs that were not kept while reading
    (the first of the thumbnail slot of its start and of the next slot, as reading keeps them; at most
    MAX_FRAMES_READ frames); they are kept in ``thumbnails``."""
    chapters, _ = parse_chapters(markdown, duration if end is None else end)
    if thumbnails is not None and read_frame is not None:
        slots = sorted({math.floor(c.start / thumbnails.interval_s) + i for c in chapters for i in (0, 1)})
        missing = [t for t in (slot * thumbnails.interval_s for slot in slots) if not thumbnails.covers(t)]
        for t in missing[:MAX_FRAMES_READ]:
            if not thumbnails.covers(t) and (frame := read_frame(t)) is not None:
                thumbnails.add(frame.t, frame.image)
    return render_timeline(chapters, duration, thumbnails, speech)


def speech_track(speech: Sequence[Said], duration: float) -> str:
    """HTML: a thin bar with a mark where each stretch of speech is (marks closer than
    MERGE_SPEECH_PERCENT of the video drawn as one), each a link to its start; "" without speech."""
    if not speech or not duration > 0:
        return ""
    hours = duration >= SECONDS_PER_HOUR
    merged: list[list] = []  # [start, end, first text, how many]
    for said in sorted(speech, key=lambda s: s.start):
        if merged and (said.start - merged[-1][1]) / duration * 100 < MERGE_SPEECH_PERCENT:
            merged[-1][1] = max(merged[-1][1], said.end)
            merged[-1][3] += 1
        else:
            merged.append([said.start, said.end, said.text, 1])
    marks = []
    for start, stop, text, count in merged:
        left = min(100.0, max(0.0, start / duration * 100))
        width = min(100.0 - left, max(0.0, (stop - start) / duration * 100))
        when = format_timestamp(start, hours)
        words = html.escape(text + (f" (and {count - 1} more)" if count > 1 else ""))
        marks.append(
            f'<a class="timeline-said" href="{SEEK_ANCHOR}{format_seek(start)}" title="{when} {words}" '
            f'aria-label="Speech at {when}: {words}" style="left: {left:.2f}%; width: {width:.2f}%;">'
            f'<span class="timeline-hidden">{when}</span></a>'
        )
    return f'<div class="timeline-speech" role="group" aria-label="Speech">{"".join(marks)}</div>'


def render_timeline(
    chapters: list[Chapter],
    duration: float,
    thumbnails: Thumbnails | None = None,
    speech: Sequence[Said] = (),
) -> str:
    """HTML: a bar with one span per chapter placed at ``start / duration`` (left) and as wide as its
    share of the video, the speech marks (:func:`speech_track`), then one card per chapter; every span,
    mark and card seeks the player to its start. Without chapters, a one-line note (and the speech)."""
    said = speech_track(speech, duration)
    if not chapters or not duration > 0:
        return note_html(NO_CHAPTERS_NOTE) + (f'<nav class="timeline" aria-label="Timeline">{said}</nav>'
                                               if said else "")  # fmt: skip
    hours = max(duration, *(c.end for c in chapters)) >= SECONDS_PER_HOUR
    spans, cards = [], []
    for i, chapter in enumerate(chapters):
        colour = CHAPTER_COLOURS[i % len(CHAPTER_COLOURS)]
        left = min(100.0, max(0.0, chapter.start / duration * 100))
        width = min(100.0 - left, max(MIN_SPAN_PERCENT, (chapter.end - chapter.start) / duration * 100))
        start = format_timestamp(chapter.start, hours)
        when = f"{start}–{format_timestamp(chapter.end, hours)}"
        title = html.escape(chapter.title)
        href = f"{SEEK_ANCHOR}{format_seek(chapter.start)}"
        spans.append(
            f'<a class="timeline-span" href="{href}" data-title="{title}" title="{title} ({when})" '
            f'aria-label="Chapter {i + 1}: {title}, play from {start}" '
            f'style="left: {left:.2f}%; width: {width:.2f}%; background: {colour};">'
            f'<span class="timeline-hidden">{start}</span></a>'
        )
        thumbnail = thumbnails.nearest(chapter.start) if thumbnails is not None else None
        picture = (
            f'<img src="data:image/jpeg;base64,{base64.b64encode(thumbnail[1]).decode()}" alt="" '
            f'data-t="{format_seek(thumbnail[0])}">'
            if thumbnail is not None
            else '<span class="timeline-blank"></span>'
        )
        cards.append(
            f'<li class="timeline-card" style="border-top-color: {colour};">{picture}'
            f'<span class="timeline-text"><span class="timeline-title">{title}</span>'
            f'<a href="{href}" aria-label="Play {title} from {start}">{start}</a>'
            f"–{format_timestamp(chapter.end, hours)}</span></li>"
        )
    return (
        f'<nav class="timeline" aria-label="Chapters">'
        f'<div class="timeline-bar">{"".join(spans)}</div>{said}'
        f'<ol class="timeline-cards">{"".join(cards)}</ol></nav>'
    )


def note_html(text: str) -> str:
    """The timeline's place when there is no timeline: one line saying why."""
    return f'<p class="timeline-note">{html.escape(text)}</p>'
