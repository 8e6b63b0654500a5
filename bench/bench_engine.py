"""Engine benchmark: first-turn time by stage, follow-up time to first token with and without cache reuse,
peak memory, at real 1 fps lengths.

    python bench/bench_engine.py --minutes 10 45                 # CPU, tiny random Qwen3-VL
    python bench/bench_engine.py --arch 2b --minutes 45          # CUDA, real Qwen3-VL-2B shapes, random weights
    bash bench/gpu.sh                                            # the prepared GPU run (see that script)

Each length runs in its own process so that its peak memory is its own. Test videos (448x256, 30 fps
H.264) are made once under --cache: with ffmpeg's testsrc2 where ffmpeg is installed, else with PyAV
(its wheels bundle FFmpeg and libx264), a moving gradient; ``--video-maker`` chooses. Results go to
stdout as one JSON line per run; bench/RESULTS_engine.md records them with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
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


VIDEO_SIZE = (448, 256)  # width, height of the test videos, pixels
VIDEO_RATE = 30  # frames per second of the test videos
VIDEO_GOP = 60  # frames between keyframes: sampling 1 fps decodes every frame, as with real videos


def make_video(minutes: float, cache: Path, maker: str = "auto") -> Path:
    """The test video of ``minutes``, made once under ``cache``; ``maker`` is ffmpeg, pyav or auto."""
    if maker == "auto":
        maker = "ffmpeg" if shutil.which("ffmpeg") else "pyav"
    name = "testsrc2" if maker == "ffmpeg" else "pyav"
    w, h = VIDEO_SIZE
    path = cache / f"{name}-{minutes:g}min-{w}x{h}.mp4"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp.mp4")
    if maker == "ffmpeg":
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc2=size={w}x{h}:rate={VIDEO_RATE}:duration={minutes * 60:g}",
             "-c:v", "libx264", "-preset", "ultrafast", "-g", str(VIDEO_GOP), "-pix_fmt", "yuv420p", str(tmp)],
            check=True,
        )  # fmt: skip
    else:
        _write_pyav_video(tmp, round(minutes * 60 * VIDEO_RATE))
    tmp.rename(path)  # a run killed while writing leaves no half video behind
    return path


def _write_pyav_video(path: Path, frames: int) -> None:
    """Encode ``frames`` frames with PyAV's libx264 (no ffmpeg program needed): a gradient scrolling
    3 px per frame under a moving white box, so that every frame differs. The video is cut into runs of
    whole GOPs encoded by one process per core, then joined by copying packets (each run starts with a
    keyframe, and identical settings give identical stream headers). About 290 frames/s per core here
    (2 shared cores): 150 minutes, 270,000 frames, should take about a minute on 16 cores."""
    import av

    gops = -(-frames // VIDEO_GOP)
    parts = max(1, min(_free_cores(), gops))
    bounds = [round(gops * i / parts) * VIDEO_GOP for i in range(parts)] + [frames]
    pieces = [path.with_name(f"{path.name}.part{i}.mp4") for i in range(parts)]
    if parts == 1:
        _encode_frames(path, 0, frames, 0)
        return
    with ProcessPoolExecutor(parts) as pool:
        list(pool.map(_encode_frames, pieces, bounds[:-1], bounds[1:], [1] * parts))
    with av.open(str(pieces[0])) as first, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(first.streams.video[0])
        for piece, start in zip(pieces, bounds, strict=False):
            with av.open(str(piece)) as src:
                video = src.streams.video[0]
                offset = round(Fraction(start, VIDEO_RATE) / video.time_base)  # in the piece's time base
                for packet in src.demux(video):
                    if packet.dts is None:  # the demuxer's empty packet at the end
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = stream
                    out.mux(packet)
            piece.unlink()


def _encode_frames(path: Path, start: int, end: int, threads: int) -> None:
    """Frames ``start`` to ``end`` (exclusive) of the PyAV test video into ``path``; ``threads`` 0 = auto."""
    import av
    import numpy as np

    w, h = VIDEO_SIZE
    x = np.arange(w, dtype=np.int64)[None, :]
    y = np.arange(h, dtype=np.int64)[:, None]
    loop = []  # 5 s of pictures, converted once and reused
    for i in range(5 * VIDEO_RATE):
        image = np.empty((h, w, 3), np.uint8)  # [H, W, RGB]
        image[..., 0] = (x + 3 * i) % 256
        image[..., 1] = (2 * y + i) % 256
        image[..., 2] = 128
        left = 7 * i % (w - 64)
        image[h // 3 : h // 3 + 64, left : left + 64] = 255
        loop.append(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p"))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=VIDEO_RATE, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = VIDEO_GOP
        stream.codec_context.thread_count = threads
        for i in range(start, end):
            frame = loop[i % len(loop)]
            frame.pts = i - start  # time base 1/VIDEO_RATE; the join shifts each piece to its place
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _free_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    import transformers

    from qwen3vl_summarizer.events import TurnStats
    from qwen3vl_summarizer.options import load_options
    from qwen3vl_summarizer.summarize import open_video

    minutes = args.minutes[0]
    video = make_video(minutes, Path(args.cache), args.video_maker)
    if args.attention == "sdpa":  # the plain masked sdpa path, for comparison (the CPU default is split)
        import qwen3vl_summarizer.loading

        qwen3vl_summarizer.loading.use_split_attention = lambda model: False
    with tempfile.TemporaryDirectory() as work:
        engine = load_engine(args.arch, Path(work))
    overrides = {
        "sampling": {"fps": 1.0, "min_pixels": args.min_pixels, "max_pixels": 448 * 256},
        "context": {"max_context": 262144, "prefill_chunk_size": args.chunk},
        "generation": {"max_new_tokens": args.new_tokens, "temperature": 0.0},
    }
    if args.no_feature_cache:
        overrides["cache"] = {"enabled": False}
    options = load_options(overrides=overrides)
    result = {"arch": args.arch, "minutes": minutes, "device": str(engine.device), "chunk": args.chunk}
    result["attention"] = engine.config.text_config._attn_implementation
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name()
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}

    def turn(session, question):
        t0 = time.perf_counter()
        for event in session.ask(question):
            if isinstance(event, TurnStats):
                return event, time.perf_counter() - t0
        raise RuntimeError("no stats")

    job = open_video(engine, video, options, "Summarize the video.")
    result["plan"] = job.plan.summary()
    if not job.plan.fits:  # only the first segment's session is measured below
        result["segments"] = len(job.plan.segments)
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
    p.add_argument(
        "--min-pixels",
        type=int,
        default=448 * 256,
        help="smallest frame area (frames are 448x256 at most); lower it to fit long videos into one "
        "context instead of splitting them into segments",
    )
    p.add_argument(
        "--no-feature-cache", action="store_true", help="do not read or write the vision-feature cache"
    )
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "qwen3vl-bench"))
    p.add_argument(
        "--video-maker",
        choices=["auto", "ffmpeg", "pyav"],
        default="auto",
        help="make test videos with the ffmpeg program (testsrc2) or PyAV; auto = ffmpeg when installed",
    )
    p.add_argument("--prepare", action="store_true", help="only make the test videos, then exit")
    p.add_argument(
        "--attention",
        choices=["split", "sdpa"],
        default="split",
        help="CPU prefill attention: split past/chunk (default) or one masked sdpa call",
    )
    args = p.parse_args()
    if args.prepare:
        for minutes in args.minutes:
            t0 = time.perf_counter()
            path = make_video(minutes, Path(args.cache), args.video_maker)
            made_s = round(time.perf_counter() - t0, 1)
            print(json.dumps({"video": str(path), "minutes": minutes, "made_s": made_s}), flush=True)
        return
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
