"""The job API: the one way a video is opened (:func:`open_job`: probe once, start its transcript, plan)
or planned without reading it (:func:`plan_for`), for the page and the command line alike; and the videos
a server keeps open: one :class:`~.summarize.VideoJob` per key (a browser session, an API caller), their
KV caches released least recently used first beyond a byte budget.

``JobStore.summarize(key, engine, path, options, prompt)`` holds the reuse rule: the same file read the
same way (sampling, context, model, time range) keeps its video and only the new prompt is computed;
anything else opens the video afresh. A released job keeps its conversation as token ids, and its next
question rebuilds the cache from the on-disk vision features, without decoding or encoding the video again.

The library's videos (:mod:`.library`) come back the same way: :func:`reopen_job` makes a video's latest
recorded run a released job again (its conversation token for token, its media the cached features, the
file only where they are missing); :func:`delete_video` and :func:`delete_everything` remove a video's
rows with its cached features and the app's copy of its upload.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from .engine import Engine, Turn
from .errors import SessionBrokenError, VideoGoneError, first_line
from .events import Response, TurnStats
from .feature_cache import FeatureCache, file_fingerprint
from .library import OPENED_FORMAT, Leftovers, Library, StoredRun
from .options import Options
from .plan import (
    QWEN3VL_2B_KV_SHAPE,
    Geometry,
    Plan,
    Segment,
    check_range,
    choose_kv_cache_dtype,
    context_that_fits,
    kv_budget_bytes,
    kv_bytes_per_token,
    plan_video,
)
from .speech import SpeechSegment, Transcript
from .summarize import VideoJob, _Part, feature_cache, open_video
from .transcripts import PendingTranscript, TranscriptCache, start_transcript
from .video import Frame, FrameStream, VideoInfo, probe, sample

log = logging.getLogger(__name__)


def probe_video(path: str | os.PathLike, start: float = 0.0, end: float | None = None) -> VideoInfo:
    """Probe ``path`` and check that it holds the range ``[start, end)`` seconds: a file that is no video,
    or a range it cannot hold, fails here, before any model is loaded for it."""
    info = probe(path)
    check_range(start, end, info.duration)
    return info


def open_job(
    engine: Engine,
    video: str | os.PathLike | VideoInfo,
    options: Options,
    prompt: str = "",
    *,
    subtitle_file: str | os.PathLike | None = None,
    cache_reuse: bool = True,
    start: float = 0.0,
    end: float | None = None,
) -> VideoJob:
    """The one way a front end opens a video: probe it once (``video`` may be its :class:`VideoInfo`
    already, from :func:`probe_video`), start its transcript (subtitles, the cache, or recognition on a
    thread beside the video), plan it and prepare its sessions. Nothing is decoded yet: ``job.ask(prompt)``
    reads the video. When planning fails, the recognition started for it is stopped before the error is
    raised (a batch does not go on recognising a file that failed)."""
    info = probe_video(video, start, end) if not isinstance(video, VideoInfo) else video
    transcript = start_transcript(
        info.path,
        options.speech,
        options.cache,
        subtitle_file=subtitle_file,
        info=info,
        start=start,
        end=end,
    )
    try:
        return open_video(
            engine,
            info,
            options,
            prompt,
            cache_reuse=cache_reuse,
            transcript=transcript,
            start=start,
            end=end,
        )
    except BaseException:
        if isinstance(transcript, PendingTranscript):  # no job will read it
            transcript.stop()
        raise


def planning_context(
    options: Options, engine: Engine | None = None, device_memory: int | None = None
) -> tuple[int, Geometry]:
    """The context length and token geometry a plan counts with: the loaded model's on its device, or
    without a model, Qwen3-VL-2B's in bfloat16 on a device of ``device_memory`` bytes. Without either, no
    memory limit is known: an ``auto`` context is the configured cap and an ``auto`` KV cache is not
    quantized."""
    c = options.context
    if engine is not None:
        context = engine.context_length(c)
        return context, engine.geometry(c)
    budget = None if device_memory is None else kv_budget_bytes(device_memory)
    context = c.max_context_cap if c.max_context == "auto" else int(c.max_context)
    kv_dtype = choose_kv_cache_dtype(c.kv_cache_dtype, "bfloat16", context, QWEN3VL_2B_KV_SHAPE, budget)
    geometry = Geometry(
        kv_bytes_per_token=kv_bytes_per_token(*QWEN3VL_2B_KV_SHAPE, kv_dtype), kv_cache_dtype=kv_dtype
    )
    if c.max_context == "auto" and budget is not None:
        context = context_that_fits(budget, geometry.kv_bytes_per_token, c.max_context_cap)
    return context, geometry


def plan_for(
    info: VideoInfo,
    options: Options,
    prompt: str,
    engine: Engine | None = None,
    *,
    start: float = 0.0,
    end: float | None = None,
    device_memory: int | None = None,
) -> Plan:
    """How ``info`` (its range ``[start, end)`` seconds) fits the context with ``prompt`` (the speech
    block included, when known), counted as :func:`planning_context` says: with the loaded model, or
    without one (the CLI's ``plan``, the page before a model is loaded)."""
    context, geometry = planning_context(options, engine, device_memory)
    return plan_video(info, options, context, prompt, geometry, start=start, end=end)


class JobStore:
    """Key -> open :class:`VideoJob`, with least-recently-used release of KV caches under ``budget_bytes``
    (the caches of this process's model: a vLLM server's jobs are kept whatever the budget)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._jobs: OrderedDict[str, VideoJob] = OrderedDict()  # least recently used first
        self._used: dict[str, float] = {}  # key -> time.monotonic() of its last use
        self._tokens: dict[str, str] = {}  # job token -> key, for callers without a lasting session
        self._lock = threading.Lock()

    def token_for(self, key: str) -> str:
        """An unguessable id of ``key``'s job: whoever holds it may ask about that video (an API client,
        whose every call is a new session, passes it back)."""
        with self._lock:
            for token, owner in self._tokens.items():
                if owner == key:
                    return token
            token = secrets.token_urlsafe(18)
            self._tokens[token] = key
            return token

    def key_for(self, token: str | None) -> str | None:
        """The key a job token stands for (None for an unknown or empty token)."""
        return self._tokens.get(token) if token else None

    def expire(self, idle_seconds: float) -> None:
        """Forget the jobs unused for ``idle_seconds`` (a page closed without saying so, an API client)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, used in self._used.items() if now - used > idle_seconds]:
                log.info("forgot the video of %s (unused for %.0f s)", key, now - self._used[key])
                self._forget(key)

    def summarize(
        self,
        key: str,
        engine: Engine,
        path: str | os.PathLike,
        options: Options,
        prompt: str,
        cancel: threading.Event | None = None,
        start: float = 0.0,
        end: float | None = None,
    ) -> tuple[VideoJob, Response]:
        """The summary of ``path`` (or of its range ``[start, end)`` seconds) for ``key``: a new prompt on
        the video already open when it is read the same way (same range too), else the video opened afresh
        (:func:`open_job`; its speech recognised beside the video, reported in the answer's events). Probe,
        range and plan errors are raised here."""
        job = self.get(key)
        if job is not None and job.reads_as(path, options, engine, start, end):
            try:
                return job, job.ask(prompt, branch=0, cancel=cancel)
            except SessionBrokenError:  # an earlier read failed midway: read the video again
                log.info("reopening the video of %s after a failed read", key)
        self.drop(key)  # a new video, or read another way: free the old one's cache now
        job = open_job(engine, path, options, prompt, start=start, end=end)
        self.put(key, job)
        return job, job.ask(prompt, cancel=cancel)

    def get(self, key: str) -> VideoJob | None:
        """The key's job, about to be used: it counts against the budget again."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                self._jobs.move_to_end(key)
                self._used[key] = time.monotonic()
                job.released = False
                self._release_over_budget(keep=key)
            return job

    def peek(self, key: str) -> VideoJob | None:
        """The key's job without counting it as used (for display)."""
        return self._jobs.get(key)

    def put(self, key: str, job: VideoJob) -> None:
        with self._lock:
            self._jobs[key] = job
            self._jobs.move_to_end(key)
            self._used[key] = time.monotonic()
            self._release_over_budget(keep=key)

    def drop(self, key: str) -> None:
        with self._lock:
            self._forget(key)

    def _forget(self, key: str) -> None:
        pending = getattr(self._jobs.pop(key, None), "pending_speech", None)
        if pending is not None:  # nobody will read its transcript now
            pending.stop()
        self._used.pop(key, None)
        for token in [t for t, owner in self._tokens.items() if owner == key]:
            del self._tokens[token]

    def drop_engine(self, engine: Engine) -> None:
        """Forget the jobs opened with ``engine`` (a model that was replaced)."""
        with self._lock:
            for key in [k for k, job in self._jobs.items() if job.engine is engine]:
                self._forget(key)

    def clear(self) -> None:
        with self._lock:
            for key in list(self._jobs):
                self._forget(key)

    def __contains__(self, key: str) -> bool:
        return key in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def _release_over_budget(self, keep: str) -> None:
        # A model server's jobs hold no KV cache here (the server keeps and evicts its own): not counted.
        held = {key: job for key, job in self._jobs.items() if not job.released and job.holds_kv_cache}
        total = sum(job.plan.kv_cache_bytes for job in held.values())
        for key, job in held.items():  # oldest first
            if total <= self.budget_bytes:
                break
            if key == keep:
                continue
            job.release()
            total -= job.plan.kv_cache_bytes
            log.info("released the KV cache of %s (memory budget)", key)


