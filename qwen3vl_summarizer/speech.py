"""What is said in a video, with times: subtitles when the file has them, speech recognition otherwise.

One :class:`Transcript` whatever the source, best first (:func:`get_transcript`):

1. a sidecar subtitle file next to the video (``talk.srt``, ``talk.vtt``, ``talk.en.srt``),
2. a text subtitle stream inside the container (mov_text, SubRip, ASS, WebVTT),
3. faster-whisper on the audio track (:func:`transcribe`).

Clock: every time is in seconds on the clock of :class:`~qwen3vl_summarizer.video.Frame`, i.e. presentation
time minus the container's start time, as a player shows it. An audio stream may start later than the
pictures (muxed offset, AAC priming) or earlier (MPEG-TS), so the audio is decoded here with PyAV, resampled
to 16 kHz mono in the same pass, and the recogniser's times are shifted by where the audio starts. Segments
are placed by their first and last words: faster-whisper's segment starts drift into the silence before
speech, its word times do not.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from .errors import (
    DamagedAudioError,
    NoAudioStreamError,
    OptionsError,
    SpeechModelError,
    SubtitleError,
    first_line,
)
from .options import SPEECH_DEVICES, SPEECH_MODES
from .timestamps import format_timestamp
from .video import _check_path, _open

__all__ = [
    "SAMPLE_RATE",
    "Audio",
    "SpeechSegment",
    "Transcript",
    "embedded_subtitles",
    "find_sidecar",
    "find_subtitles",
    "get_transcript",
    "load_audio",
    "prompt_lines",
    "read_subtitles",
    "recognise",
    "release_model",
    "transcribe",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz, mono: what Whisper models listen to
GAP_FILL_S = 0.05  # a jump in the audio's timestamps longer than this is filled with silence, seconds
TRUNCATION_SLACK_S = 1.0  # the audio may stop this much before the stream's stated end, seconds
SPLIT_PAUSE_S = 1.0  # a recognised segment is cut where its words pause this long, seconds
MIN_CUE_S = 0.5  # a cue with no stated length (or end <= start) is shown this long, seconds
MODES = SPEECH_MODES  # one home: options.py, where the settings are checked
DEVICES = SPEECH_DEVICES
DEFAULT_MODELS = {"cuda": "large-v3-turbo", "cpu": "base"}  # model="auto", by device
COMPUTE_TYPES = {"cuda": "float16", "cpu": "int8"}
# CTranslate2 threads on the CPU unless told: half the cores, at most its own default of 4. Its 4 on the
# 2-core machine took 26-28 s for 10 minutes of narration with tiny.en, 2 threads the same, 1 thread 15 s
# (bench/RESULTS_speech.md, "CPU threads on their own").
CPU_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
SUBTITLE_SUFFIXES = (".srt", ".vtt")
TEXT_SUBTITLE_CODECS = ("subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text")


# --- data ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechSegment:
    start: float  # seconds on the video clock (same as Frame.t)
    end: float  # seconds on the video clock, >= start
    text: str  # one line, markup removed


@dataclass(frozen=True)
class Transcript:
    segments: tuple[SpeechSegment, ...]  # in time order
    source: str  # "sidecar:<file name>", "embedded:<codec>" or "asr:<model>"
    language: str | None = None  # as the source states it ("en", "eng"), None when unknown
    damage: str | None = None  # one line when the audio or subtitle stream was damaged, else None
    span: tuple[float, float] | None = None  # the seconds recognised when not the whole file (a time range)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"segments": [{"start", "end", "text"}], "language", "source", "damage"}``, and
        ``"span": [start, end]`` when only that part was recognised."""
        data = {
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in self.segments
            ],
            "language": self.language,
            "source": self.source,
            "damage": self.damage,
        }
        if self.span is not None:
            data["span"] = [round(t, 3) for t in self.span]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """The inverse of :meth:`to_dict` (the transcript cache)."""
        segments = tuple(
            SpeechSegment(float(s["start"]), float(s["end"]), str(s["text"])) for s in data["segments"]
        )
        span = data.get("span")
        span = (float(span[0]), float(span[1])) if span else None
        return cls(segments, data["source"], data.get("language"), data.get("damage"), span)

    def between(self, start: float, end: float) -> list[SpeechSegment]:
        """The segments that overlap ``[start, end)`` seconds (a part of a long video)."""
        return [s for s in self.segments if s.end > start and s.start < end]


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # [N] float32 mono at SAMPLE_RATE, nominally in [-1, 1]
    start: float  # seconds on the video clock of samples[0]
    damage: str | None = None  # one line when part of the stream could not be decoded, else None

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


