"""Benchmark the frame sampler against ffmpeg's fps filter.

Generates 10-minute 1080p30 H.264 test videos (testsrc2) in a cache folder outside the repo on first use,
one with x264's default long keyframe interval (250 frames) and one with a short one (30 frames), then
times, per video:

- ``ffmpeg -i X -vf fps=1 -f null -`` and ``ffmpeg -i X -vf fps=1,scale=448:252 -f null -``
- ``qwen3vl_summarizer.video.sample(X, fps=1, size=(448, 256), strategy=S)`` for every strategy S,
  checking that every returned time is at or before its target and within one source frame interval.
  ``auto`` runs its chunks on one worker thread per free core; ``--workers 1`` adds a row for ``auto``
  on a single pass (frame-threaded decoder), whose frames must be identical.
- with ``--skip-loop-filter V,...``: ``auto`` with the decoder option ``skip_loop_filter=V`` (an
  experiment, not a strategy: it changes pixels), with the PSNR of its frames against ``auto``'s.

``--end S`` times only the first S seconds (``ffmpeg -t S``); ``--rounds N`` repeats every method N times,
interleaved, alternating the order, and reports the mean (the machine is shared, so compare rows of one
run only).

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

import numpy as np

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


def time_ffmpeg(path: Path, vf: str, end: float | None) -> float:
    window = ["-t", str(end)] if end is not None else []
    started = time.perf_counter()
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            *window,
            "-i",
            str(path),
            "-vf",
            vf,
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    return time.perf_counter() - started


def with_decoder_options(options: dict[str, str] | None):
    """Make the sampler open its decoders with ``options`` (codec options, read when the decoder opens)."""
    plain = (
        video._video_stream.__wrapped__
        if hasattr(video._video_stream, "__wrapped__")
        else video._video_stream
    )

    def opened(container, path, threads=0):
        stream = plain(container, path, threads)
        if options:
            stream.codec_context.options = dict(options)
        return stream

    opened.__wrapped__ = plain
    video._video_stream = opened


def time_sampler(
    path: Path,
    strategy: str,
    end: float | None,
    options: dict[str, str] | None = None,
    workers: int | None = None,
) -> tuple[float, int, float, list]:
    """Wall seconds, frames returned, worst |t - target| in seconds, the frames; asserts the tolerance."""
    with_decoder_options(options)
    started = time.perf_counter()
    frames = video.sample(path, fps=FPS, size=SIZE, strategy=strategy, end=end, workers=workers)
    interval = 1.0 / frames.info.fps
    out, worst = [], 0.0
    for frame in frames:
        assert frame.image.shape == (SIZE[1], SIZE[0], 3)
        error = frame.target - frame.t
        assert -1e-6 <= error < interval + 1e-6, (strategy, frame.target, frame.t)
        worst = max(worst, error)
        out.append(frame)
    elapsed = time.perf_counter() - started
    with_decoder_options(None)
    expected = len(video.target_times(frames.info.duration, FPS, end=end))
    assert len(out) == expected and frames.damage is None, (len(out), expected, frames.damage)
    return elapsed, len(out), worst, out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/qwen3vl_bench"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--strategies", default=",".join(video.STRATEGIES))
    parser.add_argument("--keyints", default=",".join(map(str, KEYINTS)), help="x264 -g values, frames")
    parser.add_argument("--end", type=float, default=None, help="time only the first END seconds")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every method")
    parser.add_argument("--skip-loop-filter", default="", help="e.g. all,noref: auto + that decoder option")
    parser.add_argument("--workers", default="1", help="e.g. 1,2: rows for auto with that many workers")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, PyAV {video.av.__version__}")  # fmt: skip
    # (name, kind, strategy or filter, decoder options, workers)
    methods: list[tuple[str, str, str, dict | None, int | None]] = [
        (f"ffmpeg -vf {vf}", "ffmpeg", vf, None, None) for vf in ("fps=1", "fps=1,scale=448:252")
    ]
    methods += [(f"sample(strategy={s!r})", "sample", s, None, None) for s in args.strategies.split(",")]
    for n in filter(None, args.workers.split(",")):
        methods.append((f"auto, workers={n}", "sample", "auto", None, int(n)))
    for value in filter(None, args.skip_loop_filter.split(",")):
        methods.append(
            (f"auto + skip_loop_filter={value}", "sample", "auto", {"skip_loop_filter": value}, None)
        )
    for keyint in map(int, args.keyints.split(",")):
        path = make_video(args.cache, args.minutes, keyint)
        seconds = (
            video.probe(path).duration if args.end is None else min(args.end, video.probe(path).duration)
        )
        print(f"\n{path.name}: {seconds:.0f} s timed, keyframe every {keyint} frames", flush=True)
        walls: dict[str, list[float]] = {name: [] for name, *_ in methods}
        result: dict[str, tuple[int, float, list]] = {}
        for r in range(args.rounds):
            for name, kind, what, options, workers in methods if r % 2 == 0 else methods[::-1]:
                if kind == "ffmpeg":
                    walls[name].append(time_ffmpeg(path, what, args.end))
                else:
                    elapsed, n, worst, frames = time_sampler(path, what, args.end, options, workers)
                    walls[name].append(elapsed)
                    result[name] = (n, worst, [f.image for f in frames] if what == "auto" else [])
                    del frames
        exact = result.get("sample(strategy='auto')", (0, 0.0, []))[2]
        baseline = float(np.mean(walls[methods[0][0]]))
        print(f"| {'method':34} | wall s | video s / wall s | vs ffmpeg fps=1 | frames | worst t error ms "
              "| PSNR vs auto, min / mean dB |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, *_ in methods:
            elapsed = float(np.mean(walls[name]))
            n, worst, images = result.get(name, ("", None, []))
            error = f"{worst * 1000:.1f}" if worst is not None else ""
            quality = ""
            if name != "sample(strategy='auto')" and exact and images:
                scores = [psnr(a, b) for a, b in zip(images, exact, strict=True)]
                finite = [x for x in scores if np.isfinite(x)] or [float("inf")]
                quality = (
                    "identical"
                    if not any(map(np.isfinite, scores))
                    else f"{min(scores):.1f} / {np.mean(finite):.1f}"
                )
            print(f"| {name:34} | {elapsed:6.1f} | {seconds / elapsed:6.1f} | {baseline / elapsed:5.2f}x "
                  f"| {n} | {error} | {quality} |")  # fmt: skip
        if args.rounds > 1:
            print(
                "rounds, wall s: "
                + "; ".join(f"{k}: {', '.join(f'{x:.1f}' for x in v)}" for k, v in walls.items())
            )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process (it keeps auto's frames for the comparison): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
