"""Read a video file and sample upright RGB frames at a fixed rate.

``probe(path)`` describes the file; ``sample(path, fps, size)`` streams one :class:`Frame` per target time
``k / fps`` (see :func:`target_times`): the frame on screen at that moment, with its own time as a media
player shows it. Decoding uses PyAV; frames are produced one at a time, so memory stays flat however long
the video is.

Strategies (``sample(..., strategy=)``), all exact (same frames, same times):

- ``"decode"``: decode every frame in order.
- ``"nonref"``: decode in order but let the decoder skip non-reference frames that are not on screen at
  any target. Which frames are on screen is known from the demuxed packets' timestamps before decoding,
  so skipping never changes the answer.
- ``"seek"``: seek to the keyframe before every target (re-decoding from it each time).
- ``"auto"`` (default): the hybrid. Decode in order with non-reference skipping, and seek ahead whenever
  the container's index shows a keyframe between the current position and the next target (keyframes
  dense relative to the target spacing); with sparse keyframes it simply decodes on. When the index lists
  keyframes and more than one core is free, the targets are cut at keyframes into chunks of about
  ``CHUNK_S`` seconds that worker threads decode at once, each with its own demuxer and decoder; frames
  still come out in order. Decoding each chunk from its keyframe gives the same pixels as decoding
  through, so this is exact too. It beats FFmpeg's own frame threading here because the frames left
  after skipping form one chain of references, which frame threads cannot spread over cores.

Skipping the H.264/HEVC deblocking filter (FFmpeg ``skip_loop_filter``) was measured and left out: about
10-15% faster, but its pixel error grows along each GOP without bound (see ``bench/RESULTS_sampler.md``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import queue
import threading
from bisect import bisect_right, insort
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import (
    DamagedVideoError,
    NotAVideoError,
    NoVideoStreamError,
    OptionsError,
    UnsupportedCodecError,
    VideoNotFoundError,
    first_line,
)
from .options import MAX_FPS

__all__ = ["MAX_FPS", "Frame", "FrameStream", "VideoInfo", "probe", "sample", "target_times"]

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "decode", "nonref", "seek")
TIME_EPS = 1e-6  # seconds; two times closer than this are equal (far below any frame interval)
TARGET_EPS = 1e-9  # slack on k = t * fps so 10.0 s at 1 fps stops at k = 9, not 10
LOOKAHEAD_PACKETS = 24  # demuxed ahead of the decoder to know every packet's successor time (> max reorder)
BLIND_SEEK_GAP_S = 20.0  # without a keyframe index, seek when the next target is this far ahead, seconds
DAMAGE_SLACK_S = 1.0  # the last frame may end this much before the stream's stated end, seconds
MAX_SEEK_RETRIES = 8  # times a seek that landed after its target backs off further
CHUNK_S = 10.0  # auto: video seconds per chunk decoded by one worker (cut at the next keyframe)
CUT_MARGIN_S = 0.5  # a chunk starts at the first target this far after its keyframe (> any reorder delay)
MAX_WORKERS = 4  # auto: decoding threads at most (each holds a decoder's reference frames)
BUFFER_BYTES = 32 << 20  # auto: decoded frames a worker may hold for the reader, bytes (a chunk at 1 fps)
# auto: decoded frames held ahead of the reader in all, bytes: enough for a few of the engine's vision batches
# (64 s of video each), so the decoders keep a core busy while the reader encodes; at least 2 chunks a worker
READ_AHEAD_BYTES = 64 << 20


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # decoder name, e.g. "h264"
    width: int  # display width, pixels, after rotation (portrait phone video: width < height)
    height: int  # display height, pixels, after rotation
    rotation: int  # clockwise degrees applied to make it upright: 0, 90, 180 or 270
    fps: float  # average frame rate of the video stream, frames/s
    duration: float  # seconds, as a player shows it
    start_time: float  # container start time, seconds (subtracted from every frame time)
    frame_count: int | None  # frames in the video stream, when the container says so
    has_audio: bool


@dataclass(frozen=True)
class Frame:
    t: float  # this frame's own time, seconds, as a player shows it (pts * time_base - container start)
    target: float  # the sampling target k / fps it answers, seconds
    image: np.ndarray  # [H, W, 3] uint8 RGB, upright, at the requested size


def target_times(duration: float, fps: float, start: float = 0.0, end: float | None = None) -> list[float]:
    """The sampling targets ``k / fps`` (seconds) inside ``[start, min(end, duration))``.

    A 10.5 s video at 1 fps gives 0..10 (11 targets); a 10.0 s video gives 0..9. Pure; :func:`sample`
    yields exactly one frame per target for a healthy file.
    """
    return [k / fps for k in _target_range(duration, fps, start, end)]


def _target_range(duration: float, fps: float, start: float, end: float | None) -> range:
    stop = duration if end is None else min(end, duration)
    if not (fps > 0 and math.isfinite(stop)) or stop <= start:
        return range(0)
    k_first = max(0, math.ceil(start * fps - TARGET_EPS))
    k_stop = math.ceil(stop * fps - TARGET_EPS)
    return range(k_first, max(k_first, k_stop))


# The containers whose files are offered as videos (upload field, folders on the CLI), by their demuxer names,
# and extensions those demuxers list that hold sound or still pictures instead.
VIDEO_CONTAINERS = ("mov", "matroska", "avi", "mpegts", "mpeg", "flv", "asf", "ogg", "mxf", "nut", "dv",
                    "yuv4mpegpipe", "rm", "gxf", "ivf", "h264", "hevc", "wtv", "m4v")  # fmt: skip
NOT_VIDEO = {"m4a", "m4b", "mka", "mks", "wma", "ra", "avif", "heic", "heif", "isma"}
MORE_VIDEO = {"ogv", "vob", "rmvb", "divx"}  # common names of the same containers


@functools.cache
def video_extensions() -> tuple[str, ...]:
    """``(".3g2", ".3gp", ...)``: the file extensions of the video containers PyAV reads here."""
    found = set(MORE_VIDEO)
    for name in VIDEO_CONTAINERS:
        with contextlib.suppress(ValueError, av.FFmpegError):
            found |= set(av.format.ContainerFormat(name).extensions)
    return tuple(sorted(f".{ext}" for ext in found - NOT_VIDEO))


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a video file; raises a :class:`~qwen3vl_summarizer.errors.VideoError` subclass if unreadable."""
    path = _check_path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream, path)
        return _describe(path, container, stream, first)


