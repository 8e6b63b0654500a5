"""Test media with known speech: espeak-ng sentences placed at known times under a synthetic video.

:func:`build_media` writes one small file per case the speech stage must handle (MP4, MPEG-TS with a start
offset and late or early audio, subtitle streams of every text codec, a sidecar file, no audio, audio only,
damaged audio) and returns where each sentence's voice starts. ffmpeg and espeak-ng must be installed.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

DURATION_S = 22.0  # length of every test video, seconds
VIDEO = "testsrc2=size=160x120:rate=10"  # ffmpeg's lavfi source: small and quick to encode
VOICE_HOP_S = 0.01  # loudness is measured per this many seconds
VOICE_THRESHOLD = 0.1  # a hop is voiced when its RMS passes this share of the loudest hop's
VOICE_PAUSE_S = 1.0  # a voice onset follows at least this much silence, seconds
LAG_HOP_S = 0.005  # sentence_lags: loudness envelope step, seconds
LAG_SEARCH_S = 0.5  # sentence_lags: how far either side a sentence is looked for, seconds
SENTENCE_S = 2.5  # sentence_lags: length of the stretch matched per sentence, seconds
TS_OFFSET_S = 10.0  # MPEG-TS files start at this timestamp (-output_ts_offset)
LATE_AUDIO_S = 1.5  # in ts_late_audio, the audio starts this long after the first picture
EARLY_AUDIO_S = 1.0  # in ts_early_audio, the audio starts this long before the first picture
DAMAGED_FROM_S, DAMAGED_TO_S = 5.0, 7.0  # audio packets in this range are garbled in damaged.mkv


@dataclass(frozen=True)
class Sentence:
    text: str
    at: float  # seconds after the first picture where espeak-ng's recording of it is placed
    keywords: tuple[str, ...]  # words a recogniser must get right


SENTENCES = (
    Sentence("Welcome to the weather report for today.", 2.0, ("weather", "report", "today")),
    Sentence("The children are playing football in the park.", 9.0, ("children", "football", "park")),
    Sentence("Turn off the lights before you leave the house.", 17.0, ("lights", "leave", "house")),
)

# Subtitle cues muxed into the container (and the sidecar): times after the first picture, exact to 1 ms.
CUES = (
    (2.0, 4.5, "The quick brown fox jumps over the lazy dog."),
    (9.25, 12.0, "Please remember to water the garden."),
    (17.0, 19.75, "The library closes early & late."),
)
SRT = """1
00:00:02,000 --> 00:00:04,500
The quick brown fox <i>jumps</i>
over the lazy dog.

2
00:00:09,250 --> 00:00:12,000
Please remember to water the garden.

3
00:00:17,000 --> 00:00:19,750
The library closes early & late.
"""
ASS = r"""[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:02.00,0:00:04.50,Default,,0,0,0,,{\i1}The quick brown fox{\i0} jumps\Nover the lazy dog.
Dialogue: 0,0:00:09.25,0:00:12.00,Default,,0,0,0,,Please remember to {\b1}water{\b0} the garden.
Dialogue: 0,0:00:17.00,0:00:19.75,Default,,0,0,0,,{\an8}The library closes early & late.
"""
VTT = """WEBVTT - sidecar test
Kind: captions

NOTE written by tests/narration.py,
not shown.

intro
00:02.000 --> 00:04.500 align:start position:10%
<v Narrator>The quick brown fox <b>jumps</b>
over the lazy dog.</v>

00:00:09.250 --> 00:00:12.000
Please remember to <c.yellow>water</c> the garden.

00:00:17.000 --> 00:00:19.750
The library closes early &amp; late.
"""


@dataclass(frozen=True)
class Media:
    """Paths of the test files; each holds the sentences (or cues) at their times after the first picture."""

    folder: Path
    onsets: tuple[float, ...]  # where each sentence's voice starts, seconds after the first picture
    narration: Path  # the narration alone, 16-bit mono WAV at espeak-ng's rate
    mp4: Path  # H.264 + AAC (stereo, 44.1 kHz), both from 0
    ts_late_audio: Path  # MPEG-TS starting at TS_OFFSET_S, audio LATE_AUDIO_S after the pictures
    ts_early_audio: Path  # MPEG-TS starting at TS_OFFSET_S, audio EARLY_AUDIO_S before the pictures
    mkv_srt: Path  # + a SubRip stream
    mkv_ass: Path  # + an ASS stream with override tags
    mkv_vtt: Path  # + a WebVTT stream
    mp4_mov_text: Path  # + a mov_text stream
    mkv_offset_srt: Path  # Matroska starting at TS_OFFSET_S + 1.4 s (copied TS times) + a SubRip stream
    sidecar_video: Path  # talk.mp4, with talk.vtt beside it
    silent: Path  # H.264 only, no audio stream
    m4a: Path  # AAC only, no video stream
    damaged: Path  # Matroska whose audio packets in [DAMAGED_FROM_S, DAMAGED_TO_S) are garbage


def missing_tools() -> str | None:
    """Why the media cannot be made here (a missing program), or None."""
    missing = [tool for tool in ("ffmpeg", "espeak-ng") if shutil.which(tool) is None]
    return f"needs {' and '.join(missing)} (apt-get install {' '.join(missing)})" if missing else None


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


@functools.cache
def speak(text: str) -> tuple[np.ndarray, int]:
    """espeak-ng's recording of ``text`` (its default English voice): int16 mono samples, rate (22050 Hz)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "say.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        return read_wav(path)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, f"{path}: expected 16-bit mono"
        return np.frombuffer(w.readframes(w.getnframes()), np.int16), w.getframerate()


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype(np.int16).tobytes())
    return path


