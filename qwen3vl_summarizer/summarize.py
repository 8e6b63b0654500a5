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

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Engine, Turn, VideoSession
from .events import Event, Progress, Response, TextDelta, TurnStats
from .export import QUESTION_HEADING, Summary
from .feature_cache import FeatureCache
from .options import Options
from .plan import Plan, Segment, plan_video
from .prompts import load_prompt
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
            "context": self.context,
            "damage": self.damage,
            "turns": [t.to_dict() for t in self.answers],
        }
        return Summary(
            markdown,
            Path(self.info.path).name,
            self.info.duration,
            self.engine.model_id,
            prompt or first.question,
            stats,
        )

    def reads_as(self, path: str | os.PathLike, options: Options, engine: Engine) -> bool:
        """Whether this job reads ``path`` as ``options`` would, with ``engine``: then a new prompt can
        reuse its video (``ask(prompt, branch=0)``) instead of reading it again."""
        return (
            engine is self.engine
            and str(Path(path)) == self.info.path
            and options.sampling == self.options.sampling
            and options.context.max_context == self.options.context.max_context
        )

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
            part.session = self.engine.session(
                part.frames,
                total_frames=part.segment.frames,
                feature_cache=self.feature_cache,
                feature_key=part.feature_key,
                context=self.options.context,
                generation=self.options.generation,
                max_context=self.context,
                expected_tokens=part.segment.tokens + self.options.generation.max_new_tokens,
                cache_reuse=self.cache_reuse,
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
) -> VideoJob:
    """Probe and plan ``path`` and prepare its sessions (nothing is decoded yet).

    Raises VideoError / OptionsError / ContextTooSmallError before any model work.
    """
    info = probe(path)
    context = engine.context_length(options.context)
    plan = plan_video(info, options, context, prompt, engine.geometry)
    if not plan.fits:  # plan again with the longest prompt a segment gets, so every segment fits
        note = SEGMENT_NOTE.format(part=999, parts=999, start="00:00:00", end="00:00:00")
        plan = plan_video(info, options, context, note + "\n\n" + prompt, engine.geometry)
    size = (plan.width, plan.height)
    fps = options.sampling.fps
    cache = feature_cache(options)
    parts = []
    for s in plan.segments:
        end = None if plan.fits else s.end
        key = None
        if cache is not None:
            key = cache.key(path, fps=fps, size=size, start=s.start, end=end, model=engine.fingerprint)
        parts.append(_Part(s, sample(path, fps, size, start=s.start, end=end), key))
    if not plan.fits:
        log.info("%s does not fit %d tokens: %d segments", info.path, context, len(parts))
    return VideoJob(engine, info, plan, context, options, cache_reuse, parts, cache)


def feature_cache(options: Options) -> FeatureCache | None:
    """The on-disk vision-feature cache the options ask for, or None."""
    if not options.cache.enabled:
        return None
    return FeatureCache(Path(options.cache.dir).expanduser(), int(options.cache.max_gb * 2**30))