class Cancels:
    """Each key's cancel event for the work it runs now (a browser session's Stop button sets it)."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def new(self, key: str) -> threading.Event:
        """A fresh event for the work this key starts now."""
        event = threading.Event()
        with self._lock:
            self._events[key] = event
        return event

    def running(self, key: str) -> bool:
        """Whether work that this key started still runs (its event is not set)."""
        with self._lock:
            event = self._events.get(key)
        return event is not None and not event.is_set()

    def wait(self, key: str, timeout: float | None = None) -> bool:
        """Wait until the work this key runs now is stopped or over (its handler sets the event when it
        ends either way); False when ``timeout`` seconds passed first. True when none runs."""
        with self._lock:
            event = self._events.get(key)
        return event is None or event.wait(timeout)

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until no key's work runs (each for up to ``timeout`` seconds); False when one is still
        running then."""
        with self._lock:
            events = list(self._events.values())
        return all(event.wait(timeout) for event in events)

    def stop(self, key: str) -> bool:
        """Set the key's event; False when none was running."""
        with self._lock:
            event = self._events.get(key)
        running = event is not None and not event.is_set()
        if event is not None:
            event.set()
        return running

    def forget(self, key: str) -> None:
        self.stop(key)
        with self._lock:
            self._events.pop(key, None)


