"""Orchestration: plan, sample and open sessions on one video; the CLI and the app share it.

``open_video`` does the cheap, checkable part (plan a probed video: errors surface before any model work)
and returns a :class:`VideoJob`; front ends reach it through :func:`~.jobs.open_job`. Its ``ask()``
returns a :class:`~.events.Response`, like :meth:`VideoSession.ask`; the job keeps the answers of its
conversation and builds the exported :class:`~.export.Summary` from them (``job.summary()``), the same for
the page and the command line.

A video that fits the context is one session. A longer one is split along the plan's segments: each
segment is summarised in its own session (its frames keep their absolute times, so its timestamps are the
video's), then a text-only session merges the segment summaries with the merge prompt. Only one segment
session holds a KV cache at a time; the others keep their conversation as token ids and are rebuilt on
demand (quickly, from the feature cache when one is configured). A follow-up that names a time goes to the
segment holding it; any other goes, with the merged summary, to the segment whose summary shares the most
words with the question. The answer streams the parts' notes, then the merged summary; the exported
document puts the merged summary first (``job.summary_text``).

Speech goes in after the video's frames. A transcript at hand (subtitles, the transcript cache) is counted
exactly; otherwise recognition runs on a thread (:mod:`.transcripts`), the plan keeps room for the most
that much speech could say, and each session waits for the transcript only after its last frame.
"""

from __future__ import annotations

import functools
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
from .export import PARTS_HEADING, QUESTION_HEADING, Summary
from .feature_cache import FeatureCache
from .options import Options
from .plan import Geometry, Plan, Segment, check_range, describe_range, plan_video, speech_token_bound
from .prompts import load_prompt
from .speech import SpeechSegment, Transcript, prompt_lines
from .timeline import Thumbnails, frame_reader
from .timestamps import find_timestamps, format_timestamp
from .transcripts import PendingTranscript
from .video import Frame, VideoInfo, sample

log = logging.getLogger(__name__)

SEGMENT_NOTE = (
    "This is part {part} of {parts} of a longer video, from {start} to {end}. "
    "The times shown are counted from the start of the whole video."
)
SEGMENT_NOTE_ZH = (
    "这是一个较长视频的第 {part}/{parts} 部分，时间范围 {start} 到 {end}。所示时间从整个视频开头起算。"
)
SPEECH_HEADING = "What is said in the video, each line with the time it starts:"
WHOLE_VIDEO_CONTEXT = "Summary of the whole video:\n{summary}\n\nQuestion: {question}"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_WORD = re.compile(r"\w{3,}")