def sample(
    path: str | os.PathLike | VideoInfo,
    fps: float = 1.0,
    size: tuple[int, int] | None = None,
    *,
    start: float = 0.0,
    end: float | None = None,
    strategy: str = "auto",
    workers: int | None = None,
) -> FrameStream:
    """Frames on screen at ``k / fps`` for every target in ``[start, end)``, as a lazy stream.

    ``size`` is ``(width, height)`` of the output frames in upright orientation; ``None`` keeps the display
    size. ``workers`` caps the decoding threads of ``"auto"`` (``None``: one per free core, at most
    ``MAX_WORKERS``; 1: a single pass). The file and the options are checked now; frames are decoded
    while iterating. ``path`` may be the file's :class:`VideoInfo` already (it is not probed again).
    """
    _verify_options(fps, size, start, end, strategy, workers)
    info = path if isinstance(path, VideoInfo) else probe(path)
    return FrameStream(info, float(fps), size, float(start), end, strategy, workers)


class FrameStream:
    """An iterable of :class:`Frame`; each iteration decodes the file again."""

    def __init__(
        self,
        info: VideoInfo,
        fps: float,
        size: tuple[int, int] | None,
        start: float,
        end: float | None,
        strategy: str,
        workers: int | None = None,
    ) -> None:
        self.info = info
        self.fps = fps
        self.size = (info.width, info.height) if size is None else (int(size[0]), int(size[1]))
        self.start = start
        self.end = end
        self.strategy = strategy
        self.workers = workers
        self.damage: str | None = None  # one line when the file stopped decoding early, else None

    def __iter__(self) -> Iterator[Frame]:
        self.damage = None
        return _frames(self)


# --- validation ------------------------------------------------------------------------------------------