# -- the library's videos: reopening, deleting --------------------------------------------------------------------


def reopen_job(engine: Engine, library: Library, video_id: int, options: Options) -> VideoJob:
    """The video's latest run in the library as an open job, ready for a follow-up: its summary and
    follow-ups are the conversation (``job.answers``, the sessions' turns, ``job.summary_text``/``merged``),
    and the next question rebuilds the KV cache from the feature cache without decoding the video, as a
    released job does (:meth:`~.summarize.VideoJob.release`); the file itself is read only where its
    features are missing and it is still there (same content). ``job.origin`` names the run, for
    :meth:`~.library.Library.resume` to record the next answers into it.

    Token for token: the rebuilt cache holds the ids the model saw (the run's sessions' turns, its speech
    block, the cached features), so a greedy follow-up answers as it would have on the original job.
    A run recorded before the library kept this (schema 1), or with another model than ``engine``'s,
    is opened again from its file with its settings, its conversation re-tokenized from the text shown.

    ``options`` supplies the generation and context settings; the sampling rate and time range are the
    run's. Raises VideoGoneError (the person must upload the file again) when neither the file nor its
    cached features remain (or they were made for another model); LibraryNotFoundError, LibraryError.
    """
    stored = library.stored_run(video_id)
    opened, conversation = stored.opened, stored.conversation
    if opened is None or conversation is None or opened.get("format") != OPENED_FORMAT or not stored.parts:
        why = "it was recorded by an older version that kept only the text shown, not what the model read"
        return _reopen_from_file(engine, stored, options, why)
    if opened["model_fingerprint"] != getattr(engine, "fingerprint", None):
        why = f"its cached vision features were made by another model ({opened['model']})"
        return _reopen_from_file(engine, stored, options, why)

    try:
        info = VideoInfo(**opened["info"])
        plan = _plan_of(opened["plan"])
    except (TypeError, KeyError) as e:  # kept by a version whose VideoInfo or Plan had other fields
        return _reopen_from_file(
            engine, stored, options, f"what the model read was kept in another form ({e})"
        )
    options = options.replace(sampling={"fps": opened["fps"]})
    cache = feature_cache(options) if getattr(engine, "backend", "local") == "local" else None
    missing = [
        i
        for i, p in enumerate(stored.parts)
        if cache is None or p.feature_key is None or not cache.contains(p.feature_key)
    ]
    if missing and not _same_file(stored):
        where = "" if len(stored.parts) == 1 else f" (of part {missing[0] + 1} of {len(stored.parts)})"
        raise VideoGoneError(
            f"{stored.name}: its file and its cached vision features{where} are gone: upload the video "
            "again to ask about it (its summary and answers are still in the library)"
        )
    file_there = stored.path is not None and os.path.isfile(stored.path)
    size = (plan.width, plan.height)
    parts = []
    for segment, kept in zip(plan.segments, stored.parts, strict=True):
        frames = None  # no file: the session reads the feature cache alone
        if file_there:
            stop = plan.end if plan.fits else segment.end
            stream = sample(info, opened["fps"], size, start=segment.start, end=stop)
            frames = _UnchangedFile(stream, stored.path, stored.fingerprint, stored.name)
        part = _Part(segment, frames, kept.feature_key, speech=kept.speech, summary=kept.summary)
        part.turns = [Turn(t.question, list(t.prompt_ids), list(t.answer_ids), t.text) for t in kept.turns]
        parts.append(part)
    job = VideoJob(engine, info, plan, opened["context"], options, opened["cache_reuse"], parts, cache)
    job.transcript = _transcript_of(stored)
    job.speech = conversation["speech"]
    job.speech_tokens = conversation["speech_tokens"]
    job.speech_reserved = conversation["speech_reserved"]
    job.speech_note = conversation["speech_note"]
    job.merged, job._notes = conversation["merged"], conversation["notes"]
    job.answers = _answers_of(stored, conversation["answers"], conversation["answer_tokens"])
    job.released, job.origin = True, (stored.video_id, stored.run_id)
    log.info("reopened %s (run %d) from the library", stored.name, stored.run_id)
    return job


