"""Long-video benchmark: the feature cache (cold vs warm) and segment-and-merge vs one pass.

    python bench/bench_long.py --minutes 10        # CPU, tiny random Qwen3-VL

1. Cold vs warm feature cache: summarise a video, then summarise it again with another prompt in a new
   session (as after a restart): the second run reads the vision features from disk and skips decoding
   and encoding.
2. Segment-and-merge vs a single pass on a video that fits: the cold single pass above, and the same
   video split into segments by a context about half its length (also cold: segments have their own keys).
Results go to stdout as JSON lines; bench/RESULTS_long.md records them with the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_engine import make_video  # also puts the checkout on the path, for tests/tiny_model.py

from qwen3vl_summarizer.jobs import open_job
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import ModelOptions, load_options
from tests.tiny_model import build_tiny_model


def summarize(engine, video, options, prompt):
    t0 = time.perf_counter()
    job = open_job(engine, video, options, prompt)
    stats = job.ask(prompt).stats
    return job, stats, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "qwen3vl-bench"))
    p.add_argument("--skip-segments", action="store_true", help="only the feature-cache comparison")
    args = p.parse_args()
    video = make_video(args.minutes, Path(args.cache))
    with tempfile.TemporaryDirectory() as work:
        engine = load_engine(ModelOptions(str(build_tiny_model(Path(work) / "tiny")), dtype="float32"))
        base = {
            "sampling": {"fps": 1.0, "min_pixels": 448 * 256, "max_pixels": 448 * 256},
            "generation": {"max_new_tokens": 16, "temperature": 0.0},
            "cache": {"dir": str(Path(work) / "features")},
        }
        options = load_options(overrides={**base, "context": {"max_context": 262144}})

        one_job, cold, cold_s = summarize(engine, video, options, "Summarize the video.")
        _, warm, warm_s = summarize(engine, video, options, "List the highlights.")
        print(json.dumps({
            "test": "feature cache", "minutes": args.minutes,
            "cold_s": round(cold_s, 2), "cold_stages_s": {k: round(v, 2) for k, v in cold.timings.items()},
            "warm_s": round(warm_s, 2), "warm_stages_s": {k: round(v, 2) for k, v in warm.timings.items()},
            "speedup": round(cold_s / warm_s, 2),
        }), flush=True)  # fmt: skip

        if args.skip_segments:
            return
        tokens = one_job.plan.tokens
        split = load_options(overrides={**base, "context": {"max_context": tokens // 2 + 4096}})
        seg_job, seg, seg_s = summarize(engine, video, split, "Summarize the video.")
        print(json.dumps({
            "test": "segments vs one pass (both with a cold feature cache)", "minutes": args.minutes,
            "one_pass_tokens": tokens, "one_pass_s": round(cold_s, 2),
            "segments": len(seg_job.parts), "segment_context": split.context.max_context,
            "segmented_s": round(seg_s, 2), "segmented_prefill_tokens": seg.prefill_tokens,
            "ratio": round(seg_s / cold_s, 2),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
