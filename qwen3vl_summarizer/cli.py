"""Command line: ``qwen3vl-summarize plan|frames|summarize VIDEO ...``.

A thin layer: parse the flags into option overrides, call the library, print. Library errors become one
``error: ...`` line on stderr and exit code 1 (``--debug`` shows the traceback instead); argparse usage
errors exit 2; Ctrl-C exits 130.

``summarize`` also takes several videos or folders with ``--out DIR`` (a batch): the model is loaded once,
each video's ``--format`` files are written to ``DIR/<stem>.<ext>``, a video that fails is reported as
``error: <file>: ...`` and the others go on; a table on stderr ends the run, and the exit code is 1 when
any video failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .errors import OptionsError, SummarizerError
from .events import TurnStats
from .export import FORMATS, QUESTION_HEADING, get_writer, write_all
from .options import BACKENDS, KV_CACHE_DTYPES, QUANTIZATIONS, SPEECH_MODES, Options, load_options
from .plan import MemoryPlan, Plan, parse_size, parse_time
from .timestamps import format_timestamp

QUESTION_SEPARATOR = QUESTION_HEADING  # printed before each --ask answer

log = logging.getLogger(__name__)

PACKAGE_LOGGER = "qwen3vl_summarizer"
DEFAULT_PROMPT = "general"  # prompt template used by summarize, and by plan/frames to count its tokens
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout closed early (e.g. piped into `head`)
FRAME_NAME = "{t:010.3f}"  # JPEG file stem of a frame at t seconds: 000012.500
JPEG_QUALITY = 90
DEFAULT_FORMAT = "md"
TRANSCRIPT_FORMATS = ("srt", "vtt", "txt", "json")
DEFAULT_TRANSCRIPT_FORMAT = "srt"
# What a folder given to `summarize` expands to (its files, not its subfolders), by extension.
# --- arguments -------------------------------------------------------------------------------------------


def _context_arg(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tokens or 'auto', got {value!r}") from None


def _time_arg(value: str) -> float:
    try:
        return parse_time(value)
    except OptionsError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("time: ")) from None


def _memory_arg(value: str) -> int:
    try:
        return parse_size(value)
    except OptionsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_kv_cache_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kv-cache-dtype", choices=KV_CACHE_DTYPES,
        help="KV cache: bfloat16 = not quantized, float8 = e4m3 (half the bytes), auto = float8 only when "
        "the unquantized cache would not fit",
    )  # fmt: skip


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=BACKENDS,
        help="where the model runs: local (in this process, the default) | vllm (a vLLM server that "
        "serves --model)",
    )  # fmt: skip
    parser.add_argument(
        "--server-url", metavar="URL", help="the vLLM server, with --backend vllm (default: model.server_url)"
    )


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Global flags; on subcommands with SUPPRESS defaults so they don't clobber values given earlier."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="TOML settings file (default: the package's configs/default.toml)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default if suppress else False,
        help="show tracebacks and debug logging",
    )  # fmt: skip
    parser.add_argument(
        "--verbose", "-v", action="store_true", default=default if suppress else False,
        help="show progress on stderr even when it is not a terminal",
    )  # fmt: skip


def _formats_arg(value: str) -> list[str]:
    """``srt,vtt`` -> ["srt", "vtt"], each checked against the writers."""
    formats = [f for f in (part.strip() for part in value.split(",")) if f]
    if not formats:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(FORMATS)}, got {value!r}")
    try:
        return [get_writer(f).format for f in formats]
    except OptionsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_sampling(parser: argparse.ArgumentParser, batch: bool = False) -> None:
    if batch:
        parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or folders of videos")
    else:
        parser.add_argument("video", metavar="VIDEO", help="video file")
    parser.add_argument("--fps", type=float, help="frames per second sampled from the video (0, 30]")
    parser.add_argument(
        "--start", type=_time_arg, metavar="TIME", default=0.0,
        help="read the video from this time on: 90, 1:30 or 01:00:00 (default: its start); times in "
        "the output stay on the whole video's clock",
    )  # fmt: skip
    parser.add_argument(
        "--end", type=_time_arg, metavar="TIME", help="read the video up to this time (default: its end)"
    )
    parser.add_argument(
        "--max-context", type=_context_arg, metavar="N", help="context length in tokens, or 'auto'"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen3vl-summarize",
        description="Turn a video into a timestamped Markdown summary with Qwen3-VL, then answer follow-ups.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("plan", help="show how the video fits the context (no model needed)")
    _add_sampling(p)
    _add_kv_cache_dtype(p)
    p.add_argument(
        "--device-memory", type=_memory_arg, metavar="SIZE",
        help="plan for a GPU of this much memory (24GB, 24GiB, 80G; a bare G or GB is 10^9 bytes): say "
        "whether Qwen3-VL-2B's bf16 weights, the KV cache at the full context and headroom fit it, and "
        "size an 'auto' context to it",
    )  # fmt: skip
    _add_backend(p)
    p.add_argument("--model", "-m", metavar="M", help="with --backend vllm: the model the server serves")
    _add_common(p, suppress=True)

    p = commands.add_parser("frames", help="decode and list the frames the model will see")
    _add_sampling(p)
    p.add_argument("--out", metavar="DIR", help="also write each frame as DIR/<seconds>.jpg")
    _add_common(p, suppress=True)

    p = commands.add_parser("summarize", help="stream a Markdown summary, then answer --ask questions")
    _add_sampling(p, batch=True)
    p.add_argument(
        "--format", "-f", action="append", type=_formats_arg, metavar="FMT",
        help=f"what to write for each video: {' | '.join(FORMATS)} (repeatable or comma-separated; "
        f"default: {DEFAULT_FORMAT})",
    )  # fmt: skip
    p.add_argument(
        "--out", "-o", metavar="DIR",
        help="write DIR/<video stem>.<ext> for each format instead of printing (needed for several videos)",
    )  # fmt: skip
    p.add_argument("--model", "-m", metavar="M", help="hub id or local folder of a Qwen3-VL model")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument(
        "--prompt", metavar="NAME", help=f"prompt template in prompts/ (default: {DEFAULT_PROMPT})"
    )
    prompt.add_argument("--prompt-file", metavar="FILE", help="read the prompt from a file")
    prompt.add_argument("--prompt-text", metavar="TEXT", help="the prompt itself")
    p.add_argument(
        "--prefill-chunk-size", type=_context_arg, metavar="N", help="tokens per prefill pass, or 'auto'"
    )
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="most tokens generated per answer")
    p.add_argument("--temperature", type=float, metavar="T", help="0 = greedy")
    p.add_argument(
        "--ask", action="append", default=[], metavar="QUESTION",
        help="a follow-up question about the same video (repeatable; answered in order)",
    )  # fmt: skip
    p.add_argument(
        "--no-cache-reuse", action="store_true", help="recompute every turn from scratch (for checking)"
    )
    p.add_argument("--device", metavar="D", help="auto | cuda | cuda:N | mps | cpu")
    p.add_argument("--dtype", metavar="D", help="auto | bfloat16 | float16 | float32")
    p.add_argument(
        "--quantization", choices=QUANTIZATIONS,
        help="quantize the weights while loading with bitsandbytes (CUDA only); default: none",
    )  # fmt: skip
    _add_kv_cache_dtype(p)
    _add_backend(p)
    _add_speech(p, choose_source=True)
    _add_no_library(p)
    _add_common(p, suppress=True)

    p = commands.add_parser("transcribe", help="write what is said in videos or audio files, with times")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video or audio files")
    p.add_argument(
        "--format", "-f", type=_transcript_formats_arg, metavar="FMT", default=[DEFAULT_TRANSCRIPT_FORMAT],
        help=f"{' | '.join(TRANSCRIPT_FORMATS)} (comma-separated; default: {DEFAULT_TRANSCRIPT_FORMAT})",
    )  # fmt: skip
    p.add_argument("--out", "-o", metavar="DIR", help="write DIR/<stem>.<format> instead of printing")
    _add_speech(p, choose_source=False)
    _add_no_library(p)
    _add_common(p, suppress=True)
    _add_library_commands(commands)
    return parser


def _add_speech(parser: argparse.ArgumentParser, choose_source: bool) -> None:
    if choose_source:
        parser.add_argument(
            "--speech", metavar="MODE|FILE",
            help="where what is said comes from: auto (a subtitle file next to the video, then subtitles "
            "inside it, then speech recognition) | subtitles | asr | off, or a .srt/.vtt file",
        )  # fmt: skip
    else:
        parser.add_argument(
            "--speech", choices=SPEECH_MODES,
            help="auto (subtitles next to or inside the file, else recognition) | subtitles | asr",
        )  # fmt: skip
    parser.add_argument(
        "--speech-model", metavar="M",
        help="faster-whisper model: a size (base, small, large-v3-turbo), hub id or local folder",
    )  # fmt: skip
    parser.add_argument(
        "--language", metavar="CODE", help="language of the speech, e.g. en (default: detect)"
    )


def _transcript_formats_arg(value: str) -> list[str]:
    formats = [f for f in (part.strip().lower() for part in value.split(",")) if f]
    unknown = [f for f in formats if f not in TRANSCRIPT_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(TRANSCRIPT_FORMATS)}, got {value!r}")
    return formats


def _options(args: argparse.Namespace) -> Options:
    """Config file < environment < flags."""
    get = lambda name: getattr(args, name, None)  # noqa: E731
    return load_options(
        args.config,
        overrides={
            "model": {
                "id": get("model"),
                "device": get("device"),
                "dtype": get("dtype"),
                "quantization": get("quantization"),
                "backend": get("backend"),
                "server_url": get("server_url"),
            },
            "sampling": {"fps": get("fps")},
            "context": {
                "max_context": get("max_context"),
                "prefill_chunk_size": get("prefill_chunk_size"),
                "kv_cache_dtype": get("kv_cache_dtype"),
            },
            "generation": {"max_new_tokens": get("max_new_tokens"), "temperature": get("temperature")},
            "speech": {
                "mode": get("speech") if get("speech") in SPEECH_MODES else None,
                "model": get("speech_model"),
                "language": get("language"),
            },
        },
    )


def _subtitle_file(args: argparse.Namespace) -> Path | None:
    """``--speech FILE``: the subtitle file to read instead of finding one (None for a mode)."""
    value = getattr(args, "speech", None)
    if value is None or value in SPEECH_MODES:
        return None
    path = Path(value)
    if not path.is_file():
        raise OptionsError(
            f"--speech {value}: not a mode ({', '.join(SPEECH_MODES)}) nor a subtitle file that exists"
        )
    return path


def _prompt_text(args: argparse.Namespace) -> str:
    from .prompts import load_prompt

    if getattr(args, "prompt_text", None) is not None:
        if not args.prompt_text.strip():
            raise OptionsError("--prompt-text is empty")
        return args.prompt_text
    prompt_file = getattr(args, "prompt_file", None)
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise OptionsError(f"prompt file not found: {path}")
        if path.name.endswith(".md"):  # a template file: front matter is read and removed
            return load_prompt(path.name, path.parent).text
        return path.read_text(encoding="utf-8").strip()
    return load_prompt(getattr(args, "prompt", None) or DEFAULT_PROMPT).text


# --- output helpers --------------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """``warning: message`` lines on the current ``sys.stderr``, each distinct warning once."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.seen: set[tuple[int, str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                key = (record.levelno, message)
                if key in self.seen:
                    return
                self.seen.add(key)
            prefix = record.levelname.lower()
            if record.levelno < logging.WARNING:
                prefix += f": {record.name}"
            text = f"{prefix}: {message}"
            if record.exc_info and self.level <= logging.DEBUG:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _Progress:
    """``stage n/N`` on one rewritten stderr line (a terminal), or one line per finished stage otherwise."""

    def __init__(self, enabled: bool, stream: TextIO) -> None:
        self.enabled = enabled
        self.stream = stream
        self.tty = enabled and stream.isatty()
        self.last: tuple[str, int, int] | None = None  # the latest (stage, done, total)

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write(f"\r\033[K{stage} {done}/{total}")
            self.stream.flush()
        elif self.last is not None and self.last[0] != stage:
            self._line(*self.last)
        self.last = (stage, done, total)

    def note(self, text: str) -> None:
        if self.enabled:
            self.clear()
            self._line(text)

    def clear(self) -> None:
        """End the progress line (before answer text or a note is printed)."""
        if self.last is not None:
            if self.tty:
                self.stream.write("\r\033[K")
                self.stream.flush()
            else:
                self._line(*self.last)
        self.last = None

    def _line(self, *parts: object) -> None:
        text = parts[0] if len(parts) == 1 else f"{parts[0]} {parts[1]}/{parts[2]}"
        self.stream.write(f"{text}\n")
        self.stream.flush()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _plan_dict(plan: Plan) -> dict[str, Any]:
    data = dataclasses.asdict(plan)
    data["fits"] = plan.fits
    data["context_share"] = plan.context_share
    return data