def _reopen_from_file(engine: Engine, stored: StoredRun, options: Options, why: str) -> VideoJob:
    """A run whose model inputs were not kept (or were another model's): the video opened again from its
    file with the run's rate and range, and the conversation re-tokenized from the text shown (for a video
    in parts, follow-ups read the summary shown). VideoGoneError when the file is gone or changed."""
    if not _same_file(stored):
        raise VideoGoneError(
            f"{stored.name}: {why}, and its file is gone: upload the video again to ask about it (its "
            "summary and answers are still in the library)"
        )
    settings = stored.settings
    start, end = settings.get("range") or (0.0, None)
    if settings.get("fps"):
        options = options.replace(sampling={"fps": settings["fps"]})
    job = open_job(engine, stored.path, options, start=start, end=end)
    finished = stored.summary_stats is not None  # a summary stopped early is shown, not conversed on
    answers = _answers_of(stored, 1 + len(stored.follow_ups) if finished else 0, None)
    job.answers = answers
    if len(job.parts) == 1:
        template, tokenizer = engine._template, engine.tokenizer
        job.parts[0].turns = [
            Turn(a.question, template.turn_ids(tokenizer, a.question, first=i == 0),
                 tokenizer(a.text, add_special_tokens=False)["input_ids"], a.text)
            for i, a in enumerate(answers)
        ]  # fmt: skip
    else:  # follow-ups go to a part with the summary shown
        job.merged = stored.summary
    job.origin = (stored.video_id, stored.run_id)
    log.info("reopened %s (run %d) from its file: %s", stored.name, stored.run_id, why)
    return job


