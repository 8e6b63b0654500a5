"""Orchestration: probe, plan, sample and open sessions on one video; the CLI and the app share it.

``open_video`` does the cheap, checkable part (probe and plan: errors surface before any model work) and
returns a :class:`VideoJob`. Its ``ask()`` returns a :class:`~.events.Response`, like
:meth:`VideoSession.ask`; the job keeps the answers of its conversation and builds the exported
:class:`~.export.Summary` from them (``job.summary()``), the same for the page and the command line.

A video that fits the context is one session. A longer one is split along the plan's segments: each
segment is summarised in its own session (its frames keep their absolute times, so its timestamps are the
video's), then a text-only session merges the segment summaries with the merge prompt. Only one segment
session holds a KV cache at a time; the others keep their conversation as token ids and are rebuilt on
demand (quickly, from the feature cache when one is configured). A follow-up that names a time goes to the
segment holding it; any other goes, with the merged summary, to the segment whose summary shares the most
words with the question.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Engine, Turn, VideoSession
from .errors import OptionsError
from .events import Event, Progress, Response, TextDelta, TurnStats
from .export import QUESTION_HEADING, Summary
from .feature_cache import FeatureCache, file_fingerprint
from .options import Options
from .plan import Plan, Segment, check_range, describe_range, plan_video
from .prompts import load_prompt
from .speech import SpeechSegment, Transcript, find_sidecar, get_transcript, prompt_lines
from .timeline import Thumbnails
from .timestamps import find_timestamps, format_timestamp
from .video import FrameStream, VideoInfo, probe, sample

log = logging.getLogger(__name__)

SEGMENT_NOTE = (
    "This is part {part} of {parts} of a longer video, from {start} to {end}. "
    "The times shown are counted from the start of the whole video."
)
SEGMENT_NOTE_ZH = (
    "这是一个较长视频的第 {part}/{parts} 部分，时间范围 {start} 到 {end}。所示时间从整个视频开头起算。"
)
SPEECH_HEADING = "What is said in the video, each line with the time it starts:"
TRANSCRIPTS_DIR = "transcripts"  # beside the vision features in the cache folder
WHOLE_VIDEO_CONTEXT = "Summary of the whole video:\n{summary}\n\nQuestion: {question}"
PARTS_HEADING = "## Notes by part"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_WORD = re.compile(r"\w{3,}")


@dataclass
class _Part:
    """One segment: its frames, and its session (None while evicted) or the turns to rebuild it with."""

    segment: Segment
    frames: FrameStream
    feature_key: str | None = None  # the key of its vision features in the feature cache
    speech: str = ""  # its lines of the transcript, as the model reads them (speech_block)
    session: VideoSession | None = None
    turns: list[Turn] = field(default_factory=list)
    summary: str = ""


@dataclass
class VideoJob:
    """One opened video: what it is, how it is fed to the model, and the session(s) holding its cache."""

    engine: Engine
    info: VideoInfo
    plan: Plan
    context: int  # context length planned for, tokens
    options: Options
    cache_reuse: bool = True
    parts: list[_Part] = field(default_factory=list)
    feature_cache: FeatureCache | None = None
    merged: str = ""  # the merged summary of a segmented video
    answers: list[TurnStats] = field(default_factory=list)  # the conversation: summary, then follow-ups
    transcript: Transcript | None = None  # what is said in the video, when it was transcribed
    speech: str = ""  # the transcript inside the range read, as the model reads it; parts get their lines
    speech_tokens: int = 0  # tokens of ``speech``
    thumbnails: Thumbnails | None = None  # small JPEGs of the frames read, for the chapter timeline
    released: bool = False  # its KV caches were freed (release); the next ask rebuilds them
    _merge_session: VideoSession | None = None
    _prompt: str = ""

    @property
    def session(self) -> VideoSession:
        """The session of the (first) segment; for a video that fits, the only one."""
        return self._session(self.parts[0])

    @property
    def frames(self) -> FrameStream:
        return self.parts[0].frames

    @property
    def damage(self) -> str | None:
        """Set when the file turned out damaged and only the frames before the damage were used."""
        damaged = (p.frames.damage or (p.session and p.session.damage) for p in self.parts)
        return next((d for d in damaged if d), None)

    def ask(
        self, question: str, *, branch: int | None = None, cancel: threading.Event | None = None
    ) -> Response:
        """The answer to ``question``. The first question is the summary prompt; ``branch=0`` replaces it
        (and drops the follow-ups), ``branch=k`` replaces follow-up ``k``."""
        self.released = False
        if len(self.parts) == 1:
            events = self.session.ask(question, branch=branch, cancel=cancel)
        elif branch == 0 or not self.merged:
            events = self._summarize_segments(question, cancel)
        elif branch is not None:
            raise ValueError(
                "a segmented video answers follow-ups one at a time; ask again instead of branching"
            )
        else:
            events = self._follow_up(question, cancel)
        kept = self.answers if branch is None else self.answers[:branch]
        return Response(events, on_done=lambda stats: setattr(self, "answers", [*kept, stats]))

    @property
    def summary_text(self) -> str:
        """The last finished summary (the first answer), "" before one."""
        return self.answers[0].text if self.answers else ""

    def summary(self, prompt: str = "") -> Summary:
        """What the exporters write: the summary, a Q&A section per follow-up, and the run's numbers.

        ``prompt`` names the prompt in the export (a template's name, a file, or the text itself); by
        default the summary prompt's own text.
        """
        if not self.answers:
            raise ValueError("nothing to export yet: the video has not been summarised")
        first, *follow_ups = self.answers
        markdown = first.text + "".join(
            QUESTION_HEADING.format(question=t.question) + t.text for t in follow_ups
        )
        stats = {
            "plan": self.plan.summary(),
            "frames": self.plan.frames,
            "segments": len(self.plan.segments),
            "prompt_tokens": self.plan.tokens,
            "speech_tokens": self.speech_tokens,
            "context": self.context,
            "damage": self.damage,
            "turns": [t.to_dict() for t in self.answers],
        }
        if self.plan.is_range:  # seconds on the whole video's clock; end None: to the video's end
            stats["range"] = {"start": self.plan.start, "end": self.plan.end}
        return Summary(
            markdown,
            Path(self.info.path).name,
            self.info.duration,
            self.engine.model_id,
            prompt or first.question,
            stats,
            transcript=self.transcript.to_dict() if self.transcript is not None else None,
        )

    def reads_as(
        self,
        path: str | os.PathLike,
        options: Options,
        engine: Engine,
        start: float = 0.0,
        end: float | None = None,
    ) -> bool:
        """Whether this job reads ``path`` as ``options`` would, with ``engine``, over the same time range
        (``start``/``end`` as :func:`open_video` takes them): then a new prompt can reuse its video
        (``ask(prompt, branch=0)``) instead of reading it again."""
        return (
            engine is self.engine
            and str(Path(path)) == self.info.path
            and self.same_range(start, end)
            and options.sampling == self.options.sampling
            and options.context.max_context == self.options.context.max_context
            and options.speech == self.options.speech
        )

    def same_range(self, start: float = 0.0, end: float | None = None) -> bool:
        """Whether ``[start, end)`` is the range this job reads (an end at or past the video's end is the
        end; a range the video cannot hold is not this job's)."""
        try:
            return check_range(start, end, self.info.duration) == (self.plan.start, self.plan.end)
        except OptionsError:
            return False

    def release(self) -> None:
        """Free every KV cache. The conversation is kept as token ids and rebuilt on the next ask, from
        the feature cache when one is configured (else by reading the video again)."""
        for part in self.parts:
            if part.session is not None:
                part.turns, part.session = list(part.session.turns), None
        self._merge_session = None
        self.released = True

    # -- segmented videos ---------------------------------------------------------------------------

    def _session(self, part: _Part) -> VideoSession:
        if part.session is None:
            for other in self.parts:  # one KV cache at a time: keep the others as token ids
                if other is not part and other.session is not None:
                    other.turns, other.session = list(other.session.turns), None
            frames = part.frames if self.thumbnails is None else self.thumbnails.tap(part.frames)
            part.session = self.engine.session(
                frames,
                total_frames=part.segment.frames,
                feature_cache=self.feature_cache,
                feature_key=part.feature_key,
                context=self.options.context,
                generation=self.options.generation,
                max_context=self.context,
                expected_tokens=part.segment.tokens + self.options.generation.max_new_tokens,
                cache_reuse=self.cache_reuse,
                speech=part.speech,
            )
            part.session.turns = list(part.turns)
        return part.session

    def _summarize_segments(self, prompt: str, cancel: threading.Event | None) -> Iterator[Event]:
        t0 = time.perf_counter()
        n = len(self.parts)
        chinese = bool(_CJK.search(prompt))
        note = SEGMENT_NOTE_ZH if chinese else SEGMENT_NOTE
        hours = self.info.duration >= 3600
        prefill = 0
        read_video = False
        ttft = None
        texts = []
        for i, part in enumerate(self.parts):
            yield Progress("segment", i, n)
            start = format_timestamp(part.segment.start, hours)
            end = format_timestamp(part.segment.end, hours)
            header = f"### Part {i + 1} of {n} ({start}–{end})\n\n"
            yield TextDelta(header, None)
            session = self._session(part)
            question = note.format(part=i + 1, parts=n, start=start, end=end) + "\n\n" + prompt
            stats = yield from session.ask(
                question, branch=0 if session.turns else None, cancel=cancel
            ).relay()
            part.turns, part.summary = list(session.turns), stats.text
            texts.append(header + stats.text.strip())
            prefill += stats.prefill_tokens
            read_video = read_video or stats.read_video
            ttft = stats.ttft_s if ttft is None else ttft
            yield TextDelta("\n\n", None)
        yield Progress("segment", n, n)
        yield Progress("merge", 0, 1)
        yield TextDelta("---\n\n", None)
        merge = load_prompt("merge.zh" if chinese else "merge").render(segments="\n\n".join(texts))
        self._merge_session = VideoSession(
            self.engine, None, context=self.options.context, generation=self.options.generation
        )
        merged = yield from self._merge_session.ask(merge, cancel=cancel).relay()
        self.merged = merged.text.strip()
        self._prompt = prompt
        yield TurnStats(
            question=prompt,
            text=f"{self.merged}\n\n{PARTS_HEADING}\n\n" + "\n\n".join(texts),
            tokens=merged.tokens,
            prefill_tokens=prefill + merged.prefill_tokens,
            ttft_s=ttft or 0.0,
            decode_tokens_per_s=merged.decode_tokens_per_s,
            timings={"total": time.perf_counter() - t0, "segments": n},
            read_video=read_video,
        )

    def _follow_up(self, question: str, cancel: threading.Event | None) -> Iterator[Event]:
        times = find_timestamps(question)
        if times:
            part = self.part_at(times[0].seconds)
            return self._session(part).ask(question, cancel=cancel)
        part = self._most_relevant(question)
        context = WHOLE_VIDEO_CONTEXT.format(summary=self.merged, question=question)
        return self._session(part).ask(context, cancel=cancel)

    def part_at(self, seconds: float) -> _Part:
        """The segment holding ``seconds`` (the last one for times past the end)."""
        for part in self.parts:
            if seconds < part.segment.end:
                return part
        return self.parts[-1]

    def _most_relevant(self, question: str) -> _Part:
        words = {w.lower() for w in _WORD.findall(question)}
        scores = [len(words & {w.lower() for w in _WORD.findall(p.summary)}) for p in self.parts]
        return self.parts[max(range(len(scores)), key=scores.__getitem__)]


def open_video(
    engine: Engine,
    path: str | os.PathLike,
    options: Options,
    prompt: str = "",
    *,
    cache_reuse: bool = True,
    transcript: Transcript | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> VideoJob:
    """Probe and plan ``path`` (or its range ``[start, end)`` seconds) and prepare its sessions (nothing
    is decoded yet).

    A range is read and planned on its own (its frames, its tokens, its segments), with its frames' times
    on the whole video's clock, so the summary's times are the video's. ``transcript`` (see
    :func:`transcript_for`) goes into the prompt after the video, only its lines inside the range, each
    part of a long video getting the lines of its own time range; the plan counts their tokens.
    Raises VideoError / OptionsError (a bad range too) / ContextTooSmallError before any model work.
    """
    info = probe(path)
    start, end = check_range(start, end, info.duration)
    context = engine.context_length(options.context)
    hours = info.duration >= 3600
    speech = ""
    if transcript is not None:
        said = transcript.between(start, info.duration if end is None else end)
        speech = speech_block(said, hours)
    plan = plan_video(info, options, context, speech + prompt, engine.geometry, start=start, end=end)
    if not plan.fits:
        # Plan again with the longest prompt a segment gets, so every segment fits. Each part reads only
        # its own lines of the transcript; the plan counts all of them in every part, which errs on the
        # side of smaller parts.
        note = SEGMENT_NOTE.format(part=999, parts=999, start="00:00:00", end="00:00:00")
        prompt_text = speech + note + "\n\n" + prompt
        plan = plan_video(info, options, context, prompt_text, engine.geometry, start=start, end=end)
    if plan.is_range:
        log.info("%s: reading %s only", info.path, describe_range(plan.start, plan.end))
    size = (plan.width, plan.height)
    fps = options.sampling.fps
    cache = feature_cache(options)
    parts = []
    for s in plan.segments:
        stop = plan.end if plan.fits else s.end  # None: to the end of the video (a key as before ranges)
        key = None
        if cache is not None:
            key = cache.key(path, fps=fps, size=size, start=s.start, end=stop, model=engine.fingerprint)
        lines = speech
        if transcript is not None and not plan.fits:
            lines = speech_block(transcript.between(s.start, s.end), hours)
        parts.append(_Part(s, sample(path, fps, size, start=s.start, end=stop), key, speech=lines))
    if not plan.fits:
        log.info("%s does not fit %d tokens: %d segments", info.path, context, len(parts))
    job = VideoJob(engine, info, plan, context, options, cache_reuse, parts, cache)
    job.transcript, job.speech = transcript, speech
    job.speech_tokens = engine.geometry.text_tokens(speech) if speech else 0
    job.thumbnails = Thumbnails.for_span((info.duration if plan.end is None else plan.end) - plan.start)
    return job


def speech_block(segments: Iterable[SpeechSegment], hours: bool = False) -> str:
    """The transcript as the model reads it, right after the video: a heading, then one ``[MM:SS] text``
    line a segment, then a blank line before the prompt ("" without speech).

    One block after the video rather than lines between the frame groups of the same seconds: the video's
    tokens (and the vision features cached on disk for it) stay the same whatever the transcript, a prompt
    change reuses both, and the times in the lines are the same clock the frame timestamps use, so the
    model can still line them up. Both layouts cost the same tokens.
    """
    lines = prompt_lines(segments, hours)
    return f"{SPEECH_HEADING}\n{lines}\n\n" if lines else ""


def transcript_for(
    path: str | os.PathLike,
    options: Options,
    subtitle_file: str | os.PathLike | None = None,
    on_progress: Callable[[float, float], None] | None = None,
) -> Transcript | None:
    """What is said in ``path`` as ``options.speech`` asks (None for ``off``, or a video without speech),
    from the transcript cache when the same file was transcribed the same way before."""
    s = options.speech
    if s.mode == "off" and subtitle_file is None:
        return None
    key = None
    folder = Path(options.cache.dir).expanduser() / TRANSCRIPTS_DIR if options.cache.enabled else None
    if folder is not None:
        parts = [file_fingerprint(path), s.mode, s.model, s.language, s.device]
        if subtitle_file is not None:
            parts.append(file_fingerprint(subtitle_file))
        elif s.mode in ("auto", "subtitles"):
            sidecar = find_sidecar(path)  # a subtitle file added next to the video later must count
            parts.append(file_fingerprint(sidecar) if sidecar is not None else "")
        key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = Transcript.from_dict(json.loads((folder / f"{key}.json").read_text(encoding="utf-8")))
            log.info("read the transcript of %s from the cache", path)
            return cached
    transcript = get_transcript(
        path, s.mode, subtitle_file, s.model, s.language or None, s.device, on_progress=on_progress
    )
    if folder is not None and transcript is not None:  # "none" is not kept: the model may come later
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{key}.json.tmp"
            tmp.write_text(json.dumps(transcript.to_dict()), encoding="utf-8")
            tmp.replace(folder / f"{key}.json")
        except OSError as e:
            log.warning("could not cache the transcript: %s", e)
    return transcript


def feature_cache(options: Options) -> FeatureCache | None:
    """The on-disk vision-feature cache the options ask for, or None."""
    if not options.cache.enabled:
        return None
    return FeatureCache(Path(options.cache.dir).expanduser(), int(options.cache.max_gb * 2**30))
