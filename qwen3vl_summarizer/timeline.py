"""Thumbnails of the frames a session reads, for the page's chapter timeline (drawn by ``web/render.py``).

:meth:`Thumbnails.tap` wraps the frame stream a session iterates and keeps a small JPEG of at most one frame
per ``interval_s`` (the first frame in each slot of that length), so there is no second decode and memory
stays bounded (MAX_THUMBNAILS slots, MAX_THUMBNAIL_BYTES in all). A session whose vision features came from
the feature cache decodes no frame: then :meth:`Thumbnails.fill` has :func:`frame_reader` seek to the few
frames the chapters need (one per chapter at most).
"""

from __future__ import annotations

import io
import logging
import math
import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from .errors import SummarizerError
from .video import Frame, sample

log = logging.getLogger(__name__)

THUMBNAIL_WIDTH = 160  # pixels; never wider than the sampled frame
THUMBNAIL_QUALITY = 70  # JPEG quality: ~4-8 KB at 160x90
MAX_THUMBNAILS = 240  # per video: a long video keeps one frame per (duration / MAX_THUMBNAILS) seconds
MIN_THUMBNAIL_INTERVAL_S = 2.0  # seconds: never more than one thumbnail per this long
MAX_THUMBNAIL_BYTES = 4 * 2**20  # JPEG bytes kept per video at most; later frames are not kept
MAX_FRAMES_READ = 32  # frames decoded for missing thumbnails per fill, at most


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

    def fill(self, starts: Iterable[float], read_frame: Callable[[float], Frame | None]) -> None:
        """Decode (``read_frame``, :func:`frame_reader`) the frames that thumbnails of ``starts`` (seconds,
        e.g. chapter starts) need and that reading did not keep: the first of the slot of each start and of
        the next slot, as reading keeps them; at most MAX_FRAMES_READ frames."""
        slots = sorted({math.floor(t / self.interval_s) + i for t in starts for i in (0, 1)})
        missing = [t for t in (slot * self.interval_s for slot in slots) if not self.covers(t)]
        for t in missing[:MAX_FRAMES_READ]:
            if not self.covers(t) and (frame := read_frame(t)) is not None:
                self.add(frame.t, frame.image)

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
        # reducing_gap=1: box-average by the whole factor first, then resample the rest (448 to 160 pixels:
        # halve, then 224 to 160). Half the CPU time of resampling all at once (0.35 against 0.65 ms a frame,
        # in the first turn's critical path), 0.8 of 255 apart on average.
        size = (width, max(1, round(picture.height * width / picture.width)))
        picture = picture.resize(size, Image.BILINEAR, reducing_gap=1.0)
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
