"""Benchmark the frame sampler against ffmpeg's fps filter.

Generates 10-minute 1080p30 H.264 test videos (testsrc2) in a cache folder outside the repo on first use,
one with x264's default long keyframe interval (250 frames) and one with a short one (30 frames), then
times, per video:

- ``ffmpeg -i X -vf fps=1 -f null -`` and ``ffmpeg -i X -vf fps=1,scale=448:252 -f null -``
- ``qwen3vl_summarizer.video.sample(X, fps=1, size=(448, 256), strategy=S)`` for every strategy S,
  checking that every returned time is at or before its target and within one source frame interval.

Usage: ``.venv/bin/python bench/bench_sampler.py [--cache /tmp/qwen3vl_bench] [--minutes 10]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen3vl_summarizer import video  # noqa: E402

SIZE = (448, 256)  # output frame size (width, height), as the plan would choose for 16:9
FPS = 1.0  # sampling rate, frames/s
KEYINTS = (250, 30)  # x264 keyframe intervals of the two test videos, frames


def make_video(cache: Path, minutes: float, keyint: int) -> Path:
    path = cache / f"h264_1080p30_{minutes:g}min_g{keyint}.mp4"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        tmp = path.with_suffix(".part.mp4")
        subprocess.run(
            [
                "ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                "-i", "testsrc2=size=1920x1080:rate=30", "-t", str(minutes * 60), "-c:v", "libx264",
                "-preset", "veryfast", "-g", str(keyint), "-pix_fmt", "yuv420p", str(tmp),
            ],
            check=True,
        )  # fmt: skip
        tmp.rename(path)
    return path


def time_ffmpeg(path: Path, vf: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-vf", vf, "-f", "null", "-"],
        check=True,
    )
    return time.perf_counter() - started


def time_sampler(path: Path, strategy: str) -> tuple[float, int, float]:
    """Wall seconds, frames returned, worst |t - target| in seconds; asserts the tolerance."""
    started = time.perf_counter()
    frames = video.sample(path, fps=FPS, size=SIZE, strategy=strategy)
    interval = 1.0 / frames.info.fps
    n, worst = 0, 0.0
    for frame in frames:
        assert frame.image.shape == (SIZE[1], SIZE[0], 3)
        error = frame.target - frame.t
        assert -1e-6 <= error < interval + 1e-6, (strategy, frame.target, frame.t)
        worst = max(worst, error)
        n += 1
    elapsed = time.perf_counter() - started
    expected = len(video.target_times(frames.info.duration, FPS))
    assert n == expected and frames.damage is None, (n, expected, frames.damage)
    return elapsed, n, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/qwen3vl_bench"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--strategies", default=",".join(video.STRATEGIES))
    parser.add_argument("--keyints", default=",".join(map(str, KEYINTS)), help="x264 -g values, frames")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, PyAV {video.av.__version__}")  # fmt: skip
    for keyint in map(int, args.keyints.split(",")):
        path = make_video(args.cache, args.minutes, keyint)
        seconds = video.probe(path).duration
        print(f"\n{path.name}: {seconds:.0f} s, keyframe every {keyint} frames")
        rows = []
        for vf in ("fps=1", "fps=1,scale=448:252"):
            elapsed = time_ffmpeg(path, vf)
            rows.append((f"ffmpeg -vf {vf}", elapsed, "", ""))
        baseline = rows[0][1]
        for strategy in args.strategies.split(","):
            elapsed, n, worst = time_sampler(path, strategy)
            rows.append((f"sample(strategy={strategy!r})", elapsed, n, f"{worst * 1000:.1f}"))
        print(f"| {'method':34} | wall s | video s / wall s | vs ffmpeg fps=1 | frames | worst t error ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, elapsed, n, worst in rows:
            print(f"| {name:34} | {elapsed:6.1f} | {seconds / elapsed:6.1f} | {baseline / elapsed:5.2f}x "
                  f"| {n} | {worst} |")  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process (sampler only): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
