"""Make tiny test videos at test time, with each frame's index drawn into its picture.

Every frame shows, upright: a red block in the top-left corner (to check orientation) and its index as
8 black/white bars along the bottom (to check which frame came back). ``read_index`` decodes both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

N_BITS = 8  # frame index bars; indexes 0..255


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """The upright picture of frame ``index``: [height, width, 3] uint8 RGB."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 3, : width // 3] = (255, 0, 0)  # orientation marker, top-left
    bar = width // N_BITS
    for bit in range(N_BITS):
        if index >> bit & 1:
            image[height // 2 :, bit * bar : (bit + 1) * bar] = 255
    return image


def read_index(image: np.ndarray) -> int:
    """The frame index drawn by :func:`pattern`; asserts the marker is top-left (the picture is upright)."""
    height, width, _ = image.shape
    corner = image[height // 12 : height // 4, width // 12 : width // 4].reshape(-1, 3).mean(0)
    assert corner[0] > 150 and corner[1] < 100, f"picture is not upright: top-left mean colour {corner}"
    other = image[height // 12 : height // 4, -width // 4 : -width // 12].reshape(-1, 3).mean(0)
    assert other[0] < 100, f"picture is mirrored or rotated: top-right mean colour {other}"
    bar = width // N_BITS
    row = image[3 * height // 4 - 2 : 3 * height // 4 + 2].astype(float).mean(axis=(0, 2))
    index = 0
    for bit in range(N_BITS):
        if row[bit * bar + bar // 4 : (bit + 1) * bar - bar // 4].mean() > 128:
            index |= 1 << bit
    return index


def write_video(
    path: Path,
    times: list[float],
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (128, 96),
    rotation: int = 0,
    options: dict[str, str] | None = None,
    time_base: Fraction = Fraction(1, 1000),
    audio_seconds: float = 0.0,
    container_options: dict[str, str] | None = None,
) -> list[float]:
    """Encode frame i at presentation time ``times[i]`` seconds; returns the times as stored (rounded).

    ``size`` is the upright (display) size; with ``rotation`` (clockwise degrees a player applies) the
    coded pictures are turned the other way and the display matrix says how to turn them back.
    """
    width, height = size
    coded_w, coded_h = (height, width) if rotation in (90, 270) else (width, height)
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=30, options=options or {})
        stream.width, stream.height = coded_w, coded_h
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(-rotation)  # counter-clockwise degrees
        audio = None
        if audio_seconds:
            audio = out.add_stream("aac", rate=16000)
            audio.layout = "mono"
        pts_list = [round(Fraction(t) / time_base) for t in times]
        for i, pts in enumerate(pts_list):
            image = np.rot90(pattern(i, width, height), k=rotation // 90)  # undo the player's clockwise turn
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
        if audio is not None:
            n = int(audio_seconds * 16000)
            samples = (0.1 * np.sin(np.arange(n) / 10.0)).astype(np.float32)[None, :]
            for i in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(samples[:, i : i + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, i
                out.mux(audio.encode(chunk))
            out.mux(audio.encode(None))
    return [float(p * time_base) for p in pts_list]


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg CLI quietly; raises with its stderr on failure."""
    result = subprocess.run(
        ["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", *args], capture_output=True
    )
    if result.returncode:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")


def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def ffmpeg_can_encode(encoder: str) -> bool:
    if not shutil.which("ffmpeg"):
        return False
    out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == [encoder] for line in out.splitlines() if line.strip())


def ffprobe_frame_times(path: Path) -> tuple[list[float], float]:
    """Presentation times of the video frames in seconds, minus the container start time (ffprobe oracle)."""
    result = subprocess.run(
        [
            "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
            "frame=best_effort_timestamp_time:format=start_time", "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    start = float(data["format"].get("start_time", 0) or 0)
    return sorted(float(f["best_effort_timestamp_time"]) - start for f in data["frames"]), start


def on_screen(times: list[float], target: float) -> float:
    """The truth: the time of the last frame at or before ``target`` (the first frame if none)."""
    before = [t for t in times if t <= target + 1e-6]
    return max(before) if before else min(times)