def _clock(seconds: float) -> str:
    return format_timestamp(seconds, hours=seconds >= 3600)


def _probe_and_plan(args: argparse.Namespace, options: Options) -> tuple[Any, Plan, MemoryPlan]:
    """Probe the video and plan it without a model (:func:`~.jobs.plan_for`), for Qwen3-VL-2B in bfloat16
    on a device of ``--device-memory`` bytes."""
    from .jobs import plan_for, planning_context
    from .plan import memory_plan
    from .video import probe

    info = probe(args.video)
    if options.model.backend != "local":  # the server's context, and the prompt it builds
        from .loading import load_engine

        engine = load_engine(options.model)
        context, geometry = planning_context(options, engine)
        plan = plan_for(info, options, _prompt_text(args), engine, start=args.start, end=args.end)
        return info, plan, memory_plan(context, geometry)
    device = getattr(args, "device_memory", None)
    context, geometry = planning_context(options, device_memory=device)
    plan = plan_for(info, options, _prompt_text(args), start=args.start, end=args.end, device_memory=device)
    return info, plan, memory_plan(context, geometry, device)


def _memory_dict(memory: MemoryPlan) -> dict[str, Any]:
    return {**dataclasses.asdict(memory), "total_bytes": memory.total_bytes, "fits": memory.fits}


