"""Engine benchmark: first-turn time by stage, follow-up time to first token with and without cache reuse,
peak memory, at real 1 fps lengths.

    python bench/bench_engine.py --minutes 10 45                 # CPU, tiny random Qwen3-VL
    python bench/bench_engine.py --arch 2b --minutes 45          # CUDA, real Qwen3-VL-2B shapes, random weights

Each length runs in its own process so that its peak memory is its own. Test videos (448x256, 30 fps
H.264, ffmpeg's testsrc2) are made once under --cache. Results go to stdout as one JSON line per run;
bench/RESULTS_engine.md records them with the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Qwen3-VL-2B-Instruct's shapes (its config.json), for random-weight runs that need no download.
QWEN3VL_2B_TEXT = dict(
    hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                     "mrope_interleaved": True},
)  # fmt: skip
QWEN3VL_2B_VISION = dict(
    depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
    num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17],
)  # fmt: skip


def make_video(minutes: float, cache: Path) -> Path:
    path = cache / f"testsrc2-{minutes:g}min-448x256.mp4"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc2=size=448x256:rate=30:duration={minutes * 60:g}",
             "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p", str(path) + ".tmp.mp4"],
            check=True,
        )  # fmt: skip
        Path(str(path) + ".tmp.mp4").rename(path)
    return path


def load_engine(arch: str, work: Path):
    import torch

    from qwen3vl_summarizer.engine import Engine
    from qwen3vl_summarizer.tiny_model import build_tiny_model

    folder = build_tiny_model(work / "tiny")
    if arch == "tiny":
        return Engine.load(str(folder), dtype="float32")
    from transformers import AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tiny = Qwen3VLConfig.from_pretrained(folder)  # keeps the tiny tokenizer's special token ids
    config = Qwen3VLConfig(
        text_config={**tiny.text_config.to_dict(), **QWEN3VL_2B_TEXT},
        vision_config={**tiny.vision_config.to_dict(), **QWEN3VL_2B_VISION},
        image_token_id=tiny.image_token_id, video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id, vision_end_token_id=tiny.vision_end_token_id,
        tie_word_embeddings=True,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    device, dtype = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    with torch.device(device):  # random init in place: no download, no 4 GB copy from the CPU
        model = Qwen3VLForConditionalGeneration(config).to(dtype)
    return Engine(model, AutoProcessor.from_pretrained(folder), "qwen3-vl-2b-random")


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from qwen3vl_summarizer.engine import TurnStats
    from qwen3vl_summarizer.options import load_options
    from qwen3vl_summarizer.summarize import open_video

    minutes = args.minutes[0]
    video = make_video(minutes, Path(args.cache))
    if args.attention == "sdpa":  # the plain masked sdpa path, for comparison (the CPU default is split)
        import qwen3vl_summarizer.engine

        qwen3vl_summarizer.engine.use_split_attention = lambda model: False
    with tempfile.TemporaryDirectory() as work:
        engine = load_engine(args.arch, Path(work))
    options = load_options(
        overrides={
            "sampling": {"fps": 1.0, "min_pixels": 448 * 256, "max_pixels": 448 * 256},
            "context": {"max_context": 262144, "prefill_chunk_size": args.chunk},
            "generation": {"max_new_tokens": args.new_tokens, "temperature": 0.0},
        }
    )
    result = {"arch": args.arch, "minutes": minutes, "device": str(engine.device), "chunk": args.chunk}
    result["attention"] = engine.config.text_config._attn_implementation

    def turn(session, question):
        t0 = time.perf_counter()
        for event in session.ask(question):
            if isinstance(event, TurnStats):
                return event, time.perf_counter() - t0
        raise RuntimeError("no stats")

    job = open_video(engine, video, options, "Summarize the video.")
    result["plan"] = job.plan.summary()
    first, wall = turn(job.session, "Summarize the video.")
    result |= {
        "prompt_tokens": job.session.media_tokens + len(job.session.turns[0].prompt_ids),
        "first_turn_s": round(wall, 2),
        "first_ttft_s": round(first.ttft_s, 2),
        "stages_s": {k: round(v, 2) for k, v in first.timings.items()},
        "decode_tokens_per_s": round(first.decode_tokens_per_s, 1),
    }
    follow, _ = turn(job.session, "What is on screen at 05:00?")
    result["followup_reuse"] = {"ttft_s": round(follow.ttft_s, 4), "prefill_tokens": follow.prefill_tokens}
    if not args.skip_no_reuse:
        slow = open_video(engine, video, options, "Summarize the video.", cache_reuse=False)
        turn(slow.session, "Summarize the video.")
        follow_slow, _ = turn(slow.session, "What is on screen at 05:00?")
        result["followup_no_reuse"] = {
            "ttft_s": round(follow_slow.ttft_s, 2),
            "prefill_tokens": follow_slow.prefill_tokens,
        }
        result["reuse_speedup"] = round(follow_slow.ttft_s / follow.ttft_s, 1)
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    if torch.cuda.is_available():
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 45])
    p.add_argument("--arch", choices=["tiny", "2b"], default="tiny")
    p.add_argument("--chunk", type=int, default=2048, help="prefill chunk size, tokens")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument(
        "--skip-no-reuse", action="store_true", help="skip the slow recompute-everything comparison"
    )
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "qwen3vl-bench"))
    p.add_argument(
        "--attention",
        choices=["split", "sdpa"],
        default="split",
        help="CPU prefill attention: split past/chunk (default) or one masked sdpa call",
    )
    args = p.parse_args()
    if len(args.minutes) == 1:
        print(json.dumps(run_one(args)), flush=True)
        return
    rest, skip = [], False
    for a in sys.argv[1:]:  # drop --minutes and its values; each child gets one length
        skip = a == "--minutes" or (skip and not a.startswith("--"))
        if not skip:
            rest.append(a)
    for minutes in args.minutes:  # one process per length: peak memory is per run
        subprocess.run([sys.executable, __file__, *rest, "--minutes", f"{minutes:g}"], check=True)


if __name__ == "__main__":
    main()