# --- sources, best first ---------------------------------------------------------------------------------


def get_transcript(
    video_path: str | os.PathLike,
    mode: str = "auto",
    subtitle_file: str | os.PathLike | None = None,
    model: str = "auto",
    language: str | None = None,
    device: str = "auto",
    on_progress: Callable[[float, float], None] | None = None,
    span: tuple[float, float | None] | None = None,
) -> Transcript | None:
    """The best transcript of a video, or None when it has none (``span``: recognise only those seconds).

    ``mode``: ``"auto"`` tries a sidecar file, then an embedded subtitle stream, then speech recognition;
    ``"subtitles"`` stops before recognition; ``"asr"`` only recognises; ``"off"`` returns None.
    ``subtitle_file`` reads that file and nothing else (its errors are raised). In ``"auto"`` mode nothing
    that goes wrong stops a summary: a broken subtitle source is skipped, a missing speech model logs one
    warning and gives None. A file without audio gives None in every mode.
    """
    if mode not in MODES:
        raise OptionsError(f"speech mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    if subtitle_file is not None:
        return read_subtitles(subtitle_file)
    if mode in ("auto", "subtitles"):
        found = find_subtitles(video_path)
        if found is not None or mode == "subtitles":
            return found
    return recognise(video_path, mode, model, language, device, on_progress, span=span)


def recognise(
    video_path: str | os.PathLike,
    mode: str = "asr",
    model: str = "auto",
    language: str | None = None,
    device: str = "auto",
    on_progress: Callable[[float, float], None] | None = None,
    cpu_threads: int = 0,
    span: tuple[float, float | None] | None = None,
) -> Transcript | None:
    """:func:`transcribe` under :func:`get_transcript`'s rules for ``mode``: a file without audio gives None;
    a missing speech model or undecodable audio is raised in ``"asr"`` mode, logged (one warning) and None
    otherwise. What ``on_progress`` raises (a cancel) is raised."""
    try:
        return transcribe(
            video_path, model, language, device, on_progress, cpu_threads=cpu_threads, span=span
        )
    except NoAudioStreamError as e:
        logger.info("no transcript: %s", e)
        return None
    except (SpeechModelError, DamagedAudioError) as e:
        if mode == "asr":
            raise
        logger.warning("no transcript: %s", e)
        return None


def find_subtitles(video_path: str | os.PathLike) -> Transcript | None:
    """A sidecar file's or an embedded stream's transcript; a broken one is logged and skipped."""
    sidecar = find_sidecar(video_path)
    if sidecar is not None:
        try:
            return read_subtitles(sidecar)
        except SubtitleError as e:
            logger.warning("skipping the subtitle file: %s", e)
    try:
        return embedded_subtitles(video_path)
    except SubtitleError as e:
        logger.warning("skipping the embedded subtitles: %s", e)
        return None


# --- subtitle files --------------------------------------------------------------------------------------

_LANGUAGE_TAG_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")  # en, eng, en-US, pt_BR, zh-Hans
_ISO_639_1_RE = re.compile(r"^([A-Za-z]{2})(?:[-_][A-Za-z0-9]{2,8})*$")  # a file name tag taken as language
_LOOKS_TIMED_RE = re.compile(r"^\s*(?:\d+:\d|.*-->)")  # a line meant as a cue timing, well formed or not
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"  # [HH:]MM:SS,mmm (SRT) or [HH:]MM:SS.mmm (WebVTT)
_TIMING_RE = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?$")
_TAG_RE = re.compile(r"<[^>\n]*>")  # <i>, <font color=...>, <c.yellow>, <v Bob>, <00:00:01.000>
_ASS_BLOCK_RE = re.compile(r"\{[^}\n]*\}")  # {\i1}, {\an8}, {comment}
_VTT_SKIPPED_BLOCKS = ("NOTE", "STYLE", "REGION")


def find_sidecar(video_path: str | os.PathLike) -> Path | None:
    """A subtitle file beside the video with its stem: ``talk.srt``/``talk.vtt``, else ``talk.<lang>.srt``.

    The suffix's case does not matter. Among language-tagged files the first in name order wins.
    """
    video = Path(video_path)
    try:
        siblings = [p for p in video.parent.iterdir() if p.name.startswith(video.stem + ".")]
    except OSError:
        return None
    exact, tagged = [], []
    for p in sorted(siblings):
        if p.suffix.lower() not in SUBTITLE_SUFFIXES or not p.is_file():
            continue
        middle = p.name[len(video.stem) + 1 : -len(p.suffix)]
        if not middle:
            exact.append(p)
        elif _LANGUAGE_TAG_RE.match(middle):
            tagged.append(p)
    found = (exact or tagged or [None])[0]
    if found is not None:
        logger.debug("sidecar subtitles for %s: %s", video.name, found.name)
    return found


def read_subtitles(path: str | os.PathLike) -> Transcript:
    """Parse an SRT or WebVTT file (told apart by its first line, not its name).

    Markup (``<i>``, ``{\\an8}``, WebVTT voice and class tags, entities) is removed and each cue's lines are
    joined with spaces. A file that is empty, holds no cue, or has a malformed cue timing raises
    :class:`~qwen3vl_summarizer.errors.SubtitleError` naming the file and line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SubtitleError(f"subtitle file {path} cannot be read ({e.strerror or e}); check the path") from e
    lines = _decode_text(raw).splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    is_vtt = first.startswith("WEBVTT")
    segments = _parse_vtt(lines, path) if is_vtt else _parse_srt(lines, path)
    if not segments:
        what = "is empty" if not first else "holds no subtitle cue"
        raise SubtitleError(f"subtitle file {path} {what}; remove it or pass another file")
    tag = _ISO_639_1_RE.match(path.stem.rpartition(".")[2]) if "." in path.stem else None
    language = tag.group(1).lower() if tag else None  # "talk.en.srt" -> "en"
    return Transcript(tuple(sorted(segments, key=lambda s: s.start)), f"sidecar:{path.name}", language)


def _decode_text(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.debug("subtitle file is not UTF-8; reading it as Windows-1252")
        return raw.decode("cp1252", errors="replace")


def _blocks(lines: Sequence[str], start: int = 0) -> Iterable[tuple[int, list[str]]]:
    """Runs of non-blank lines, each with the 1-based number of its first line."""
    block: list[str] = []
    first = 0
    for i in range(start, len(lines)):
        line = lines[i].rstrip()
        if line.strip():
            if not block:
                first = i + 1
            block.append(line)
        elif block:
            yield first, block
            block = []
    if block:
        yield first, block


def _timing(line: str, lineno: int, path: Path, example: str) -> tuple[float, float]:
    m = _TIMING_RE.match(line)
    if m is None:
        raise SubtitleError(
            f"{path}:{lineno}: expected a cue timing such as '{example}', got {line.strip()!r}"
        )
    g = m.groups()
    start, end = _seconds(g[:4]), _seconds(g[4:])
    if end < start:
        raise SubtitleError(f"{path}:{lineno}: the cue ends ({end:.3f} s) before it starts ({start:.3f} s)")
    return start, end


def _seconds(parts: Sequence[str | None]) -> float:
    h, m, s, frac = parts
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000  # type: ignore[union-attr]


def _cue(start: float, end: float, text_lines: Iterable[str], vtt: bool) -> SpeechSegment | None:
    text = " ".join(_ASS_BLOCK_RE.sub("", _TAG_RE.sub("", line)) for line in text_lines)
    if vtt:
        text = html.unescape(text)
    text = " ".join(text.split())
    return SpeechSegment(start, end, text) if text else None


def _parse_srt(lines: Sequence[str], path: Path) -> list[SpeechSegment]:
    segments: list[SpeechSegment] = []
    for lineno, block in _blocks(lines):
        i = 1 if block[0].strip().isdigit() and len(block) > 1 else 0  # the cue's number, optional
        if i == 0 and segments and not _LOOKS_TIMED_RE.match(block[0]):
            # a blank line inside a cue's text (common in hand-made files): the text goes on
            last = segments[-1]
            more = _cue(last.start, last.end, block, vtt=False)
            if more is not None:
                segments[-1] = SpeechSegment(last.start, last.end, f"{last.text} {more.text}")
            continue
        start, end = _timing(block[i], lineno + i, path, "00:00:01,000 --> 00:00:02,500")
        if (cue := _cue(start, end, block[i + 1 :], vtt=False)) is not None:
            segments.append(cue)
    return segments


def _parse_vtt(lines: Sequence[str], path: Path) -> list[SpeechSegment]:
    header = next(i for i, line in enumerate(lines) if line.strip())
    if not re.match(r"^\s*WEBVTT(?:[ \t].*)?$", lines[header]):
        raise SubtitleError(
            f"{path}:{header + 1}: a WebVTT file must start with 'WEBVTT', got {lines[header]!r}"
        )
    segments = []
    for n, (lineno, block) in enumerate(_blocks(lines, header)):
        if n == 0 or block[0].split(maxsplit=1)[0] in _VTT_SKIPPED_BLOCKS:
            continue  # the header block (WEBVTT and its metadata), comments, styles, regions
        i = 0 if "-->" in block[0] else 1  # an optional cue identifier
        if i >= len(block):
            raise SubtitleError(f"{path}:{lineno}: a cue identifier without a timing line ({block[0]!r})")
        start, end = _timing(block[i], lineno + i, path, "00:01.000 --> 00:02.500")
        if (cue := _cue(start, end, block[i + 1 :], vtt=True)) is not None:
            segments.append(cue)
    return segments


# --- subtitle streams ------------------------------------------------------------------------------------


def embedded_subtitles(video_path: str | os.PathLike) -> Transcript | None:
    """The first text subtitle stream of the container, or None when there is none (or it is empty).

    Prefers a stream marked default and skips forced-only ones when there is a choice. Cue times are the
    packets' own (PTS and duration, exact) on the video clock; the text is what FFmpeg's decoder makes of
    it (every text codec decodes to an ASS dialogue line), with ASS markup removed.
    """
    path = _check_path(video_path)
    with _open(path) as container:
        streams = [s for s in container.streams.subtitles if _is_text(s)]
        if not streams:
            return None
        d = av.stream.Disposition
        stream = min(streams, key=lambda s: (bool(s.disposition & d.forced), not s.disposition & d.default))
        zero = (container.start_time or 0) / av.time_base
        segments, errors = _read_subtitle_stream(container, stream, zero)
        codec = stream.codec_context.name
        language = (
            getattr(stream, "language", None) or stream.metadata.get("language") or ""
        ).strip() or None
    if not segments:
        logger.info("the %s subtitle stream of %s holds no text", codec, path)
        return None
    damage = f"{errors} subtitle packets could not be decoded" if errors else None
    language = None if language == "und" else language
    return Transcript(tuple(segments), f"embedded:{codec}", language, damage)


def _is_text(stream: av.subtitles.stream.SubtitleStream) -> bool:
    ctx = stream.codec_context
    if ctx is None:
        return False
    return bool(getattr(ctx.codec, "text_sub", False)) or ctx.name in TEXT_SUBTITLE_CODECS


def _read_subtitle_stream(
    container: av.container.InputContainer, stream: av.subtitles.stream.SubtitleStream, zero: float
) -> tuple[list[SpeechSegment], int]:
    cues: list[tuple[float, float | None, str]] = []
    errors = 0
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            try:
                decoded = stream.decode(packet)
            except av.FFmpegError as e:
                errors += 1
                logger.debug(
                    "skipping an undecodable subtitle packet at pts %s (%s)", packet.pts, first_line(e)
                )
                continue
            text = " ".join(_ass_text(rect) for rect in _rects(decoded)).strip()
            if not text:
                continue  # mov_text writes an empty sample between cues
            start = float(packet.pts * packet.time_base) - zero
            end = start + float(packet.duration * packet.time_base) if packet.duration else None
            cues.append((start, end, " ".join(text.split())))
    except av.FFmpegError as e:  # a read error mid-file: keep the cues read so far
        errors += 1
        logger.debug("subtitle stream stopped early (%s)", first_line(e))
    cues.sort(key=lambda c: c[0])
    segments = []
    for i, (start, end, text) in enumerate(cues):
        if end is None or end <= start:  # no stated length: until the next cue, or a short while
            following = cues[i + 1][0] if i + 1 < len(cues) else start + MIN_CUE_S
            end = following if following > start else start + MIN_CUE_S
        segments.append(SpeechSegment(start, end, text))
    return segments, errors


def _rects(decoded: Iterable[Any]) -> Iterable[Any]:
    """Subtitle rectangles, whether ``decode`` gave them directly (PyAV 18) or in SubtitleSets (PyAV 13, 14)."""
    for item in decoded:
        yield from getattr(item, "rects", (item,))


def _ass_text(rect: Any) -> str:
    """The spoken text of an ASS dialogue event: fields after the 8th comma, override blocks removed.

    PyAV's own ``dialogue`` keeps override tags such as ``{\\i1}``; this removes every ``{...}`` block.
    """
    ass = getattr(rect, "ass", b"") or b""
    if not ass:
        return ""
    text = ass.decode("utf-8", errors="replace").split(",", 8)[-1]
    text = _ASS_BLOCK_RE.sub("", text)
    return text.replace("\\N", " ").replace("\\n", " ").replace("\\h", " ")


# --- audio -----------------------------------------------------------------------------------------------


def load_audio(video_path: str | os.PathLike) -> Audio:
    """Decode the file's main audio stream to 16 kHz mono float32, placed on the video clock.

    ``Audio.start`` is where ``samples[0]`` falls on the clock of ``Frame.t`` (seconds; > 0 when the audio
    starts after the pictures). Jumps in the audio's timestamps, and packets that do not decode, become
    silence, so later speech keeps its time. A damaged stream keeps what decoded and says so in
    ``Audio.damage``. Raises :class:`~qwen3vl_summarizer.errors.NoAudioStreamError` without an audio
    stream, :class:`~qwen3vl_summarizer.errors.DamagedAudioError` when nothing decodes.
    """
    path = _check_path(video_path)
    with _open(path) as container:
        stream = _audio_stream(container, path)
        zero = (container.start_time or 0) / av.time_base
        decoder = _AudioDecoder(zero)
        stopped = None
        try:
            for packet in container.demux(stream):
                decoder.feed(stream, packet)
        except av.FFmpegError as e:  # a read error mid-file: keep what decoded
            stopped = first_line(e)
        samples = decoder.finish()
        stated_end = _stated_end(container, stream, zero)
    if decoder.start is None or not len(samples):
        reason = f" ({stopped})" if stopped else ""
        raise DamagedAudioError(f"{path}: no audio could be decoded{reason}; re-encode or repair the file")
    audio_end = decoder.start + len(samples) / SAMPLE_RATE
    damage = decoder.damage()
    if stopped or (stated_end is not None and audio_end < stated_end - TRUNCATION_SLACK_S):
        why = f" ({stopped})" if stopped else ""
        end = f" of {stated_end:.1f} s" if stated_end is not None else ""
        damage = "; ".join(filter(None, [damage, f"the audio stops at {audio_end:.1f} s{end}{why}"]))
    if damage:
        logger.warning("%s: damaged audio: %s", path, damage)
    return Audio(samples, decoder.start, damage)


def _audio_stream(container: av.container.InputContainer, path: str) -> av.audio.stream.AudioStream:
    """The stream FFmpeg would play; raises NoAudioStreamError when there is none it can decode."""
    stream = container.streams.best("audio")
    if stream is None or stream.codec_context is None:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        what = "an audio stream this FFmpeg build cannot decode" if stream else f"no audio ({kinds})"
        raise NoAudioStreamError(f"{path} has {what}; there is no speech to transcribe")
    return stream


class _AudioDecoder:
    """Decodes packets and resamples frames, padding timestamp gaps with silence."""

    def __init__(self, zero: float) -> None:
        self.zero = zero  # container start, seconds: subtracted from every time
        self.start: float | None = None  # clock time of the first sample
        self.chunks: list[np.ndarray] = []
        self.length = 0  # samples in chunks, at SAMPLE_RATE
        self.resampler: av.AudioResampler | None = None
        self.next_t: float | None = None  # where the next input frame should start, clock seconds
        self.bad_packets = 0
        self.first_bad: float | None = None
        self.silence = 0  # samples of silence put in for gaps

    def feed(self, stream: av.audio.stream.AudioStream, packet: av.Packet) -> None:
        try:
            frames = stream.decode(packet)
        except av.FFmpegError as e:
            if packet.size == 0:  # flushing a broken stream: nothing more to get
                return
            self.bad_packets += 1
            if self.first_bad is None and packet.pts is not None:
                self.first_bad = float(packet.pts * packet.time_base) - self.zero
            logger.debug("skipping an undecodable audio packet at pts %s (%s)", packet.pts, first_line(e))
            return
        for frame in frames:
            self._add(frame)

    def _add(self, frame: av.AudioFrame) -> None:
        t = None if frame.pts is None else float(frame.pts * frame.time_base) - self.zero
        if self.start is None:
            self.start = t if t is not None else 0.0
        elif t is not None and self.next_t is not None and t - self.next_t > GAP_FILL_S:
            self._flush()
            pad = round((t - self.start) * SAMPLE_RATE) - self.length
            if pad > 0:
                self._append(np.zeros(pad, np.float32))
                self.silence += pad
        if self.resampler is None:
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            out = self.resampler.resample(frame)
        except ValueError:  # the input's format, layout or rate changed mid-stream: start a new resampler
            self._flush()
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            out = self.resampler.resample(frame)
        for f in out:
            self._append(f.to_ndarray().reshape(-1))
        if t is not None:
            self.next_t = t + frame.samples / frame.sample_rate

    def _flush(self) -> None:
        if self.resampler is not None:
            for f in self.resampler.resample(None):
                self._append(f.to_ndarray().reshape(-1))
            self.resampler = None

    def _append(self, samples: np.ndarray) -> None:
        self.chunks.append(samples.astype(np.float32, copy=False))
        self.length += len(samples)

    def finish(self) -> np.ndarray:
        self._flush()
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.chunks = []
        return samples

    def damage(self) -> str | None:
        if not self.bad_packets and not self.silence:
            return None
        parts = []
        if self.bad_packets:
            at = f" from {self.first_bad:.1f} s" if self.first_bad is not None else ""
            parts.append(f"{self.bad_packets} audio packets could not be decoded{at}")
        if self.silence:
            parts.append(f"{self.silence / SAMPLE_RATE:.1f} s of silence put in their place")
        return ", ".join(parts)


def _stated_end(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, zero: float):
    """Where the container says the audio ends, clock seconds, or None when it does not say."""
    if stream.duration and stream.time_base:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base) - zero
    return None


# --- speech recognition ----------------------------------------------------------------------------------


def transcribe(
    video_path: str | os.PathLike,
    model: str = "auto",
    language: str | None = None,
    device: str = "auto",
    on_progress: Callable[[float, float], None] | None = None,
    *,
    cpu_threads: int = 0,
    span: tuple[float, float | None] | None = None,
) -> Transcript:
    """Recognise the speech of a video's (or an audio file's) main audio stream with faster-whisper.

    ``model``: ``"auto"`` (``large-v3-turbo`` on CUDA, ``base`` on CPU), a faster-whisper size such as
    ``"small"``, a hub id, or a local CTranslate2 folder. ``language``: a Whisper language code, or None
    to detect it. ``device``: ``"auto"``, ``"cpu"`` (int8) or ``"cuda"`` (float16).
    ``on_progress(done_seconds, total_seconds)`` is called as segments arrive, in audio seconds.
    ``cpu_threads``: CTranslate2's threads on the CPU (0: :data:`CPU_THREADS`), to share the cores with other
    work.
    ``span``: (start, end) seconds on the video clock (end None: to the end) to recognise only that part, as
    for a summary of a time range; the segments keep the video's clock, and ``Transcript.span`` says so.
    Raises :class:`~qwen3vl_summarizer.errors.SpeechModelError` when the model cannot be had,
    :class:`~qwen3vl_summarizer.errors.OptionsError` for an unknown device or language.
    """
    if device not in DEVICES:
        raise OptionsError(f"speech device must be one of {', '.join(DEVICES)}, got {device!r}")
    path = _check_path(video_path)
    with _open(path) as container:
        _audio_stream(container, path)  # no audio: say so before loading (or downloading) a model
    device = _pick_device() if device == "auto" else device
    name = DEFAULT_MODELS[device] if model == "auto" else model
    model_path = _resolve_model(name)
    whisper = _load_model(model_path, device, COMPUTE_TYPES[device], cpu_threads or CPU_THREADS)
    language = _check_language(language, whisper.supported_languages, name)
    audio = load_audio(path)
    samples, offset, recognised = _span_of(audio, span)
    total = len(samples) / SAMPLE_RATE
    if not len(samples):  # a span where the audio has no samples
        return Transcript((), f"asr:{name}", language, audio.damage, recognised)
    # Each 30 s window is decoded on its own (condition_on_previous_text=False): conditioned on the text
    # before it, tiny.en skipped whole sentences and repeated earlier ones on a 3-minute narration
    # (word error rate 0.19 against 0.05; bench/RESULTS_speech.md).
    pieces, info = whisper.transcribe(
        samples,
        language=language,
        vad_filter=True,
        word_timestamps=True,
        condition_on_previous_text=False,
    )
    segments: list[SpeechSegment] = []
    try:
        for piece in pieces:  # a generator: recognition happens while iterating
            if on_progress is not None:
                on_progress(min(float(piece.end), total), total)
            for start, end, text in _split_at_pauses(piece):
                segments.append(SpeechSegment(max(0.0, start + offset), max(0.0, end + offset), text))
    finally:
        if device == "cuda":  # the GPU's memory goes back to the video model; the next file loads it again
            del whisper
            release_model()
    if on_progress is not None:
        on_progress(total, total)
    logger.info("transcribed %.1f s of audio with %s: %d segments", total, name, len(segments))
    return Transcript(tuple(segments), f"asr:{name}", info.language, audio.damage, recognised)


def _span_of(
    audio: Audio, span: tuple[float, float | None] | None
) -> tuple[np.ndarray, float, tuple[float, float] | None]:
    """The samples of ``span`` (video-clock seconds; None: all), where they start on that clock, and the
    span as recognised (None for the whole file). Decoding all of the audio costs little beside recognising
    it (2 s for 10 minutes of AAC here); recognition is what the span saves."""
    if span is None:
        return audio.samples, audio.start, None
    start, end = span
    end = audio.start + audio.duration if end is None else end
    first = min(len(audio.samples), max(0, round((start - audio.start) * SAMPLE_RATE)))
    last = min(len(audio.samples), max(first, round((end - audio.start) * SAMPLE_RATE)))
    return audio.samples[first:last], audio.start + first / SAMPLE_RATE, (float(start), float(end))


def _split_at_pauses(piece: Any) -> list[tuple[float, float, str]]:
    """(start, end, text) of a faster-whisper segment, in audio seconds, cut where its words pause.

    With the VAD filter the model hears speech with the silences taken out, so one segment may hold
    sentences that were seconds apart; its words keep their real times, so they place and cut it.
    """
    words = [w for w in piece.words or () if w.word.strip()]
    if not words:
        text = " ".join(piece.text.split())
        return [(float(piece.start), float(max(piece.end, piece.start)), text)] if text else []
    runs = [[words[0]]]
    for prev, word in zip(words, words[1:], strict=False):
        if word.start - prev.end >= SPLIT_PAUSE_S:
            runs.append([])
        runs[-1].append(word)
    out = []
    for run in runs:
        text = " ".join("".join(w.word for w in run).split())
        out.append((float(run[0].start), float(max(run[-1].end, run[0].start)), text))
    return out


def _pick_device() -> str:
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # no CTranslate2 or no CUDA runtime: the CPU always works
        return "cpu"


def _resolve_model(model: str) -> str:
    """What WhisperModel loads: a local folder as is, a size or hub id from the cache or the hub."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "model.bin").is_file():
            raise SpeechModelError(
                f"{folder} holds no CTranslate2 model (model.bin); convert one with ct2-transformers-converter"
            )
        return str(folder)
    if folder.is_absolute() or model.startswith((".", "~")) or folder.exists():
        raise SpeechModelError(f"speech model folder {folder} not found; pass a local CTranslate2 folder")
    try:
        from faster_whisper.utils import available_models, download_model
    except ImportError as e:
        raise SpeechModelError(
            "faster-whisper is not installed; pip install faster-whisper to transcribe speech"
        ) from e
    if "/" not in model and model not in available_models():
        raise SpeechModelError(
            f"unknown speech model {model!r}; pass one of {', '.join(available_models())}, "
            "a hub id or a local CTranslate2 folder"
        )
    try:
        return download_model(model, local_files_only=True)
    except Exception as e:  # not in the cache: try the hub
        logger.debug("speech model %s is not cached (%s)", model, first_line(e))
    try:
        logger.info("downloading speech model %s", model)
        return download_model(model)
    except Exception as e:
        from huggingface_hub.errors import RepositoryNotFoundError

        if isinstance(e, RepositoryNotFoundError):
            raise SpeechModelError(f"speech model {model} does not exist on the hub; check its id") from e
        raise SpeechModelError(
            f"speech model {model} is not downloaded and the hub cannot be reached; "
            "pass a local CTranslate2 folder, or download it once while online"
        ) from e