# --- commands --------------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace, options: Options) -> int:
    info, plan, memory = _probe_and_plan(args, options)
    if args.json:
        _print_json(
            {"video": dataclasses.asdict(info), "plan": _plan_dict(plan), "memory": _memory_dict(memory)}
        )
        return 0
    audio = ", audio" if info.has_audio else ""
    print(f"{info.path}: {_clock(info.duration)} ({info.duration:.3f} s), {info.width}x{info.height}, "
          f"{info.fps:.3f} fps, {info.codec}{audio}")  # fmt: skip
    print(f"plan at {plan.fps:g} fps: {plan.summary()}")
    if not plan.fits:
        for s in plan.segments:
            print(f"  segment {s.index + 1}: {_clock(s.start)}-{_clock(s.end)}, {s.frames} frames, "
                  f"{s.tokens:,} tokens")  # fmt: skip
    if memory.device_bytes is not None:
        print(f"memory: {memory.summary()}")
    return 0


def cmd_frames(args: argparse.Namespace, options: Options) -> int:
    from .video import sample

    info, plan, _ = _probe_and_plan(args, options)
    stream = sample(args.video, plan.fps, (plan.width, plan.height), start=plan.start, end=plan.end)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    frames = []
    for frame in stream:
        item: dict[str, Any] = {"t": frame.t, "target": frame.target}
        if out is not None:
            item["file"] = str(_save_jpeg(frame.image, out, frame.t, used))
        frames.append(item)
        if not args.json:
            line = f"{frame.t:10.3f} s  (target {frame.target:.3f} s)"
            print(line + (f"  {item['file']}" if "file" in item else ""))
    if stream.damage:
        log.warning("%s", stream.damage)
    if args.json:
        _print_json({
            "video": info.path,
            "duration": info.duration,
            "fps": plan.fps,
            "width": plan.width,
            "height": plan.height,
            "damage": stream.damage,
            "frames": frames,
        })  # fmt: skip
    else:
        print(f"{len(frames)} frames at {plan.width}x{plan.height} ({plan.fps:g} fps) from {info.path}")
    return 0


