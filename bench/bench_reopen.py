"""Reopening a video from the library (jobs.reopen_job), on the tiny random Qwen3-VL of the tests, CPU.

    python bench/bench_reopen.py                 # a 10-minute video at 1 fps
    python bench/bench_reopen.py --minutes 2

A video is summarised and asked one question with recording on; then, its file deleted, it is reopened
from the library and asked a second question, which is compared with the same question asked on the
original job (its KV cache still live) and on the video opened afresh without a feature cache (decoded and
encoded again). Reported (one JSON line): what the run keeps for reopening (bytes of its parts and turns
in the library), seconds to reopen (``reopen_job``: library read and checks), and for each way of asking
the second question its time to first token, prefill tokens, whether it read the video, and whether its
tokens equal the original's. The tiny model's vision tower and prefill are cheap next to the real 2B's,
so the ratios understate what reopening saves there; the mechanics are the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen3vl_summarizer.jobs import open_job, reopen_job  # noqa: E402
from qwen3vl_summarizer.library import Library  # noqa: E402
from qwen3vl_summarizer.loading import load_engine  # noqa: E402
from qwen3vl_summarizer.options import ModelOptions, load_options  # noqa: E402
from tests.tiny_model import build_tiny_model  # noqa: E402
from tests.videos import write_video  # noqa: E402

PROMPT = "Summarize the video."
FIRST, SECOND = "What happens first?", "And at the end?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the test video")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-reopen-") as tmp:
        folder = Path(tmp)
        engine = load_engine(ModelOptions(str(build_tiny_model(folder / "model", seed=0)), device="cpu",
                                          dtype="float32"))  # fmt: skip
        overrides = {
            "sampling": {"fps": 1.0, "min_pixels": 128 * 96, "max_pixels": 128 * 96},
            "context": {"max_context": 65536},
            "generation": {"max_new_tokens": 16, "temperature": 0.0, "repetition_penalty": 1.0},
            "cache": {"enabled": True, "dir": str(folder / "features")},
            "speech": {"mode": "off"},
        }
        opts = load_options(overrides=overrides, environ={})
        video = folder / "talk.mp4"
        write_video(video, [i * 0.5 for i in range(int(args.minutes * 120))])
        lib = Library(folder / "library.db")

        job = open_job(engine, video, opts, PROMPT)
        recorder = lib.record(job, "summarize", "general")
        for question in (PROMPT, FIRST):
            for _ in recorder.tap(job.ask(question).events(), question):
                pass
        recorder.finish()
        live = job.ask(SECOND).stats

        fresh = open_job(engine, video, opts.replace(cache={"enabled": False}), PROMPT)
        fresh.ask(PROMPT).stats  # noqa: B018
        fresh.ask(FIRST).stats  # noqa: B018
        fresh.release()
        afresh = fresh.ask(SECOND).stats  # the conversation rebuilt by decoding and encoding the video

        video.unlink()
        t0 = time.perf_counter()
        reopened = reopen_job(engine, lib, recorder.video_id, opts)
        reopen_s = time.perf_counter() - t0
        again = reopened.ask(SECOND).stats
        kept = lib._read(
            "SELECT (SELECT sum(length(prompt_ids) + length(answer_ids) + length(question) + length(text)) "
            "FROM part_turns WHERE run_id = ?) + (SELECT sum(length(speech) + length(summary) + 64) FROM parts "
            "WHERE run_id = ?) + length(opened) + length(conversation) FROM runs WHERE id = ?",
            (recorder.run_id,) * 3,
        )[0][0]

        def turn(stats) -> dict:
            return {
                "ttft_s": round(stats.ttft_s, 3),
                "prefill_tokens": stats.prefill_tokens,
                "read_video": stats.read_video,
                "same_tokens": stats.tokens == live.tokens,
            }

        print(json.dumps({
            "minutes": args.minutes,
            "frames": job.plan.frames,
            "video_tokens": job.session.media_tokens,
            "kept_bytes": kept,
            "reopen_s": round(reopen_s, 4),
            "live_cache": turn(live),
            "reopened_from_features": turn(again),
            "rebuilt_by_decoding": turn(afresh),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