def narrate(sentences: tuple[Sentence, ...], duration: float, shift: float = 0.0) -> tuple[np.ndarray, int]:
    """The sentences, each placed at ``at + shift`` seconds in ``duration`` seconds of silence."""
    recordings = [speak(s.text) for s in sentences]
    rate = recordings[0][1]
    out = np.zeros(round(duration * rate), np.int16)
    for s, (samples, _) in zip(sentences, recordings, strict=True):
        i = round((s.at + shift) * rate)
        n = min(len(samples), len(out) - i)
        out[i : i + n] = samples[:n]
    return out, rate


def voice_onsets(samples: np.ndarray, rate: int) -> list[float]:
    """Seconds where the voice starts after at least VOICE_PAUSE_S of silence (or at the very start)."""
    x = samples.astype(np.float64)
    hop = round(VOICE_HOP_S * rate)
    n = len(x) // hop
    rms = np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    voiced = rms > VOICE_THRESHOLD * rms.max()
    pause = round(VOICE_PAUSE_S / VOICE_HOP_S)
    onsets, last = [], -pause - 1
    for i in np.flatnonzero(voiced):
        if i - last > pause:
            onsets.append(float(i * VOICE_HOP_S))
        last = i
    return onsets


def envelope(samples: np.ndarray, rate: int, hop_s: float = LAG_HOP_S) -> np.ndarray:
    """RMS loudness per ``hop_s`` seconds (``rate * hop_s`` must be a whole number of samples)."""
    hop = round(rate * hop_s)
    assert abs(hop - rate * hop_s) < 1e-9, f"{rate} Hz does not divide into {hop_s} s hops"
    x = samples.astype(np.float64)
    n = len(x) // hop
    return np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def sentence_lags(
    samples: np.ndarray, rate: int, offset: float, reference: np.ndarray, reference_rate: int, onsets: tuple
) -> list[float]:
    """How much later (seconds) each sentence sits in ``samples`` than in ``reference``.

    ``samples[0]`` lies ``offset`` seconds after the first picture, ``reference[0]`` at the first picture.
    Each sentence is found by cross-correlating loudness envelopes (LAG_HOP_S steps) within
    +-LAG_SEARCH_S of where it should be, so a whole sentence, not one threshold crossing, is matched.
    """
    t_ref = np.arange(round(len(reference) * rate / reference_rate)) / rate
    ref = envelope(
        np.interp(t_ref, np.arange(len(reference)) / reference_rate, reference.astype(np.float64)), rate
    )
    got = envelope(samples, rate)
    width, search = round(SENTENCE_S / LAG_HOP_S), round(LAG_SEARCH_S / LAG_HOP_S)
    lags = []
    for onset in onsets:
        i0 = round((onset - 0.2) / LAG_HOP_S)  # window start in ref hops
        window = ref[i0 : i0 + width]
        scores = []
        for lag in range(-search, search + 1):
            j0 = i0 + lag - round(offset / LAG_HOP_S)
            other = got[j0 : j0 + width] if j0 >= 0 else np.zeros(0)
            scores.append(
                float(window @ other) / (np.linalg.norm(other) + 1e-12) if len(other) == width else -1.0
            )
        lags.append((int(np.argmax(scores)) - search) * LAG_HOP_S)
    return lags


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def build_media(folder: Path) -> Media:
    """Write every test file into ``folder`` (about 3 s of ffmpeg on 2 cores)."""
    folder.mkdir(parents=True, exist_ok=True)
    samples, rate = narrate(SENTENCES, DURATION_S)
    narration = write_wav(folder / "narration.wav", samples, rate)
    onsets = tuple(voice_onsets(samples, rate))
    assert len(onsets) == len(SENTENCES), f"narration onsets {onsets}: expected one per sentence"
    late = write_wav(
        folder / "late.wav", narrate(SENTENCES, DURATION_S - LATE_AUDIO_S, -LATE_AUDIO_S)[0], rate
    )
    early = write_wav(
        folder / "early.wav", narrate(SENTENCES, DURATION_S + EARLY_AUDIO_S, EARLY_AUDIO_S)[0], rate
    )
    (folder / "cues.srt").write_text(SRT)
    (folder / "cues.ass").write_text(ASS)
    picture = ("-f", "lavfi", "-i", f"{VIDEO}:duration={DURATION_S:g}")
    h264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")

    mp4 = folder / "narrated.mp4"
    ffmpeg(*picture, "-i", narration, *h264, "-c:a", "aac", "-ar", "44100", "-ac", "2", mp4)
    ts_late = folder / "late_audio.ts"
    ffmpeg(*picture, "-itsoffset", LATE_AUDIO_S, "-i", late, *h264, "-c:a", "aac", "-ar", "48000",
           "-output_ts_offset", TS_OFFSET_S, "-f", "mpegts", ts_late)  # fmt: skip
    ts_early = folder / "early_audio.ts"
    ffmpeg("-itsoffset", EARLY_AUDIO_S, *picture, "-i", early, *h264, "-c:a", "aac", "-ar", "48000",
           "-output_ts_offset", TS_OFFSET_S, "-f", "mpegts", ts_early)  # fmt: skip

    def with_subtitles(name: str, source: str, codec: str) -> Path:
        out = folder / name
        ffmpeg("-i", mp4, "-i", folder / source, "-map", "0", "-map", "1", "-c", "copy", "-c:s", codec, out)
        return out

    mkv_srt = with_subtitles("subrip.mkv", "cues.srt", "srt")
    mkv_ass = with_subtitles("ass.mkv", "cues.ass", "ass")
    mkv_vtt = with_subtitles("webvtt.mkv", "cues.srt", "webvtt")
    mp4_mov_text = with_subtitles("mov_text.mp4", "cues.srt", "mov_text")
    mkv_offset = folder / "offset_subrip.mkv"
    first_picture = _first_picture_time(ts_late)  # subtitles follow the pictures' copied timestamps
    ffmpeg("-copyts", "-i", ts_late, "-itsoffset", first_picture, "-i", folder / "cues.srt",
           "-map", "0", "-map", "1", "-c", "copy", "-c:s", "srt", mkv_offset)  # fmt: skip

    sidecar_folder = folder / "sidecar"
    sidecar_folder.mkdir(exist_ok=True)
    sidecar_video = sidecar_folder / "talk.mp4"
    shutil.copyfile(mp4, sidecar_video)
    (sidecar_folder / "talk.vtt").write_text(VTT)

    silent = folder / "silent.mp4"
    ffmpeg("-i", mp4, "-an", "-c", "copy", silent)
    m4a = folder / "narration.m4a"
    ffmpeg("-i", narration, "-c:a", "aac", m4a)
    damaged = folder / "damaged.mkv"
    garble_audio(mp4, damaged, DAMAGED_FROM_S, DAMAGED_TO_S)
    return Media(folder, onsets, narration, mp4, ts_late, ts_early, mkv_srt, mkv_ass, mkv_vtt, mp4_mov_text,
                 mkv_offset, sidecar_video, silent, m4a, damaged)  # fmt: skip


def _first_picture_time(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.start_time * stream.time_base)


def garble_audio(source: Path, out: Path, start: float, end: float) -> int:
    """Copy ``source`` into Matroska with the payload of every audio packet in ``[start, end)`` seconds
    replaced by bytes no AAC decoder accepts; returns how many packets were garbled."""
    garbled = 0
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        streams = {
            s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")
        }
        for packet in src.demux(*[src.streams[i] for i in streams]):
            if packet.dts is None:
                continue
            target = streams[packet.stream.index]
            t = float(packet.pts * packet.time_base)
            if packet.stream.type == "audio" and start <= t < end:
                junk = av.Packet(bytes([0xFF, 0xF1]) + bytes(range(256)) * (packet.size // 256 + 1))
                junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
                packet, garbled = junk, garbled + 1
            packet.stream = target
            dst.mux(packet)
    return garbled