def release_model() -> None:
    """Forget the loaded speech model (frees its memory, GPU memory included, once nothing else holds it)."""
    _load_model.cache_clear()


@functools.lru_cache(maxsize=1)
def _load_model(model_path: str, device: str, compute_type: str, cpu_threads: int = 0) -> Any:
    """A loaded ``faster_whisper.WhisperModel``, kept for the next call with the same arguments."""
    try:
        from faster_whisper import WhisperModel

        return WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    except Exception as e:
        raise SpeechModelError(
            f"speech model {model_path} could not be loaded on {device} ({first_line(e)}); "
            "check the folder or try device='cpu'"
        ) from e


def _check_language(language: str | None, supported: Sequence[str], label: str) -> str | None:
    if language is None or language in ("", "auto"):
        return None
    code = language.strip().lower()
    if code not in supported:
        raise OptionsError(
            f"speech language {language!r} is not one {label} knows; use one of {', '.join(supported)} "
            "or leave it empty to detect it"
        )
    return code


# --- for the model ---------------------------------------------------------------------------------------


def prompt_lines(segments: Iterable[SpeechSegment], hours: bool = False) -> str:
    """The transcript as the model reads it: one ``[MM:SS] text`` line a segment (``[HH:MM:SS]`` with hours)."""
    return "\n".join(f"[{format_timestamp(s.start, hours=hours)}] {s.text}" for s in segments)