class _UnchangedFile:
    """A part's frames, read from the file only when asked (its cached features missing) and only while
    the file holds the content recorded: else VideoGoneError."""

    def __init__(self, stream: FrameStream, path: str, fingerprint: str, name: str):
        self.stream, self.path, self.fingerprint, self.name = stream, path, fingerprint, name

    @property
    def damage(self) -> str | None:
        return self.stream.damage

    def __iter__(self) -> Iterator[Frame]:
        try:
            same = file_fingerprint(self.path) == self.fingerprint
        except OSError:
            same = False
        if not same:
            raise VideoGoneError(
                f"{self.name}: its cached vision features are gone and its file was removed or changed: "
                "upload the video again to ask about it"
            )
        return iter(self.stream)


def _same_file(stored: StoredRun) -> bool:
    """Whether the run's file is still where it was read, with the same content."""
    try:
        return stored.path is not None and file_fingerprint(stored.path) == stored.fingerprint
    except OSError:
        return False


def _plan_of(data: dict) -> Plan:
    segments = tuple(Segment(**s) for s in data["segments"])
    return Plan(**{**data, "segments": segments})


def _transcript_of(stored: StoredRun) -> Transcript | None:
    if not stored.transcript:
        return None
    segments = tuple(SpeechSegment(s, e, t) for s, e, t in stored.transcript)
    return Transcript(
        segments, stored.settings.get("speech_source") or "library", stored.settings.get("language")
    )


def _answers_of(stored: StoredRun, count: int, tokens: list[list[int]] | None) -> list[TurnStats]:
    """The run's summary and its first ``count - 1`` finished follow-ups as the job's answers; ``tokens``
    each answer's generated ids, when kept."""
    texts = [(stored.summary_stats or {}, stored.summary)]  # an answer stopped early is not in the
    texts += [(t["stats"], t["answer"]) for t in stored.follow_ups if t["finished"]]  # conversation
    answers = []
    for i, (stats, text) in enumerate(texts[:count]):
        answers.append(
            TurnStats(
                question=stats.get("question", ""),
                text=text,
                tokens=list(tokens[i]) if tokens is not None and i < len(tokens) else [],
                prefill_tokens=stats.get("prefill_tokens", 0),
                ttft_s=stats.get("ttft_s", 0.0),
                decode_tokens_per_s=stats.get("decode_tokens_per_s", 0.0),
                timings=stats.get("timings_s", {}),
                read_video=stats.get("read_video", False),
                cached_tokens=stats.get("cached_tokens"),
            )
        )
    return answers


def delete_video(library: Library, video_id: int, options: Options) -> None:
    """Delete one of ``library``'s videos: its rows (runs, answers, transcript, thumbnails), the feature
    cache entries of its runs, its transcripts in the cache, and the app's copy of its upload (a file named on the command line is the
    person's own: never deleted). Entries and copies another video still names are kept. Raises
    LibraryNotFoundError."""
    _remove_leftovers(library.delete(video_id), options)


def delete_everything(library: Library, options: Options) -> int:
    """:func:`delete_video` for every video of ``library``'s owner; how many were deleted."""
    leftovers = library.delete_all_videos()
    _remove_leftovers(leftovers, options)
    return leftovers.videos


def _remove_leftovers(leftovers: Leftovers, options: Options) -> None:
    """Remove the feature cache entries, cached transcripts and upload copies deleted videos left
    (:class:`Leftovers`); an upload whose content changed since is not the copy recorded and stays.
    Failures are logged."""
    if leftovers.feature_keys or leftovers.contents:
        cache = FeatureCache(Path(options.cache.dir).expanduser(), max(1, int(options.cache.max_gb * 2**30)))
        for key in leftovers.feature_keys:
            try:
                cache.remove(key)
            except (OSError, ValueError) as e:
                log.warning("could not remove the cached features %s: %s", key, first_line(e))
        for content in leftovers.contents:  # what was said in it, cached under any speech settings
            try:
                TranscriptCache(cache).forget(content)
            except OSError as e:
                log.warning("could not remove the cached transcripts of a deleted video: %s", first_line(e))
    for path, fingerprint in leftovers.uploads.items():
        try:
            if file_fingerprint(path) == fingerprint:
                os.remove(path)
                log.info("removed the uploaded copy %s", path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove the uploaded copy %s: %s", path, first_line(e))
