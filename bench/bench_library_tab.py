"""The Library tab's own work on a large library: its first page of videos (posters included) and a page of
search hits, rendered as the page shows them (web/library_tab.py), timed in-process (no browser, no HTTP).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_library_tab.py --videos 1000

Each video gets a poster the size the app writes (a 160-pixel-wide JPEG, ~5 KB), a 540-line transcript
over 45 minutes and a 30-line summary; one line in 100 holds "checkpointing" or 机制.

Measured 2026-12-07 01:30 UTC, 2-core AMD EPYC shared with three other engineers' tests (load average 5.0-5.1),
1,000 videos built in 20.7 s: first page (20 videos with posters, 295 KB of HTML) p50 0.7 ms, p95 3.2 ms;
last page p50 9.5 ms, p95 28.5 ms; search "checkpointing" (30 hits) p50 15.6 ms, p95 53.3 ms; search 机制
p50 14.5 ms, p95 23.8 ms (issue 20: the Library tab's first page within 1 s).
"""

import argparse
import io
import random
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from qwen3vl_summarizer.library import Library
from qwen3vl_summarizer.options import load_options
from web import library_tab
from web.handlers import AppState

WORDS = [f"w{i}" for i in range(5000)]


def poster(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=80)
    return out.getvalue()


def build(library: Library, videos: int) -> None:
    rng = random.Random(0)
    for v in range(videos):
        video_id = library.add_video(f"fp{v}", f"lecture {v}.mp4", duration=2700.0)
        run = library.start_run(video_id, "summarize", {"model": "bench"})
        lines = []
        for i in range(540):
            words = rng.choices(WORDS, k=10) + (["checkpointing", "机制"] if rng.random() < 0.01 else [])
            lines.append((i * 5.0, i * 5.0 + 5.0, " ".join(words)))
        library.write_transcript(run, lines)
        summary = "\n".join(f"- [{i * 90 // 60:02d}:{i * 90 % 60:02d}] " + " ".join(rng.choices(WORDS, k=8))
                            for i in range(30))  # fmt: skip
        library.write_summary(run, summary, {"bench": True}, 2700.0)
        library.write_thumbnails(video_id, [(270.0, poster(v))])
        library.finish_run(run)


def timed(fn, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-library-tab-"))
    options = load_options(overrides={"library": {"path": str(folder / "library.db")}}, environ={})
    state = AppState(options)
    library = state.library_for(None)
    t = time.perf_counter()
    build(library, args.videos)
    print(f"built {args.videos} videos in {time.perf_counter() - t:.1f} s")
    request = SimpleNamespace(username=None, headers={}, session_hash="bench")
    for name, fn in (
        ("first page (20 videos, posters)", lambda: library_tab.list_page(state, 0, request)),
        ("last page", lambda: library_tab.list_page(state, 10**6, request)),
        ("search 'checkpointing' (30 hits)", lambda: library_tab.search(state, "checkpointing", request)),
        ("search '机制' (30 hits)", lambda: library_tab.search(state, "机制", request)),
    ):
        p50, p95 = timed(fn, args.runs)
        print(f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    html = library_tab.list_page(state, 0, request)[0]
    print(f"first page HTML: {len(html):,} characters")
    state.close()


if __name__ == "__main__":
    main()