def _save_jpeg(image, folder: Path, t: float, used: set[str]) -> Path:
    """Write ``image`` as ``folder/<t>.jpg``; a frame shown at several targets gets ``-2``, ``-3``..."""
    from PIL import Image

    stem = FRAME_NAME.format(t=t)
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    path = folder / f"{name}.jpg"
    Image.fromarray(image).save(path, quality=JPEG_QUALITY)
    return path


@dataclasses.dataclass
class _Result:
    """How one video of a run went: what the batch table shows."""

    path: Path
    ok: bool = False
    duration: float | None = None  # seconds of video
    frames: int | None = None  # frames the model saw
    tokens: int | None = None  # tokens computed: every turn's prefill plus its answer
    seconds: float = 0.0  # wall time spent on this video


def _check_summarize(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of ``summarize`` (exit 2); sets ``args.formats`` and ``args.paths`` (folders expanded)."""
    from .video import video_extensions

    formats = list(dict.fromkeys(f for group in args.format or [[DEFAULT_FORMAT]] for f in group))
    paths: list[Path] = []
    for arg in args.videos:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in video_extensions()
            )
            if not found and len(args.videos) > 1:  # alone, it is the error below
                log.warning("no video files in %s", path)
            paths += found
        else:
            paths.append(path)
    paths = list(dict.fromkeys(paths))  # a file named twice (or also found in a folder) runs once
    batch = len(args.videos) > 1 or any(Path(a).is_dir() for a in args.videos)
    if not paths:  # not a usage error: the folders exist but hold no video (exit 1, like a missing file)
        raise OptionsError("no video files to summarize in " + ", ".join(args.videos))
    if args.out is None:
        if batch:
            parser.error("several videos (or a folder) need --out DIR to write their summaries to")
        if len(formats) > 1:
            parser.error(f"several formats ({', '.join(formats)}) need --out DIR")
        if args.json and args.format:
            parser.error("--json and --format both print to stdout; pass --out DIR for the files")
    elif args.json and len(paths) > 1:
        parser.error("--json describes one video; use --format json --out DIR for several")
    stems: dict[str, Path] = {}
    for path in paths:
        other = stems.setdefault(path.stem, path)
        if other != path:
            parser.error(f"{other} and {path} would write the same files ({path.stem}.*) in --out")
    args.formats, args.paths = formats, paths


def _prompt_label(args: argparse.Namespace) -> str:
    """How the prompt is named in exported files: its template name, file, or the text itself."""
    if getattr(args, "prompt_text", None) is not None:
        return args.prompt_text
    return getattr(args, "prompt_file", None) or getattr(args, "prompt", None) or DEFAULT_PROMPT


def _ask_all(job, questions: list[str], progress: _Progress, stream: bool, recorder=None) -> list[TurnStats]:
    """Ask the summary prompt then each follow-up; print the answers to stdout as they come if ``stream``;
    ``recorder`` (a :class:`~.library.Recorder`) writes them into the library as they come.

    Returns the TurnStats of each turn.
    """
    from .events import Progress, TextDelta

    for i, question in enumerate(questions):
        if i and stream:
            sys.stdout.write(QUESTION_SEPARATOR.format(question=question))
            sys.stdout.flush()
        response = job.ask(question)
        events = response.events() if recorder is None else recorder.tap(response.events(), question)
        for event in events:
            match event:
                case Progress(stage="speech", done=done, total=total) if not progress.tty and done < total:
                    pass  # recognition beside the video: on a log, one line when it is done
                case Progress(stage=stage, done=done, total=total):
                    progress.update(stage, done, total)
                case TextDelta(text=text):
                    progress.clear()
                    if stream and text:
                        sys.stdout.write(text)
                        sys.stdout.flush()
        progress.clear()
        if i == 0 and job.damage:
            log.warning("%s", job.damage)
        if i == 0 and job.speech_note:
            log.warning("speech: %s", job.speech_note)
        if stream and not response.text.endswith("\n"):
            sys.stdout.write("\n")
            sys.stdout.flush()
        stats = response.stats
        log.debug("turn %d: %d prefill tokens, ttft %.2f s, %.1f tokens/s",
                  i, stats.prefill_tokens, stats.ttft_s, stats.decode_tokens_per_s)  # fmt: skip
    return list(job.answers)


def _open(engine, info, options: Options, prompt: str, args: argparse.Namespace, progress: _Progress):
    """The video's job (:func:`~.jobs.open_job`), saying where its speech comes from."""
    from .jobs import open_job

    job = open_job(
        engine, info, options, prompt, subtitle_file=_subtitle_file(args),
        cache_reuse=not args.no_cache_reuse, start=args.start, end=args.end,
    )  # fmt: skip
    if job.pending_speech is not None:
        progress.note("speech: recognising it while the video is read")
    elif job.transcript is not None:
        progress.note(f"speech: {len(job.transcript.segments)} lines from {job.transcript.source}")
    return job


def _probe(path: Path, args: argparse.Namespace):
    """The video's :class:`~.video.VideoInfo`; fails on a bad file, or a --start/--end it cannot hold,
    before the model is loaded for it."""
    from .jobs import probe_video

    return probe_video(path, args.start, args.end)


def _run_json(job) -> dict[str, Any]:
    plan = _plan_dict(job.plan)
    plan["speech_tokens"] = job.speech_tokens
    plan["speech_reserved"] = job.speech_reserved  # what "tokens" counted for it: a bound while recognising
    return {
        "video": job.info.path,
        "model": job.engine.model_id,
        "context": job.context,
        "plan": plan,
        "damage": job.damage,
        "transcript": job.transcript.to_dict() if job.transcript is not None else None,
        "turns": [t.as_json() for t in job.answers],
    }


def cmd_transcribe(args: argparse.Namespace, options: Options) -> int:
    """What is said in each file, in the formats asked for; a file that fails is reported, the others go on."""
    from .export import transcript_string
    from .transcripts import transcript_for

    out = Path(args.out) if args.out else None
    if out is None and (len(args.videos) > 1 or len(args.format) > 1):
        raise OptionsError("several files or formats need --out DIR to write them to")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    progress = _Progress(args.verbose or sys.stderr.isatty(), sys.stderr)
    library = _library(args, options)
    failed = 0
    for name in args.videos:
        path = Path(name)
        try:
            transcript = transcript_for(
                path,
                options.speech,
                options.cache,
                on_progress=lambda d, t: progress.update("speech", int(d), int(t)),
            )
            progress.clear()
            if transcript is None:
                raise OptionsError(f"{path} has no speech to transcribe (no audio stream, or speech = off)")
            if library is not None:
                settings = {"speech": options.speech.mode, "speech_model": options.speech.model}
                _safely_recorded(library, library.record_transcript, path, transcript, settings=settings)
            for fmt in args.format:
                text = transcript_string(transcript.to_dict(), fmt)
                if out is None:
                    sys.stdout.write(text)
                else:
                    (out / f"{path.stem}.{fmt}").write_text(text, encoding="utf-8")
        except (SummarizerError, OSError) as e:
            if len(args.videos) == 1:
                raise
            _report_failure(path, e, args.debug, progress)
            failed += 1
    return EXIT_ERROR if failed else 0


def _load_engine(options: Options, progress: _Progress):
    from .loading import load_engine

    progress.note(f"loading {options.model.id}")
    with _hf_progress_bars(progress.enabled):
        return load_engine(options.model)


def cmd_summarize(args: argparse.Namespace, options: Options) -> int:
    if args.out is not None:
        return _summarize_batch(args, options)
    prompt = _prompt_text(args)
    info = _probe(args.paths[0], args)  # fail on a bad file or range before loading the model
    progress = _Progress(args.verbose or sys.stderr.isatty(), sys.stderr)
    engine = _load_engine(options, progress)
    job = _open(engine, info, options, prompt, args, progress)
    progress.note(f"plan: {job.plan.summary()}")
    stream = not args.json and args.formats == [DEFAULT_FORMAT]
    recorder = _recorder(_library(args, options), job, _prompt_label(args))
    _ask_all(job, [prompt, *args.ask], progress, stream, recorder)
    if recorder is not None:
        recorder.finish()
    if args.json:
        _print_json(_run_json(job))
    elif not stream:
        sys.stdout.write(get_writer(args.formats[0]).to_string(job.summary(_prompt_label(args))))
        sys.stdout.flush()
    return 0


def _summarize_batch(args: argparse.Namespace, options: Options) -> int:
    """Each video's files in ``--out``; a video that fails is reported and the others go on."""
    import time

    prompt = _prompt_text(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = _Progress(args.verbose or sys.stderr.isatty(), sys.stderr)
    engine = None
    library = _library(args, options)
    results: list[_Result] = []
    for i, path in enumerate(args.paths, 1):
        sys.stderr.write(f"[{i}/{len(args.paths)}] {path.name}\n")
        sys.stderr.flush()
        result = _Result(path)
        results.append(result)
        t0 = time.perf_counter()
        try:
            info = _probe(path, args)  # a bad file (or range) fails here, before the model is loaded for it
        except Exception as e:
            _report_failure(path, e, args.debug, progress)
            result.seconds = time.perf_counter() - t0
            continue
        if engine is None:  # loaded once, for the first good video; a failure here ends the run
            engine = _load_engine(options, progress)
            t0 = time.perf_counter()  # the table times the video, not the model loading
        try:
            job = _open(engine, info, options, prompt, args, progress)
            result.duration, result.frames = job.info.duration, job.plan.frames
            progress.note(f"plan: {job.plan.summary()}")
            recorder = _recorder(library, job, _prompt_label(args))
            turns = _ask_all(job, [prompt, *args.ask], progress, stream=False, recorder=recorder)
            if recorder is not None:
                recorder.finish()
            result.tokens = sum(t.prefill_tokens + len(t.tokens) for t in turns)
            write_all(job.summary(_prompt_label(args)), out, path.stem, args.formats)
            if args.json:
                _print_json(_run_json(job))
            result.ok = True
        except Exception as e:
            _report_failure(path, e, args.debug, progress)
        finally:
            job = None  # drop this video's sessions (and KV cache) before the next one
            result.seconds = time.perf_counter() - t0
    _print_table(results, sys.stderr)
    return 0 if all(r.ok for r in results) else EXIT_ERROR


def _report_failure(path: Path, e: Exception, debug: bool, progress: _Progress) -> None:
    """``error: <file>: <message>`` on stderr; re-raised with ``--debug`` or when stdout is gone."""
    progress.clear()
    if debug or isinstance(e, BrokenPipeError):
        raise e
    message = _one_line(e)
    if not isinstance(e, SummarizerError | OSError):
        message = f"unexpected {type(e).__name__}: {message} (run with --debug for details)"
    sys.stderr.write(f"error: {path}: {message}\n")
    sys.stderr.flush()


def _print_table(results: list[_Result], stream: TextIO) -> None:
    """One row per video: file, status, duration, frames, tokens, time."""
    rows = [("file", "status", "duration", "frames", "tokens", "time")]
    for r in results:
        rows.append((
            str(r.path),
            "ok" if r.ok else "failed",
            "-" if r.duration is None else _clock(r.duration),
            "-" if r.frames is None else f"{r.frames:,}",
            "-" if r.tokens is None else f"{r.tokens:,}",
            f"{r.seconds:.1f} s",
        ))  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    stream.write("\n")
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        stream.write("  ".join(cells).rstrip() + "\n")
    failed = sum(not r.ok for r in results)
    stream.write(
        f"{len(results) - failed} of {len(results)} videos summarized"
        + (f", {failed} failed" if failed else "")
        + "\n"
    )
    stream.flush()


@contextlib.contextmanager
def _hf_progress_bars(enabled: bool) -> Iterator[None]:
    """transformers' "Loading weights" bars only where our own progress is shown."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


# --- the library -----------------------------------------------------------------------------------------

LIBRARY_KINDS = ("transcript", "summary", "chat")


def _add_no_library(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-library", action="store_true",
        help="do not record this run in the library (see `library --help`; library.enabled in the config)",
    )  # fmt: skip


def _add_library_commands(commands) -> None:
    """``library list|search|ask|show|delete|export``."""
    p = commands.add_parser(
        "library", help="list, search, ask, show, export or delete what summarize and transcribe recorded"
    )
    _add_common(p, suppress=True)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help)
        a.add_argument("--json", action="store_true", help="print JSON instead of text")
        _add_common(a, suppress=True)
        return a

    a = action("list", help="the videos, most recently used first")
    a.add_argument("--limit", type=int, default=20, metavar="N", help="videos per page (default: 20)")
    a.add_argument("--page", type=int, default=1, metavar="N", help="which page (default: 1)")
    a = action("search", help="find what was said, summarised or answered, best match first")
    a.add_argument("query", metavar="QUERY", help="words (all must occur); Chinese works without spaces")
    a.add_argument("--limit", type=int, default=20, metavar="N", help="most hits shown (default: 20)")
    a.add_argument(
        "--kind", action="append", choices=LIBRARY_KINDS,
        help="only this kind of passage (repeatable; default: all)",
    )  # fmt: skip
    a = action("ask", help="answer a question from the passages search finds, with the model (no video read)")
    a.add_argument("question", metavar="QUESTION", help="a question about any of the videos")
    a.add_argument("--passages", type=int, default=12, metavar="N", help="passages retrieved (default: 12)")
    a.add_argument("--model", "-m", metavar="M", help="hub id or local folder of a Qwen3-VL model")
    a.add_argument("--device", metavar="D", help="auto | cuda | cuda:N | mps | cpu")
    a.add_argument("--dtype", metavar="D", help="auto | bfloat16 | float16 | float32")
    a.add_argument("--max-new-tokens", type=int, metavar="N", help="most tokens generated")
    a.add_argument("--temperature", type=float, metavar="T", help="0 = greedy")
    a = action("show", help="everything kept about one video")
    a.add_argument("id", type=int, metavar="ID", help="the video's id (from `library list`)")
    a = action("delete", help="remove videos, everything kept about them and their cached vision features")
    a.add_argument("ids", type=int, nargs="*", metavar="ID", help="the videos' ids (from `library list`)")
    a.add_argument("--all", action="store_true", help="remove every video in the library")
    a = action("export", help="write one video's latest summary like summarize --format does")
    a.add_argument("id", type=int, metavar="ID", help="the video's id (from `library list`)")
    a.add_argument(
        "--format", "-f", type=_formats_arg, metavar="FMT", default=[DEFAULT_FORMAT],
        help=f"{' | '.join(FORMATS)} (default: {DEFAULT_FORMAT}); --json prints everything kept instead",
    )  # fmt: skip


def _library(args: argparse.Namespace, options: Options):
    """The library summarize and transcribe record into (None with --no-library, when it is off, or when it
    cannot be opened: then a warning, and the run goes on unrecorded)."""
    from .library import LibraryError, open_library

    if getattr(args, "no_library", False):
        return None
    try:
        return open_library(options.library)
    except LibraryError as e:
        log.warning("library: %s; this run is not recorded", e)
        return None


def _recorder(library, job, prompt: str):
    """A :class:`~.library.Recorder` of ``job`` in ``library`` (None without a library, or when it fails)."""
    if library is None:
        return None
    return _safely_recorded(library, library.record, job, "summarize", prompt)


def _safely_recorded(library, write, *args, **kwargs):
    """``write(...)``; a library that fails is a warning, never the end of the run."""
    import sqlite3

    from .library import LibraryError

    try:
        return write(*args, **kwargs)
    except (LibraryError, sqlite3.Error) as e:
        log.warning("library %s: %s; this run is not recorded", library.path, _one_line(e))
        return None


def cmd_library(args: argparse.Namespace, options: Options) -> int:
    from .library import Library, library_path

    with Library(library_path(options.library)) as library:
        match args.action:
            case "list":
                _library_list(library, args)
            case "search":
                hits = library.search(args.query, limit=args.limit, kinds=args.kind or LIBRARY_KINDS)
                if args.json:
                    _print_json([h.to_dict() for h in hits])
                elif not hits:
                    sys.stderr.write(f"nothing found for {args.query!r}\n")
                for h in [] if args.json else hits:
                    where = "" if h.start is None else f" @ {_clock(h.start)}"
                    print(f"[{h.video_id}] {h.video_name}{where}  ({h.kind})  {h.snippet}")
            case "ask":
                _library_ask(library, args, options)
            case "show":
                video = library.video(args.id)
                if args.json:
                    _print_json(video)
                else:
                    _library_show(video)
            case "delete":
                _library_delete(library, args, options)
            case "export":
                if args.json:
                    _print_json(library.video(args.id))
                else:
                    sys.stdout.write(get_writer(args.format[0]).to_string(library.summary(args.id)))
    return 0


def _library_ask(library, args: argparse.Namespace, options: Options) -> None:
    """Retrieve passages, then stream the model's answer from them and list the sources; without any
    passage, say nothing was found (no model is loaded)."""
    from . import library as lib

    if args.passages < 1:
        raise OptionsError("--passages must be at least 1")
    hits = library.retrieve(args.question, args.passages)
    if not hits:
        answer = lib.nothing_found(args.question)
        if args.json:
            _print_json({"question": args.question, "found": False, "answer": answer, "passages": []})
        else:
            print(answer)
        return
    progress = _Progress(args.verbose or sys.stderr.isatty(), sys.stderr)
    engine = _load_engine(options, progress)
    hits, response = library.ask(engine, args.question, options, limit=args.passages)
    for chunk in response:
        if not args.json:
            sys.stdout.write(chunk)
            sys.stdout.flush()
    passages = [h.to_dict() for h in hits]
    if args.json:
        stats = response.stats.to_dict()
        _print_json({"question": args.question, "found": True, "answer": response.text, "passages": passages,
                     "stats": stats})  # fmt: skip
        return
    sys.stdout.write("\n\nSources:\n")
    for n, h in enumerate(hits, 1):
        where = "" if h.start is None else f" @ {_clock(h.start)}"
        sys.stdout.write(f"[{n}] {h.video_name}{where} ({h.kind}, video {h.video_id}): {h.snippet}\n")


def _library_delete(library, args: argparse.Namespace, options: Options) -> None:
    """Delete videos with their rows and cached vision features (library.delete_video); the files named
    on the command line that were summarised stay."""
    from .jobs import delete_everything, delete_video

    if args.all == bool(args.ids):
        raise OptionsError("library delete takes video ids, or --all (not both)")
    if args.all:
        count = delete_everything(library, options)
        if args.json:
            _print_json({"deleted": count})
        else:
            print(f"deleted {count} videos")
        return
    videos = [library.video(i) for i in args.ids]  # every id is checked before any is deleted
    for video in videos:
        delete_video(library, video["id"], options)
    deleted = [{"id": v["id"], "name": v["name"]} for v in videos]
    if args.json:
        _print_json({"deleted": deleted})
    for v in [] if args.json else deleted:
        print(f"deleted [{v['id']}] {v['name']}")


def _library_list(library, args: argparse.Namespace) -> None:
    import datetime

    if args.limit < 1 or args.page < 1:
        raise OptionsError("--limit and --page must be at least 1")
    videos = library.list_videos(limit=args.limit, offset=(args.page - 1) * args.limit)
    if args.json:
        _print_json({"total": library.count_videos(), "page": args.page, "videos": videos})
        return
    for v in videos:
        when = datetime.datetime.fromtimestamp(v["updated"]).strftime("%Y-%m-%d %H:%M")
        length = "-" if v["duration"] is None else _clock(v["duration"])
        state = "" if v["finished"] else "  (unfinished)"
        questions = f"{v['questions']} question" + ("" if v["questions"] == 1 else "s")
        print(f"[{v['id']}] {when}  {length:>8}  {questions:>12}  {v['name']}{state}")
    if not videos:
        sys.stderr.write(
            f"no videos in the library {library.path}\n" if args.page == 1 else "no more videos\n"
        )


def _library_show(video: dict[str, Any]) -> None:
    length = "-" if video["duration"] is None else _clock(video["duration"])
    print(f"[{video['id']}] {video['name']}  {length}  {video['path'] or ''}".rstrip())
    for run in video["runs"]:
        state = "finished" if run["finished"] else f"unfinished{': ' + run['error'] if run['error'] else ''}"
        model = run["settings"].get("model") or run["settings"].get("speech_model", "")
        print(f"\n## run {run['id']}: {run['kind']}, {model}, {state}\n")
        if run["summary"]:
            print(run["summary"].rstrip())
        for turn in run["turns"]:
            sys.stdout.write(
                QUESTION_HEADING.format(question=turn["question"]) + turn["answer"].rstrip() + "\n"
            )
        if run["transcript"]:
            lines = len(run["transcript"])
            print(f"\n({lines} transcript lines: library export {video['id']} -f transcript.srt)")


COMMANDS = {
    "plan": cmd_plan,
    "frames": cmd_frames,
    "summarize": cmd_summarize,
    "transcribe": cmd_transcribe,
    "library": cmd_library,
}


# --- entry point -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _StderrHandler(logging.DEBUG if args.debug else logging.WARNING)
    package = logging.getLogger(PACKAGE_LOGGER)
    old_level = package.level
    package.addHandler(handler)
    package.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    try:
        if args.command == "summarize":
            _check_summarize(parser, args)  # after the handler: it warns about a folder without videos
        options = _options(args)
        return COMMANDS[args.command](args, options)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python flushes stdout at exit; point it at devnull so that does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (SummarizerError, OSError) as e:
        if args.debug:
            raise
        sys.stderr.write(f"error: {_one_line(e)}\n")
        return EXIT_ERROR
    except Exception as e:
        if args.debug:
            raise
        sys.stderr.write(
            f"error: unexpected {type(e).__name__}: {_one_line(e)} (run with --debug for details)\n"
        )
        return EXIT_ERROR
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
