"""Engine benchmark: first-turn time by stage, follow-up time to first token with and without cache reuse,
peak memory, at real 1 fps lengths.

    python bench/bench_engine.py --minutes 10 45                 # CPU, tiny random Qwen3-VL
    python bench/bench_engine.py --minutes 10 45 --plain --skip-no-reuse  # and the plain path: ratios
    python bench/bench_engine.py --minutes 10 --plain --skip-no-reuse --repeat 3  # both shapes, both paths
    python bench/bench_engine.py --arch 2b --minutes 45          # CUDA, real Qwen3-VL-2B shapes, random weights
    bash bench/gpu.sh                                            # the prepared GPU run (see that script)

Each length runs in its own process so that its peak memory is its own. ``--plain`` adds, for each
length, the plain transformers path (``processor(...)`` + ``model.generate`` on the frames decoded
beforehand) in a process of its own right after the engine's, and a ``compare`` line with the ratios
engine/plain of time to first token and peak RSS, measured in the same run; each run also carries
``others_cores``, the CPU time the rest of the machine spent meanwhile (a shared machine: compare the
rounds where it stayed near 0). Two ways into the engine are
timed (``--paths``): its API (``open_job`` + ``ask``) and the command line as a person runs it
(``qwen3vl-summarize summarize VIDEO`` with the shipped defaults, the feature cache off, speech ``auto``),
in process, the model loaded before the clock starts as for the other paths. The tiny model comes in two
shapes (``--shapes``, SHAPES): the test suite's, and a shallower one on which the win must hold too. Test videos (448x256, 30 fps
H.264) are made once under --cache: with ffmpeg's testsrc2 where ffmpeg is installed, else with PyAV
(its wheels bundle FFmpeg and libx264), a moving gradient; ``--video-maker`` chooses. Results go to
stdout as one JSON line per run; bench/RESULTS_engine.md records them with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests/tiny_model.py

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


# The tiny model's shapes (overrides of tiny_model.build_tiny_model's configs). "suite": the test suite's
# (4 text layers, 3 vision layers). "shallow": issue 18's other shape, 2 text layers and a 2-layer vision
# tower (one DeepStack feature per vision layer, as the suite's), the rest alike.
SHAPES = {
    "suite": ({}, {}),
    "shallow": (
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=128),
        dict(hidden_size=32, depth=2, num_heads=2, out_hidden_size=64, deepstack_visual_indexes=[0, 1]),
    ),
}  # fmt: skip

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


def tiny_folder(work: Path, shape: str = "suite") -> Path:
    from tests.tiny_model import build_tiny_model

    text, vision = SHAPES[shape]
    return build_tiny_model(work / "tiny", text=text, vision=vision)


def load_engine(arch: str, work: Path, shape: str = "suite"):
    from qwen3vl_summarizer.engine import Engine
    from qwen3vl_summarizer.loading import load_engine as load
    from qwen3vl_summarizer.options import ModelOptions

    folder = tiny_folder(work, shape)
    if arch == "tiny":
        return load(ModelOptions(str(folder), dtype="float32"))
    return Engine(*_random_2b(folder), "qwen3-vl-2b-random")


def load_plain(arch: str, work: Path, shape: str = "suite"):
    """(model, processor) as a transformers user loads them: ``from_pretrained``, sdpa, nothing of ours
    (no split attention, no engine settings)."""
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    folder = tiny_folder(work, shape)
    if arch != "tiny":
        return _random_2b(folder)
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        folder, dtype="float32", attn_implementation="sdpa"
    )
    return model.eval(), AutoProcessor.from_pretrained(folder)


def _random_2b(folder: Path):
    """(model, processor): Qwen3-VL-2B's architecture at random weights, with the tiny folder's tokenizer."""
    import torch
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
    torch.manual_seed(0)  # the same weights in the engine's and the plain path's processes
    with torch.device(device):  # random init in place: no download, no 4 GB copy from the CPU
        model = Qwen3VLForConditionalGeneration(config).to(dtype)
    return model.eval(), AutoProcessor.from_pretrained(folder)


def run_one(args: argparse.Namespace) -> dict:
    import torch
    import transformers

    from qwen3vl_summarizer.events import TextDelta, TurnStats
    from qwen3vl_summarizer.jobs import open_job
    from qwen3vl_summarizer.options import load_options

    minutes = args.minutes[0]
    video = make_video(minutes, Path(args.cache), args.video_maker)
    if args.attention == "sdpa":  # the plain masked sdpa path, for comparison (the CPU default is split)
        import qwen3vl_summarizer.loading

        qwen3vl_summarizer.loading.use_split_attention = lambda model: False
    with tempfile.TemporaryDirectory() as work:
        engine = load_engine(args.arch, Path(work), args.shapes[0])
    fresh_cache = None
    if args.plain and not args.no_feature_cache:  # a first read, as the first summary of a new video
        fresh_cache = tempfile.TemporaryDirectory(prefix="qwen3vl-bench-features-")
    options = load_options(overrides=_overrides(args, fresh_cache and fresh_cache.name))
    result = {"path": "engine", "arch": args.arch, "shape": args.shapes[0], "minutes": minutes}
    result["device"] = str(engine.device)
    result["chunk"] = options.context.prefill_chunk_size
    result["vision_batch_groups"] = options.context.vision_batch_groups
    result["kv_cache_dtype"] = options.context.kv_cache_dtype
    result["attention"] = engine.config.text_config._attn_implementation
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name()
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}

    def turn(session, question):
        """The turn's stats, its wall time and the process's CPU time to its first token (all threads)."""
        t0, c0, cpu = time.perf_counter(), time.process_time(), None
        for event in session.ask(question).events():
            if cpu is None and isinstance(event, (TextDelta, TurnStats)):
                cpu = time.process_time() - c0
            if isinstance(event, TurnStats):
                return event, time.perf_counter() - t0, cpu
        raise RuntimeError("no stats")

    job = open_job(engine, video, options, PROMPT)
    result["plan"] = job.plan.summary()
    if not job.plan.fits:  # only the first segment's session is measured below
        result["segments"] = len(job.plan.segments)
    first, wall, cpu = turn(job.session, PROMPT)
    result |= {
        "prompt_tokens": job.session.media_tokens + len(job.session.turns[0].prompt_ids),
        "first_turn_s": round(wall, 2),
        "first_ttft_s": round(first.ttft_s, 2),
        "cpu_s": round(cpu, 2),  # CPU time of every thread of the process to the first token
        "stages_s": {k: round(v, 2) for k, v in first.timings.items()},
        "decode_tokens_per_s": round(first.decode_tokens_per_s, 1),
        "first_token": first.tokens[0] if first.tokens else None,
        "first_turn_peak_rss_gib": _peak_rss_gib(),  # before the follow-ups and the no-reuse comparison
    }
    result["kv_cache_dtype_used"] = str(job.session.kv_cache_dtype).removeprefix("torch.")
    if torch.cuda.is_available():
        result["first_turn_peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    follow, _, _ = turn(job.session, "What is on screen at 05:00?")
    result["followup_reuse"] = {"ttft_s": round(follow.ttft_s, 4), "prefill_tokens": follow.prefill_tokens}
    if not args.skip_no_reuse:
        slow = open_job(engine, video, options, PROMPT, cache_reuse=False)
        turn(slow.session, PROMPT)
        follow_slow, _, _ = turn(slow.session, "What is on screen at 05:00?")
        result["followup_no_reuse"] = {
            "ttft_s": round(follow_slow.ttft_s, 2),
            "prefill_tokens": follow_slow.prefill_tokens,
        }
        result["reuse_speedup"] = round(follow_slow.ttft_s / follow.ttft_s, 1)
    result["peak_rss_gib"] = _peak_rss_gib()
    if torch.cuda.is_available():
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if fresh_cache is not None:
        fresh_cache.cleanup()
    return result


def run_plain(args: argparse.Namespace) -> dict:
    """The plain transformers path on the same frames: ``processor(...)`` then ``model.generate``.

    What a transformers user writes (the chat template with the same prompt and the same per-group
    layout as the engine, real frame times as ``video_metadata``), on the model loaded plainly (sdpa,
    none of the engine's attention). The frames are decoded and stacked before the clock starts, so its
    time to first token is processor + vision + one prefill pass, while the engine's includes decoding.
    """
    import numpy as np
    import torch
    import transformers
    from transformers.video_utils import VideoMetadata

    from qwen3vl_summarizer.engine import Engine
    from qwen3vl_summarizer.jobs import open_job
    from qwen3vl_summarizer.options import load_options

    minutes = args.minutes[0]
    video = make_video(minutes, Path(args.cache), args.video_maker)
    with tempfile.TemporaryDirectory() as work:
        model, processor = load_plain(args.arch, Path(work), args.shapes[0])
    options = load_options(overrides=_overrides(args, None) | {"cache": {"enabled": False}})
    # The engine wrapper only plans (probe, frame size) and samples, exactly as for the engine's run.
    job = open_job(Engine(model, processor, "plain"), video, options, PROMPT)
    frames = list(job.parts[0].frames)
    pixels = np.stack([f.image for f in frames])  # [T, H, W, 3] uint8
    meta = VideoMetadata(
        total_num_frames=len(frames), fps=1000.0, frames_indices=[round(f.t * 1000) for f in frames]
    )
    del frames
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # The engine's layout (engine.py's docstring): no outer vision span around the per-group spans.
    triple = processor.vision_start_token + processor.video_token + processor.vision_end_token
    text = text.replace(triple, processor.video_token)
    model.model.rope_deltas = None
    t0, c0 = time.perf_counter(), time.process_time()
    inputs = processor(
        text=[text],
        videos=[pixels],
        video_metadata=[meta],
        do_sample_frames=False,
        do_resize=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    ).to(model.device)
    t_processor = time.perf_counter() - t0
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=1,
            do_sample=False,
            repetition_penalty=options.generation.repetition_penalty,  # as the engine's first token
        )
    ttft, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {"path": "plain", "arch": args.arch, "shape": args.shapes[0], "minutes": minutes}
    result["device"] = str(model.device)
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    result |= {
        "frames": int(pixels.shape[0]),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "first_ttft_s": round(ttft, 2),
        "cpu_s": round(cpu, 2),
        "stages_s": {"processor": round(t_processor, 2), "generate": round(ttft - t_processor, 2)},
        "first_token": int(out[0, -1]),
        "peak_rss_gib": _peak_rss_gib(),
    }
    if torch.cuda.is_available():
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def run_cli(args: argparse.Namespace) -> dict:
    """The command line's first turn: ``qwen3vl-summarize summarize VIDEO`` run in process with the
    shipped defaults (speech ``auto``, context ``auto``), the feature cache off, ``--new-tokens`` tokens,
    the other paths' prompt (so that all do the same work).

    The model is loaded before the clock starts (``loading.load_engine`` hands the loaded one to the
    CLI), as the plain path's is; the time to first token is when the answer's first text reaches stdout,
    everything before it counted: options, probing, speech sourcing, planning, decoding, vision, prefill.
    """
    import io

    import torch

    from qwen3vl_summarizer import cli, loading
    from qwen3vl_summarizer import jobs as job_api

    minutes = args.minutes[0]
    video = make_video(minutes, Path(args.cache), args.video_maker)
    with tempfile.TemporaryDirectory() as work:
        engine = load_engine(args.arch, Path(work), args.shapes[0])
    loading.load_engine = lambda options, model_id=None: engine
    jobs = []
    open_video = job_api.open_video  # what jobs.open_job calls: keeps the CLI's job for its figures
    job_api.open_video = lambda *a, **k: jobs.append(open_video(*a, **k)) or jobs[-1]
    os.environ["QWEN3VL_CACHE__ENABLED"] = "false"

    class FirstWrite(io.StringIO):
        first: float | None = None

        first_cpu: float | None = None

        def write(self, text: str) -> int:
            if text and self.first is None:
                self.first, self.first_cpu = time.perf_counter(), time.process_time()
            return super().write(text)

    out, saved = FirstWrite(), sys.stdout
    argv = ["summarize", str(video), "--model", "bench-loaded", "--prompt-text", PROMPT]
    argv += ["--max-new-tokens", str(args.new_tokens)]
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        sys.stdout = out
        code = cli.main(argv)
    finally:
        sys.stdout = saved
    if code != 0 or out.first is None:
        raise RuntimeError(f"qwen3vl-summarize {' '.join(argv)} exited {code} without an answer")
    (job,) = jobs
    first = job.answers[0]
    result = {"path": "cli", "arch": args.arch, "shape": args.shapes[0], "minutes": minutes}
    result |= {
        "device": str(engine.device),
        "command": "qwen3vl-summarize " + " ".join(argv),
        "speech": job.options.speech.mode,
        "transcript": job.transcript is not None or job.pending_speech is not None,
        "plan": job.plan.summary(),
        "prompt_tokens": job.session.media_tokens + len(job.session.turns[0].prompt_ids),
        "first_ttft_s": round(out.first - t0, 2),
        "cpu_s": round(out.first_cpu - c0, 2),
        "engine_ttft_s": round(first.ttft_s, 2),
        "stages_s": {k: round(v, 2) for k, v in first.timings.items()},
        "first_token": first.tokens[0] if first.tokens else None,
        "first_turn_peak_rss_gib": _peak_rss_gib(),
    }
    if torch.cuda.is_available():
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def compare(engine: dict, plain: dict) -> dict:
    """The ratios of one length: engine (its API or the CLI) over plain, time to first token and peak
    memory."""
    row = {
        "path": engine["path"],
        "shape": engine.get("shape"),
        "minutes": engine["minutes"],
        "prompt_tokens": engine["prompt_tokens"],
        "same_prompt_tokens": engine["prompt_tokens"] == plain["prompt_tokens"],
        "same_first_token": engine["first_token"] == plain["first_token"],
        "ttft_engine_s": engine["first_ttft_s"],
        "ttft_plain_s": plain["first_ttft_s"],
        "ttft_ratio": round(engine["first_ttft_s"] / plain["first_ttft_s"], 3),
        "cpu_ratio": round(engine["cpu_s"] / plain["cpu_s"], 3),
        "rss_engine_gib": engine["first_turn_peak_rss_gib"],
        "rss_plain_gib": plain["peak_rss_gib"],
        "rss_ratio": round(engine["first_turn_peak_rss_gib"] / plain["peak_rss_gib"], 3),
    }
    if "peak_gpu_gib" in engine and "peak_gpu_gib" in plain:
        row["gpu_ratio"] = round(engine["peak_gpu_gib"] / plain["peak_gpu_gib"], 3)
    return row


def summarize_pairs(rows: list[dict]) -> dict:
    """Median, lowest and highest of each ratio over ``--repeat`` pairs of one length."""
    out = {
        "path": rows[0]["path"],
        "shape": rows[0]["shape"],
        "minutes": rows[0]["minutes"],
        "pairs": len(rows),
    }
    for key in ("ttft_ratio", "cpu_ratio", "rss_ratio"):
        values = sorted(r[key] for r in rows)
        out[key] = {"median": round(statistics.median(values), 3), "min": values[0], "max": values[-1]}
    out["others_cores_max"] = max((r.get("others_cores") or 0.0 for r in rows), default=None)
    return out


PROMPT = "Summarize the video."


def _overrides(args: argparse.Namespace, feature_dir: str | None) -> dict:
    overrides = {
        "sampling": {"fps": 1.0, "min_pixels": args.min_pixels, "max_pixels": 448 * 256},
        "context": {
            "max_context": 262144,
            "prefill_chunk_size": args.chunk,  # None: the config's default
            "vision_batch_groups": args.vision_groups,
            "kv_cache_dtype": args.kv_cache_dtype,  # None: the config's default
        },
        "generation": {"max_new_tokens": args.new_tokens, "temperature": 0.0},
    }
    if args.no_feature_cache:
        overrides["cache"] = {"enabled": False}
    elif feature_dir is not None:
        overrides["cache"] = {"dir": feature_dir}
    return overrides


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _chunk(value: str) -> int | str:
    return "auto" if value == "auto" else int(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 45])
    p.add_argument("--arch", choices=["tiny", "2b"], default="tiny")
    p.add_argument(
        "--chunk",
        type=_chunk,
        default=None,
        help="prefill chunk size, tokens, or auto (default: the config's context.prefill_chunk_size)",
    )
    p.add_argument(
        "--vision-groups",
        type=int,
        default=None,
        help="temporal groups per vision pass (default: the config's context.vision_batch_groups)",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="also run the plain transformers path (processor + generate on the decoded frames) on each "
        "length, in its own process, and print the ratios engine/plain of time to first token and peak RSS; "
        "the engine then reads the video afresh (a new feature cache) unless --no-feature-cache",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --plain: pairs of runs per length, alternating which path goes first, and a summary "
        "line with the median ratios (a shared machine's load varies from minute to minute)",
    )
    p.add_argument(
        "--kv-cache-dtype",
        choices=["auto", "bfloat16", "float8"],
        default=None,
        help="KV cache dtype (default: the config's context.kv_cache_dtype)",
    )
    p.add_argument("--path", choices=["engine", "cli", "plain"], default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--shapes",
        nargs="+",
        choices=list(SHAPES),
        default=None,
        help="shapes of the tiny model (SHAPES): the test suite's and a shallower one (default: both with "
        "--plain, else the suite's)",
    )
    p.add_argument(
        "--paths",
        nargs="+",
        choices=["engine", "cli"],
        default=["engine", "cli"],
        help="with --plain: the ways into the engine compared with the plain path: its API (open_job + "
        "ask) and the command line with the shipped defaults (default both)",
    )
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
    if args.shapes is None or args.arch != "tiny":
        args.shapes = list(SHAPES) if args.plain and args.arch == "tiny" else ["suite"]
    if args.prepare:
        for minutes in args.minutes:
            t0 = time.perf_counter()
            path = make_video(minutes, Path(args.cache), args.video_maker)
            made_s = round(time.perf_counter() - t0, 1)
            print(json.dumps({"video": str(path), "minutes": minutes, "made_s": made_s}), flush=True)
        return
    if args.path == "plain":
        print(json.dumps(run_plain(args)), flush=True)
        return
    if args.path == "cli":
        print(json.dumps(run_cli(args)), flush=True)
        return
    one = len(args.minutes) == 1 and len(args.shapes) == 1
    if args.path == "engine" or (one and not args.plain):
        print(json.dumps(run_one(args)), flush=True)
        return
    rest, skip = [], False
    for a in sys.argv[1:]:  # drop --minutes, --shapes and their values; each child gets one of each
        skip = a in ("--minutes", "--shapes") or (skip and not a.startswith("--"))
        if not skip:
            rest.append(a)
    for shape in args.shapes:
        for minutes in args.minutes:  # one process per length and path: peak memory is per run
            command = [sys.executable, __file__, *rest, "--shapes", shape, "--minutes", f"{minutes:g}"]
            if not args.plain:
                subprocess.run(command, check=True)
                continue
            _compare_paths(command, args.paths, args.repeat)


def _compare_paths(command: list[str], paths: list[str], repeat: int) -> None:
    """``repeat`` rounds of each of ``paths`` and the plain path, one after the other, never competing for
    the cores; the order rotates between rounds, so that a load that comes and goes on a shared machine
    does not always land on the same path. A compare line per path and round, then the medians."""
    order = [*paths, "plain"]
    rows: dict[str, list[dict]] = {path: [] for path in paths}
    for i in range(repeat):
        runs = {}
        for path in order[i % len(order) :] + order[: i % len(order)]:
            with _others_cpu() as others:
                out = subprocess.run(
                    [*command, "--path", path], check=True, stdout=subprocess.PIPE, text=True
                )
            line = out.stdout.strip().splitlines()[-1]
            runs[path] = json.loads(line) | {"load_average": os.getloadavg()[0], "others_cores": others.cores}
            print(json.dumps(runs[path]), flush=True)
        for path in paths:
            others = max(runs[path]["others_cores"] or 0.0, runs["plain"]["others_cores"] or 0.0)
            rows[path].append(compare(runs[path], runs["plain"]) | {"others_cores": round(others, 2)})
            print(json.dumps({"compare": rows[path][-1]}), flush=True)
    if repeat > 1:
        for path in paths:
            print(json.dumps({"summary": summarize_pairs(rows[path])}), flush=True)


class _OthersCpu:
    cores: float | None = None  # other processes' CPU time during the block, per second of wall time


@contextlib.contextmanager
def _others_cpu() -> Iterator[_OthersCpu]:
    """What the rest of the machine ran meanwhile: the CPU time every process spent (``/proc/stat``) less
    this process's children's, per second of the block's wall time. On a shared machine a run is
    comparable with another only where this stayed near 0 (the load average lags by a minute)."""
    result = _OthersCpu()
    busy0, children0, t0 = _busy_s(), _children_cpu_s(), time.perf_counter()
    yield result
    busy1, children1, t1 = _busy_s(), _children_cpu_s(), time.perf_counter()
    if busy0 is not None and busy1 is not None:
        result.cores = round(max(0.0, (busy1 - busy0) - (children1 - children0)) / (t1 - t0), 2)


def _busy_s() -> float | None:
    """Seconds of CPU time all processes spent since boot (Linux ``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal, not guest (counted in user)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