def _verify_options(
    fps: float,
    size: tuple[int, int] | None,
    start: float,
    end: float | None,
    strategy: str,
    workers: int | None = None,
) -> None:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= MAX_FPS:
        raise OptionsError(f"fps must be a number in (0, {MAX_FPS:g}], got {fps!r}; try 1 or 2")
    if size is not None and (
        len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size)
    ):
        raise OptionsError(f"size must be (width, height) in whole pixels >= 1, got {size!r}")
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise OptionsError(f"start must be a time >= 0 in seconds, got {start!r}")
    if end is not None and not (isinstance(end, (int, float)) and end > start):
        raise OptionsError(f"end must be a time in seconds after start ({start!r}), got {end!r}")
    if strategy not in STRATEGIES:
        raise OptionsError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise OptionsError(f"workers must be a whole number >= 1 or None (automatic), got {workers!r}")


def _check_path(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise VideoNotFoundError(f"video not found: {p}; check the path")
    if p.is_dir():
        raise VideoNotFoundError(f"{p} is a folder, not a video file; pass the path of a video file")
    if p.stat().st_size == 0:
        raise NotAVideoError(f"{p} is empty (0 bytes); re-copy or re-download the video")
    return str(p)


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r")
    except av.FFmpegError as e:
        with open(path, "rb") as f:
            head = f.read(12)
        if head[4:8] == b"ftyp":
            raise DamagedVideoError(
                f"{path} looks like an MP4/MOV but its index (moov atom) is missing, so it is truncated "
                "(an interrupted recording, copy or download); re-download it or repair it"
            ) from e
        raise NotAVideoError(
            f"{path} is not a video FFmpeg can read ({first_line(e)}); check the file or convert it to MP4"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise NotAVideoError(f"{path} could not be opened as a video ({e}); check the file") from e


def _video_stream(
    container: av.container.InputContainer, path: str, threads: int = 0
) -> av.video.stream.VideoStream:
    streams = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        container.close()
        raise NoVideoStreamError(
            f"{path} has no video stream (it holds {kinds}); pass a file with pictures, not audio only"
        )
    stream = streams[0]
    if stream.codec_context is None:
        container.close()
        raise UnsupportedCodecError(
            f"{path} uses a video codec this FFmpeg build cannot decode; "
            "convert it to H.264, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
        )
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads  # 0: FFmpeg picks one per core
    return stream


def _first_frame(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str
) -> av.VideoFrame:
    try:
        for packet in container.demux(stream):
            for frame in _decode(stream, packet):
                return frame
    except av.FFmpegError as e:
        raise DamagedVideoError(
            f"{path} is damaged: no frame could be decoded ({first_line(e)}); re-download or re-encode it"
        ) from e
    raise DamagedVideoError(
        f"{path} is damaged or truncated: no frame could be decoded; re-download or re-encode it"
    )


def _decode(stream: av.video.stream.VideoStream, packet: av.Packet) -> list[av.VideoFrame]:
    try:
        return stream.decode(packet)
    except av.error.InvalidDataError:
        if packet.size == 0:  # flushing: the decoder's own error at end of a broken stream
            raise
        logger.debug("skipping an undecodable packet at pts %s", packet.pts)
        return []


# --- description -----------------------------------------------------------------------------------------


def _rotation(frame: av.VideoFrame) -> int:
    """Clockwise degrees that make the frame upright (display matrix), snapped to 0/90/180/270."""
    ccw = frame.rotation  # counter-clockwise, [-180, 180]
    return int(round(-ccw / 90.0)) % 4 * 90


def _describe(
    path: str,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    first: av.VideoFrame,
) -> VideoInfo:
    rotation = _rotation(first)
    width, height = first.width, first.height
    sar = stream.sample_aspect_ratio
    if sar and sar != 1:
        width = max(1, round(width * sar))
    if rotation in (90, 270):
        width, height = height, width
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    start_time = (container.start_time or 0) / av.time_base
    duration = _duration(container, stream, start_time, fps)
    return VideoInfo(
        path=path,
        container=container.format.name,
        codec=stream.codec_context.name,
        width=int(width),
        height=int(height),
        rotation=rotation,
        fps=fps,
        duration=duration,
        start_time=start_time,
        frame_count=stream.frames or None,
        has_audio=bool(container.streams.audio),
    )


def _duration(container: av.container.InputContainer, stream, start_time: float, fps: float) -> float:
    """Seconds from the container start to the end of the last audio or video stream.

    Stream ends are exact where the container states them (MP4, MOV, TS, AVI). Matroska/WebM only state the
    segment's end, counted from zero, so its start time is taken off; other containers' durations already
    exclude it.
    """
    ends = [_stream_end(s, start_time) for s in (*container.streams.video, *container.streams.audio)]
    ends = [end for end in ends if end is not None and end > 0]
    if ends:
        return max(ends)
    if container.duration is not None and container.duration > 0:
        seconds = container.duration / av.time_base
        if "matroska" in container.format.name:
            seconds -= start_time
        return max(seconds, 0.0)
    if stream.frames and fps:
        return stream.frames / fps
    return 0.0


def _stream_end(stream, start_time: float) -> float | None:
    """Where the video stream says it ends, seconds on the player's clock, or None if it does not say."""
    if stream.duration is None or stream.time_base is None:
        return None
    first = stream.start_time or 0
    return float((first + stream.duration) * stream.time_base) - start_time


# --- sampling --------------------------------------------------------------------------------------------


def _frames(out: FrameStream) -> Iterator[Frame]:
    """One pass over the targets of ``out``: in one thread, or in chunks over several (``auto``)."""
    ks = _target_range(out.info.duration, out.fps, out.start, out.end)
    if not ks:
        return
    container = _open(out.info.path)
    try:
        stream = _video_stream(container, out.info.path)
        _load_index(container, stream)
        wanted = out.workers or min(MAX_WORKERS, _free_cores())
        t0 = float(Fraction(container.start_time or 0, av.time_base))
        chunks = _chunks(ks, out, stream, t0) if wanted > 1 else [ks]
        workers = min(wanted, len(chunks))
        if workers > 1:
            container.close()  # each worker opens its own
            yield from _parallel(out, chunks, workers)
            return
        sampler = _Sampler(out, ks)
        yield from sampler.answer(container, stream)
    finally:
        container.close()
    if sampler.stopped is not None:
        _stopped_early(out, sampler.reached, sampler.stopped, ks.start / out.fps)


def _stopped_early(out: FrameStream, reached: float | None, reason: str, target: float) -> None:
    """Decoding stopped before the last target: note the damage, or raise if no frame came out at all."""
    path = out.info.path
    if reached is None:
        raise DamagedVideoError(
            f"{path} is damaged: no frame could be decoded after {target:.2f} s ({reason}); "
            "re-download or re-encode it"
        )
    out.damage = (
        f"{path} is damaged: frames stop at {reached:.2f} s of {out.info.duration:.2f} s "
        f"({reason}); re-download or re-encode it to read the rest"
    )
    logger.warning("%s", out.damage)


def _free_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load_index(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> None:
    """Matroska/WebM read their keyframe index (Cues) at the first seek: seek to the start to read it now."""
    if len(stream.index_entries) < 2 and "matroska" in container.format.name:
        try:
            container.seek(0, stream=stream)
        except av.FFmpegError as e:
            logger.debug("no keyframe index: %s", e)


def _chunks(ks: range, out: FrameStream, stream: av.video.stream.VideoStream, t0: float) -> list[range]:
    """``ks`` cut into runs of about ``CHUNK_S`` seconds that each start just after an indexed keyframe.

    The index gives decode times, and a keyframe may be shown a few frames later (B-frames), after
    the leading pictures of an open GOP. A target in that gap would make the chunk's seek land after it
    and back off to the keyframe before, decoding a whole GOP twice. So a chunk starts at the first
    target ``CUT_MARGIN_S`` after its keyframe; the chunk before decodes through the gap instead.
    Without an index (or with another strategy) the whole range is one chunk.
    """
    entries = stream.index_entries
    if out.strategy != "auto" or len(ks) < 2 or len(entries) == 0:
        return [ks]
    tb = stream.time_base
    chunks, first, since = [], ks.start, ks.start / out.fps
    while True:
        i = entries.search_timestamp(math.ceil((since + CHUNK_S + t0) / tb), backward=False)
        if i < 0:
            break
        keyframe = float(entries[i].timestamp * tb) - t0
        cut = math.ceil((keyframe + CUT_MARGIN_S) * out.fps - TARGET_EPS)
        if cut >= ks.stop:
            break
        if cut > first:
            chunks.append(range(first, cut))
            first = cut
        since = max(keyframe, since + CHUNK_S)
    chunks.append(range(first, ks.stop))
    return chunks


@dataclass
class _ChunkEnd:
    """A worker's last word on a chunk: why it stopped early and its last frame's time, or an exception."""

    stopped: str | None = None
    reached: float | None = None
    error: BaseException | None = None


def _parallel(out: FrameStream, chunks: list[range], workers: int) -> Iterator[Frame]:
    """Chunks decoded by ``workers`` threads, yielded in order; each holds ``BUFFER_BYTES`` of frames at most.

    A worker whose chunk is ahead of the reader keeps decoding until its buffer is full, so with a fast
    reader no worker waits for another as long as a chunk's frames fit in the buffer. With a slow reader
    (vision and prefill on a CPU) no more chunks are begun and not yet read than hold ``READ_AHEAD_BYTES``
    of frames (at least ``2 * workers``): the frames held ahead stay bounded whatever the video's length
    (without a bound they piled up, 0.93 GB of frames at 45 minutes), and the decoders still run on while
    the reader encodes a batch (with 40 s ahead they sat idle through most of each 64-second vision batch).
    """
    stop = threading.Event()
    width, height = out.size
    frame_bytes = width * height * 3
    held = max(2, BUFFER_BYTES // frame_bytes)
    queues = [queue.Queue(maxsize=held) for _ in chunks]
    todo = iter(range(len(chunks)))
    lock = threading.Lock()
    chunk_bytes = min(held, max(len(c) for c in chunks)) * frame_bytes  # what a begun chunk holds at most
    ahead = threading.Semaphore(max(2 * workers, READ_AHEAD_BYTES // chunk_bytes))  # begun, not yet read
    threads = max(1, _free_cores() // workers)  # decoder threads per worker

    def put(q: queue.Queue, item: Frame | _ChunkEnd) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        container = None
        try:
            while not stop.is_set():
                if not ahead.acquire(timeout=0.1):
                    continue
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    if container is None:
                        container = _open(out.info.path)
                        stream = _video_stream(container, out.info.path, threads)
                    sampler = _Sampler(out, chunks[i], stop)
                    for frame in sampler.answer(container, stream):
                        if not put(queues[i], frame):
                            return
                    put(queues[i], _ChunkEnd(sampler.stopped, sampler.reached))
                except Exception as e:  # handed to the reader, in order
                    put(queues[i], _ChunkEnd(error=e))
                    return
        finally:
            if container is not None:
                container.close()

    pool = [threading.Thread(target=work, name=f"video-sampler-{n}", daemon=True) for n in range(workers)]
    for thread in pool:
        thread.start()
    reached: float | None = None
    try:
        for i, chunk in enumerate(chunks):
            while not isinstance(item := queues[i].get(), _ChunkEnd):
                reached = item.t
                yield item
            ahead.release()
            if isinstance(item.error, DamagedVideoError) and reached is not None:
                _stopped_early(out, reached, first_line(item.error), chunk.start / out.fps)
                return
            if item.error is not None:
                raise item.error
            if item.stopped is not None:
                last = item.reached if item.reached is not None else reached
                _stopped_early(out, last, item.stopped, chunk.start / out.fps)
                return
    finally:
        stop.set()
        for thread in pool:
            thread.join()


class _Sampler:
    """Answers the targets ``ks`` in order from one demuxer and decoder, seeking where it pays."""

    def __init__(self, frames: FrameStream, ks: range, stop: threading.Event | None = None) -> None:
        self.out = frames
        self.info = frames.info
        self.fps = frames.fps
        self.ks = ks
        self.stop = stop  # set by the reader of a parallel pass to end it early
        self.skip_nonref = frames.strategy in ("auto", "nonref")
        self.seek_each = frames.strategy == "seek"
        self.use_index = frames.strategy == "auto"
        self.error: str | None = None  # why decoding stopped early
        self.last: tuple[av.VideoFrame, np.ndarray] | None = None  # the last converted frame and its image
        self.stopped: str | None = None  # after answer(): why frames stopped before the last target
        self.reached: float | None = None  # the time of the last frame answered

    # frames ----------------------------------------------------------------------------------------------

    def answer(self, container: av.container.InputContainer, stream) -> Iterator[Frame]:
        self.container = container
        self.stream = stream
        self.tb = stream.time_base
        self.t0 = Fraction(container.start_time or 0, av.time_base)
        for frame in self._answer():
            self.reached = frame.t
            yield frame

    def _answer(self) -> Iterator[Frame]:
        ks = iter(self.ks)
        k = next(ks)
        target = k / self.fps
        decoded = self._decoded(seek_to=target if target > 0 else None, k=k)
        prev: tuple[av.VideoFrame, float] | None = None
        while True:
            item = next(decoded, None)
            if item is None:
                break
            frame, t = item
            restart = False
            while t > target + TIME_EPS:
                chosen, chosen_t = prev if prev is not None else (frame, t)
                yield Frame(t=chosen_t, target=target, image=self._image(chosen))
                k = next(ks, None)
                if k is None:
                    decoded.close()
                    return
                target = k / self.fps
                if t <= target + TIME_EPS and self._should_seek(t, target):
                    decoded.close()
                    decoded = self._decoded(seek_to=target, k=k)
                    prev, restart = None, True
                    break
            if not restart:
                prev = (frame, t)
        if self.stop is not None and self.stop.is_set():
            return
        # end of the stream: the last frame stays on screen until the end, unless the file is damaged
        if prev is None:  # nothing decoded since the start or the last seek
            self.stopped = self.error or "the data ends early"
            return
        frame, t = prev
        reached = t + (1.0 / self.info.fps if self.info.fps else 0.0)
        damaged = self.error is not None or self._ends_early(t)
        while k is not None:
            if damaged and target >= reached - TIME_EPS:
                break
            yield Frame(t=t, target=target, image=self._image(frame))
            k = next(ks, None)
            target = k / self.fps if k is not None else target
        if damaged:
            self.reached = t
            self.stopped = self.error or "the data ends early"

    def _ends_early(self, last_t: float) -> bool:
        end = _stream_end(self.stream, float(self.t0))
        if end is None and len(self.container.streams) == 1:
            end = self.info.duration
        if end is None:
            return False
        interval = 1.0 / self.info.fps if self.info.fps else 0.0
        return last_t + interval < end - max(DAMAGE_SLACK_S, 2 * interval)

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        """Scale + RGB in one swscale pass, then rotate upright; a repeated frame is copied, not redone."""
        if self.last is not None and self.last[0] is frame:
            return self.last[1].copy()
        width, height = self.out.size
        rotation = self.info.rotation
        if rotation in (90, 270):
            width, height = height, width
        image = frame.to_ndarray(width=width, height=height, format="rgb24")  # [h, w, 3] coded orientation
        if rotation:
            image = np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))
        self.last = (frame, image)
        return image

    # seeking ---------------------------------------------------------------------------------------------

    def _should_seek(self, pos: float, target: float) -> bool:
        """Whether jumping to the keyframe before ``target`` saves decoding, given frames decoded to ``pos``."""
        if self.seek_each:
            return True
        if not self.use_index:
            return False
        keyframe = self._indexed_keyframe(target)
        if keyframe is not None:
            return keyframe > pos + TIME_EPS
        return target - pos > BLIND_SEEK_GAP_S

    def _indexed_keyframe(self, target: float) -> float | None:
        """Time of the last indexed keyframe at or before ``target``, or None when the index has none after."""
        entries = self.stream.index_entries
        if len(entries) == 0:
            return None
        ts = self._to_pts(target)
        try:
            i = entries.search_timestamp(ts, backward=True)
        except (av.FFmpegError, ValueError, IndexError):
            return None
        if i < 0:
            return None
        return float(entries[i].timestamp * self.tb - self.t0)

    def _to_pts(self, t: float) -> int:
        return int(math.floor((Fraction(t) + self.t0) / self.tb))

    def _seek(self, t: float) -> None:
        self.container.seek(self._to_pts(max(t, 0.0)), stream=self.stream)

    # decoding --------------------------------------------------------------------------------------------

    def _time(self, frame: av.VideoFrame, fallback: float) -> float:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            return fallback
        return float(pts * self.tb - self.t0)

    def _decoded(self, seek_to: float | None, k: int) -> Iterator[tuple[av.VideoFrame, float]]:
        """Frames in presentation order with their times; starts at the keyframe before ``seek_to``."""
        if seek_to is None:
            yield from self._decode_from(None)
            return
        back = 0.0
        for _ in range(MAX_SEEK_RETRIES):
            at = seek_to - back
            gen = self._decode_from(max(at, 0.0))
            first = next(gen, None)
            if first is None or first[1] <= seek_to + TIME_EPS or at <= 0:
                if first is not None:
                    yield first
                    yield from gen
                return
            gen.close()  # the seek landed after the target: back off to an earlier keyframe
            back = max(1.0, 2 * back)
        yield from self._decode_from(0.0)

    def _decode_from(self, seek_to: float | None) -> Iterator[tuple[av.VideoFrame, float]]:
        stream = self.stream
        if seek_to is not None:
            try:
                self._seek(seek_to)
            except av.FFmpegError as e:
                logger.debug("seek to %.3f s failed (%s); decoding from the start", seek_to, e)
                self.container.seek(0)
        stream.codec_context.skip_frame = "DEFAULT"
        t = seek_to or 0.0
        packets = self._packets()
        try:
            for packet, needed in packets:
                if self.stop is not None and self.stop.is_set():
                    return
                if self.skip_nonref:
                    stream.codec_context.skip_frame = "DEFAULT" if needed else "NONREF"
                for frame in _decode(stream, packet):
                    t = self._time(frame, t + 1.0 / (self.info.fps or MAX_FPS))
                    yield frame, t
            stream.codec_context.skip_frame = "DEFAULT"
            for frame in stream.decode(None):
                t = self._time(frame, t + 1.0 / (self.info.fps or MAX_FPS))
                yield frame, t
        except av.FFmpegError as e:
            self.error = first_line(e)
            logger.debug("decoding stopped: %s", e)
        finally:
            packets.close()

    def _packets(self) -> Iterator[tuple[av.Packet, bool]]:
        """Demuxed packets in decode order, each with whether its frame is on screen at some target.

        A frame with time p is on screen at a target iff a target lies in [p, q), q the next larger
        presentation time. q is known for sure once a packet with dts >= q has been demuxed (later
        packets have pts >= dts). Undecided packets count as needed, which is always safe.
        """
        window: deque[av.Packet] = deque()
        seen: list[int] = []  # sorted pts of the recent packets
        recent: deque[int] = deque()
        max_dts: int | None = None
        first_pts: int | None = None  # the earliest frame answers the targets before it too
        horizon = 4 * LOOKAHEAD_PACKETS

        def needed(packet: av.Packet) -> bool:
            p = packet.pts
            if p is None or max_dts is None or p == first_pts:
                return True
            i = bisect_right(seen, p)
            if i == len(seen) or seen[i] > max_dts:
                return True  # successor not known for sure
            k_here = math.ceil((float(p * self.tb - self.t0)) * self.fps - TARGET_EPS)
            k_next = math.ceil((float(seen[i] * self.tb - self.t0)) * self.fps - TARGET_EPS)
            if k_here >= self.ks.stop or k_next <= self.ks.start:
                return False
            return k_here < k_next

        for packet in self._demux():
            if packet.pts is not None:
                if first_pts is None or packet.pts < first_pts:
                    first_pts = packet.pts
                insort(seen, packet.pts)
                recent.append(packet.pts)
                if len(recent) > horizon:
                    seen.pop(bisect_right(seen, recent.popleft()) - 1)
            if packet.dts is not None and (max_dts is None or packet.dts > max_dts):
                max_dts = packet.dts
            if packet.size == 0:  # the demuxer's end-of-stream marker: flushed by the caller
                continue
            window.append(packet)
            if len(window) > LOOKAHEAD_PACKETS:
                oldest = window.popleft()
                yield oldest, (needed(oldest) if self.skip_nonref else True)
        while window:
            oldest = window.popleft()
            yield oldest, (needed(oldest) if self.skip_nonref else True)

    def _demux(self) -> Iterator[av.Packet]:
        """The video stream's packets; a demuxing error ends them and is kept as the damage reason."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self.error = first_line(e)
                logger.debug("demuxing stopped: %s", e)
                return
            yield packet