@dataclass
class _Part:
    """One segment: its frames, and its session (None while evicted) or the turns to rebuild it with."""

    segment: Segment
    frames: Iterable[Frame] | None  # None: the file is gone, the session reads the feature cache alone
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
    # Recognition still running beside the video (None once joined, or when the transcript came first),
    # and the tokens the plan kept for the transcript: exact, or speech_token_bound while it is made.
    pending_speech: PendingTranscript | None = None
    speech_reserved: int = 0
    speech_note: str | None = None  # set when the transcript outgrew its reserve and lines were dropped
    speech_tokens: int = 0  # tokens of ``speech``
    thumbnails: Thumbnails | None = None  # small JPEGs of the frames read, for the chapter timeline
    released: bool = False  # its KV caches were freed (release); the next ask rebuilds them
    # Where a job reopened from the library came from (jobs.reopen_job): (video id, run id); else None.
    origin: tuple[int, int] | None = None
    _merge_session: VideoSession | None = None
    _notes: str = ""  # the latest summary's notes by part, for the exported document

    @property
    def session(self) -> VideoSession:
        """The session of the (first) segment; for a video that fits, the only one."""
        return self._session(self.parts[0])

    @property
    def damage(self) -> str | None:
        """Set when the file turned out damaged and only the frames before the damage were used."""
        damaged = (getattr(p.frames, "damage", None) or (p.session and p.session.damage) for p in self.parts)
        return next((d for d in damaged if d), None)

    def ask(
        self, question: str, *, branch: int | None = None, cancel: threading.Event | None = None
    ) -> Response:
        """The answer to ``question``. The first question is the summary prompt; ``branch=0`` replaces it
        (and drops the follow-ups), ``branch=k`` replaces follow-up ``k``."""
        self.released = False
        if len(self.parts) == 1:
            events = self.session.ask(question, branch=branch, cancel=cancel).events()
        elif branch == 0 or not self.merged:
            events = self._summarize_segments(question, cancel)
        elif branch is not None:
            raise ValueError(
                "a segmented video answers follow-ups one at a time; ask again instead of branching"
            )
        else:
            events = self._follow_up(question, cancel)
        if self.pending_speech is not None:
            events = self._reporting_speech(events)
        kept = self.answers if branch is None else self.answers[:branch]
        return Response(events, on_done=lambda stats: setattr(self, "answers", [*kept, stats]))

    def _reporting_speech(self, events: Iterator[Event]) -> Iterator[Event]:
        """``events`` with the recognition's progress (``Progress("speech", done, total)``, audio seconds)
        before each one while it runs. A stream that stops early (Stop, an error) stops the recognition;
        the next question starts it again."""
        last = None
        try:
            for event in events:
                pending = self.pending_speech
                if pending is not None and pending.progress != last and not isinstance(event, TurnStats):
                    last = pending.progress
                    yield pending.progress_event()
                yield event
        except BaseException:
            if self.pending_speech is not None:
                self.pending_speech.stop()
            raise

    def _speech_when_ready(self, part: _Part, cancel: threading.Event | None) -> Iterator[Event]:
        """The part's lines of the transcript, waited for (a session calls this after the last frame)."""
        if self.pending_speech is not None:
            transcript = yield from self.pending_speech.wait(cancel)
            self._settle_speech(transcript)
        return part.speech

    def _settle_speech(self, transcript: Transcript | None) -> None:
        """Put the finished transcript in place: the range's lines, and each part's, fitted to the tokens
        the plan kept for them."""
        self.pending_speech = None
        self.transcript = transcript
        if transcript is None:
            return
        hours = self.info.duration >= 3600
        stop = self.info.duration if self.plan.end is None else self.plan.end
        geometry = self.engine.geometry(self.options.context)
        said = transcript.between(self.plan.start, stop)
        if self.plan.fits:
            self.speech, dropped = fit_speech(said, self.speech_reserved, geometry, hours)
            self.parts[0].speech, lines = self.speech, len(said)
        else:  # each part reads its own lines, within the same reserve
            self.speech, dropped, lines = speech_block(said, hours), 0, 0
            for part in self.parts:
                own = transcript.between(part.segment.start, part.segment.end)
                part.speech, more = fit_speech(own, self.speech_reserved, geometry, hours)
                if more > dropped:
                    dropped, lines = more, len(own)
        self.speech_tokens = geometry.text_tokens(self.speech) if self.speech else 0
        if dropped:
            where = "" if self.plan.fits else " in a part"
            self.speech_note = (
                f"the transcript was longer than the {self.speech_reserved:,} tokens kept for it: "
                f"{dropped} of its {lines} lines{where} were left out, evenly spread"
            )
            log.warning("%s: %s", self.info.path, self.speech_note)

    @property
    def summary_text(self) -> str:
        """The last finished summary (the first answer), "" before one; for a video in parts, the merged
        summary first, then the notes by part it was made from (the answer streamed them the other way)."""
        if not self.answers:
            return ""
        if self.merged:
            return f"{self.merged}\n\n{PARTS_HEADING}\n\n{self._notes}"
        return self.answers[0].text

    def summary(self, prompt: str = "") -> Summary:
        """What the exporters write: the summary, a Q&A section per follow-up, and the run's numbers.

        ``prompt`` names the prompt in the export (a template's name, a file, or the text itself); by
        default the summary prompt's own text.
        """
        if not self.answers:
            raise ValueError("nothing to export yet: the video has not been summarised")
        first, *follow_ups = self.answers
        markdown = self.summary_text + "".join(
            QUESTION_HEADING.format(question=t.question) + t.text for t in follow_ups
        )
        stats = {
            "plan": self.plan.summary(),
            "frames": self.plan.frames,
            "segments": len(self.plan.segments),
            # the plan's, with the transcript as it turned out rather than the room kept for it
            "prompt_tokens": self.plan.tokens - self.speech_reserved + self.speech_tokens,
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

    def frame_reader(self) -> Callable[[float], Frame | None]:
        """Decodes, by seeking, the frame this job samples at or after a time (:func:`~.timeline.frame_reader`
        with the plan's rate, size and range): for thumbnails when reading kept none (a feature-cache hit)."""
        plan = self.plan
        end = self.info.duration if plan.end is None else plan.end
        return frame_reader(self.info.path, plan.fps, (plan.width, plan.height), plan.start, end)

    def fill_thumbnails(self, starts: Iterable[float]) -> None:
        """Keep thumbnails of ``starts`` (seconds) that reading did not: :meth:`~.timeline.Thumbnails.fill`."""
        if self.thumbnails is not None:
            self.thumbnails.fill(starts, self.frame_reader())

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
            frames = part.frames
            if self.thumbnails is not None and frames is not None:
                frames = self.thumbnails.tap(frames)
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
                speech=part.speech
                if self.pending_speech is None
                else functools.partial(self._speech_when_ready, part),
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
        texts = []  # each part's notes under its header, for the merge prompt and the export
        shown = ""  # what this answer streams, and so its text: the parts, a rule, the merged summary
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
            shown += header + stats.text + "\n\n"
            prefill += stats.prefill_tokens
            read_video = read_video or stats.read_video
            ttft = stats.ttft_s if ttft is None else ttft
            yield TextDelta("\n\n", None)
        yield Progress("segment", n, n)
        yield Progress("merge", 0, 1)
        yield TextDelta("---\n\n", None)
        merge = load_prompt("merge.zh" if chinese else "merge").render(segments="\n\n".join(texts))
        self._merge_session = self.engine.session(
            None, context=self.options.context, generation=self.options.generation
        )
        merged = yield from self._merge_session.ask(merge, cancel=cancel).relay()
        self.merged = merged.text.strip()
        self._notes = "\n\n".join(texts)
        yield TurnStats(
            question=prompt,
            text=shown + "---\n\n" + merged.text,
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
            return self._session(part).ask(question, cancel=cancel).events()
        part = self._most_relevant(question)
        context = WHOLE_VIDEO_CONTEXT.format(summary=self.merged, question=question)
        return self._session(part).ask(context, cancel=cancel).events()

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
    info: VideoInfo,
    options: Options,
    prompt: str = "",
    *,
    cache_reuse: bool = True,
    transcript: Transcript | PendingTranscript | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> VideoJob:
    """Plan the probed video ``info`` (or its range ``[start, end)`` seconds) and prepare its sessions
    (nothing is decoded yet). Front ends open a video with :func:`~.jobs.open_job`, which probes it once
    and starts its transcript.

    A range is read and planned on its own (its frames, its tokens, its segments), with its frames' times
    on the whole video's clock, so the summary's times are the video's. ``transcript`` (see
    :func:`~.transcripts.transcript_for`) goes into the prompt after the video, only its lines inside the
    range, each part of a long video getting the lines of its own time range; the plan counts their
    tokens. A :class:`~.transcripts.PendingTranscript` is planned with :func:`speech_reserve` tokens and
    joined after the video's last frame; lines past the reserve are dropped (``job.speech_note``).
    Raises OptionsError (a bad range) / ContextTooSmallError before any model work.
    """
    path = info.path
    start, end = check_range(start, end, info.duration)
    context = engine.context_length(options.context)
    geometry = engine.geometry(options.context)
    hours = info.duration >= 3600
    pending = transcript if isinstance(transcript, PendingTranscript) else None
    transcript = None if pending is not None else transcript
    speech = ""
    if transcript is not None:
        said = transcript.between(start, info.duration if end is None else end)
        speech = speech_block(said, hours)
    if pending is not None:
        reserved = speech_reserve((info.duration if end is None else end) - start, geometry)
    else:
        reserved = geometry.text_tokens(speech) if speech else 0
    plan = plan_video(info, options, context, prompt, geometry, start=start, end=end, speech_tokens=reserved)
    served = getattr(engine, "backend", "local") != "local"  # a model server (remote.py) runs the model
    if served:
        from .remote import check_plan

        check_plan(plan)  # not yet: a video in parts
    if not plan.fits:
        # Plan again with the longest prompt a segment gets, so every segment fits. Each part reads only
        # its own lines of the transcript; the plan counts all of them in every part, which errs on the
        # side of smaller parts.
        note = SEGMENT_NOTE.format(part=999, parts=999, start="00:00:00", end="00:00:00")
        prompt_text = note + "\n\n" + prompt
        plan = plan_video(
            info, options, context, prompt_text, geometry, start=start, end=end, speech_tokens=reserved
        )
    if plan.is_range:
        log.info("%s: reading %s only", info.path, describe_range(plan.start, plan.end))
    size = (plan.width, plan.height)
    fps = options.sampling.fps
    cache = None if served else feature_cache(options)  # the server encodes the frames
    parts = []
    for s in plan.segments:
        stop = plan.end if plan.fits else s.end  # None: to the end of the video (a key as before ranges)
        key = None
        if cache is not None:
            key = cache.key(path, fps=fps, size=size, start=s.start, end=stop, model=engine.fingerprint)
        lines = speech
        if transcript is not None and not plan.fits:
            lines = speech_block(transcript.between(s.start, s.end), hours)
        parts.append(_Part(s, sample(info, fps, size, start=s.start, end=stop), key, speech=lines))
    if not plan.fits:
        log.info("%s does not fit %d tokens: %d segments", info.path, context, len(parts))
    job = VideoJob(engine, info, plan, context, options, cache_reuse, parts, cache)
    job.transcript, job.speech = transcript, speech
    job.pending_speech, job.speech_reserved = pending, reserved
    job.speech_tokens = reserved if pending is None else 0
    job.thumbnails = Thumbnails.for_span((info.duration if plan.end is None else plan.end) - plan.start)
    return job


def speech_block(segments: Iterable[SpeechSegment], hours: bool = False) -> str:
    """The transcript as the model reads it, right after the video: a heading, then one ``[MM:SS] text``
    line a segment, then a blank line before the prompt ("" without speech).

    One block after the video rather than lines between the frame groups of the same seconds: the video's
    tokens (and the vision features cached on disk for it) stay the same whatever the transcript, a prompt
    change reuses both, and the times in the lines are the same clock the frame timestamps use, so the
    model can still line them up. Both layouts cost the same tokens. It also lets recognition run while
    the frames are read: nothing before the block depends on it.
    """
    lines = prompt_lines(segments, hours)
    return f"{SPEECH_HEADING}\n{lines}\n\n" if lines else ""


def speech_reserve(seconds: float, geometry: Geometry) -> int:
    """Tokens to keep for the speech block of ``seconds`` of video whose transcript is not made yet: the
    heading and :func:`~.plan.speech_token_bound` for the lines."""
    return geometry.text_tokens(f"{SPEECH_HEADING}\n\n\n") + speech_token_bound(seconds, geometry)


def fit_speech(
    segments: list[SpeechSegment], budget: int, geometry: Geometry, hours: bool = False
) -> tuple[str, int]:
    """The speech block of ``segments`` within ``budget`` tokens, and how many lines were left out to fit:
    none when it fits, else the fewest found, the kept ones spread evenly over the time (so every stretch
    of the video keeps some of what is said)."""
    block = speech_block(segments, hours)
    if not block or geometry.text_tokens(block) <= budget:
        return block, 0
    n = len(segments)

    def kept(k: int) -> str:
        return speech_block([segments[i * n // k] for i in range(k)], hours) if k else ""

    fits, over = 0, n  # kept(fits) fits the budget, kept(over) does not
    while over - fits > 1:
        k = (fits + over) // 2
        if geometry.text_tokens(kept(k)) <= budget:
            fits = k
        else:
            over = k
    return kept(fits), n - fits


def feature_cache(options: Options) -> FeatureCache | None:
    """The on-disk vision-feature cache the options ask for, or None."""
    if not options.cache.enabled:
        return None
    return FeatureCache(Path(options.cache.dir).expanduser(), int(options.cache.max_gb * 2**30))
