"""Where a video's transcript comes from, and its cache.

:func:`start_transcript` gives what is said in a video as soon as that is quick (speech off, the transcript
cache, subtitles, no audio), else a :class:`PendingTranscript`: recognition running on a thread while the
video is planned, decoded, encoded and prefilled; the session joins it after the video's last frame.
:func:`transcript_for` makes the transcript now (the CLI's ``transcribe``).

Both take the run's :class:`~.options.SpeechOptions` and :class:`~.options.CacheOptions`. The cache keeps
each transcript as ``<cache.dir>/transcripts/<key>.json``, the key made of the file's content and every
speech setting; its files are counted with the vision features against ``cache.max_gb`` and evicted with
them, least recently used first (:class:`~.feature_cache.FeatureCache`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator

from .errors import Cancelled
from .events import Event, Progress
from .feature_cache import FeatureCache, file_fingerprint
from .options import CacheOptions, SpeechOptions
from .speech import Transcript, find_sidecar, find_subtitles, get_transcript, recognise
from .video import VideoInfo, probe

log = logging.getLogger(__name__)

SPEECH_POLL_S = 0.25  # how often a wait for the transcript reports progress and looks at the cancel event


class TranscriptCache:
    """Transcripts kept on disk beside the vision features, within the same ``cache.max_gb``."""

    def __init__(self, features: FeatureCache):
        self.features = features

    @classmethod
    def of(cls, cache: CacheOptions) -> TranscriptCache | None:
        """The cache ``cache`` asks for, or None when it is off."""
        if not cache.enabled:
            return None
        return cls(FeatureCache(os.path.expanduser(cache.dir), int(cache.max_gb * 2**30)))

    @staticmethod
    def key(
        path: str | os.PathLike,
        speech: SpeechOptions,
        subtitle_file: str | os.PathLike | None = None,
        span: tuple[float, float] | None = None,
    ) -> str:
        """The key of ``path`` transcribed as ``speech`` says (only ``span`` seconds of it, when given).
        It starts with :func:`video_prefix` of the file's content, so deleting a video finds its entries."""
        fingerprint = file_fingerprint(path)
        parts = [fingerprint, speech.mode, speech.model, speech.language, speech.device]
        if span is not None:
            parts.append(f"span {span[0]:.3f} {span[1]:.3f}")
        if subtitle_file is not None:
            parts.append(file_fingerprint(subtitle_file))
        elif speech.mode in ("auto", "subtitles"):
            sidecar = find_sidecar(path)  # a subtitle file added next to the video later must count
            parts.append(file_fingerprint(sidecar) if sidecar is not None else "")
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
        return f"{video_prefix(fingerprint)}-{digest}"

    def forget(self, fingerprint: str) -> int:
        """Remove every cached transcript of the content ``fingerprint`` (any speech settings, any span);
        how many were removed."""
        return self.features.remove_texts(f"{video_prefix(fingerprint)}-")

    def load(self, key: str) -> Transcript | None:
        text = self.features.load_text(f"{key}.json")
        if text is None:
            return None
        try:
            return Transcript.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError) as e:
            log.debug("ignoring a damaged cached transcript %s: %s", key, e)
            return None

    def store(self, key: str, transcript: Transcript | None) -> None:
        """Keep ``transcript`` ("none" is not kept: a speech model may come later)."""
        if transcript is not None:
            self.features.store_text(f"{key}.json", json.dumps(transcript.to_dict()))


def video_prefix(fingerprint: str) -> str:
    """The start of the cache names of a video's transcripts: a digest of its content fingerprint."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


class _Slot:
    """One transcript's place in the cache (nowhere when the cache is off)."""

    def __init__(self, cache: TranscriptCache | None, key: str = ""):
        self.cache, self.key = cache, key

    @classmethod
    def of(
        cls,
        cache: TranscriptCache | None,
        path: str | os.PathLike,
        speech: SpeechOptions,
        subtitle_file: str | os.PathLike | None = None,
        span: tuple[float, float] | None = None,
    ) -> _Slot:
        return cls(cache, cache.key(path, speech, subtitle_file, span) if cache is not None else "")

    def load(self, path: str | os.PathLike) -> Transcript | None:
        found = self.cache.load(self.key) if self.cache is not None else None
        if found is not None:
            log.info("read the transcript of %s from the cache", path)
        return found

    def store(self, transcript: Transcript | None) -> None:
        if self.cache is not None:
            self.cache.store(self.key, transcript)


class PendingTranscript:
    """Speech recognition running on a background thread while the video is planned and read.

    ``transcript = yield from pending.wait(cancel)`` yields ``Progress("speech", done, total)`` (audio
    seconds) until the transcript is ready, then returns it (None when no speech could be recognised);
    an error of the recognition is raised there, in the consumer's thread. ``stop()`` ends the thread at
    its next segment (a cancel does it too); the next ``wait`` starts recognition again. ``finished`` is
    set each time a run of the thread ends (done, failed or stopped).
    """

    def __init__(
        self,
        recognise: Callable[[Callable[[float, float], None]], Transcript | None],
        total: float,
    ):
        self._recognise = recognise  # runs the recognition, given a progress callback that may raise
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._result: Transcript | None = None
        self._error: BaseException | None = None
        self.done = False  # the transcript (or a lasting error) is there
        self.progress = (0.0, float(total))  # audio seconds recognised, of the whole

    def start(self) -> None:
        """Start recognising, unless it runs already or has finished."""
        with self._lock:
            if self.done or (self._thread is not None and self._thread.is_alive()):
                return
            self._stop, self.finished, self._error = threading.Event(), threading.Event(), None
            self._thread = threading.Thread(
                target=self._run, args=(self._stop, self.finished), name="speech", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop recognising at the next segment (the thread ends within one 30 s window's work)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called on the current run."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def progress_event(self) -> Progress:
        done, total = self.progress
        return Progress("speech", int(done), int(total))

    def wait(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        while not self.done:  # a run stopped before this wait ends, then recognition starts again
            self.start()
            finished = self.finished
            while not finished.wait(SPEECH_POLL_S):
                if cancel is not None and cancel.is_set():
                    self.stop()
                    raise Cancelled("stopped")
                yield self.progress_event()
        if self._error is not None:
            raise self._error
        yield Progress("speech", int(self.progress[1]), int(self.progress[1]))
        return self._result

    def _run(self, stop: threading.Event, finished: threading.Event) -> None:
        def progress(done: float, total: float) -> None:
            if stop.is_set():
                raise Cancelled("speech recognition stopped")
            self.progress = (done, total)

        try:
            self._result = self._recognise(progress)
            self.done = True
        except Cancelled as e:
            self._error = e  # not done: the next wait starts again
        except BaseException as e:  # carried to the consumer, raised by wait()
            self._error = e
            self.done = True
        finally:
            finished.set()


def start_transcript(
    path: str | os.PathLike,
    speech: SpeechOptions,
    cache: CacheOptions,
    *,
    subtitle_file: str | os.PathLike | None = None,
    info: VideoInfo | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> Transcript | PendingTranscript | None:
    """What is said in ``path``, now when that is quick (speech off, the transcript cache, subtitles, no
    audio), else a :class:`PendingTranscript` whose recognition has started. For a time range (``start``,
    ``end`` seconds) only that part is recognised, unless the whole file's transcript is in the cache
    already; subtitles are read whole. ``info``: the video's probe, when the caller has it."""
    if subtitle_file is not None or speech.mode in ("off", "subtitles"):  # no recognition: quick
        return transcript_for(path, speech, cache, subtitle_file=subtitle_file, start=start, end=end)
    store = TranscriptCache.of(cache)
    slot = _Slot.of(store, path, speech)
    cached = slot.load(path)
    if cached is not None:
        return cached
    if speech.mode == "auto" and (found := find_subtitles(path)) is not None:
        slot.store(found)
        return found
    info = probe(path) if info is None else info
    if not info.has_audio:
        return None
    span = _asr_span(start, end, info.duration)
    if span is not None:  # a part of the file: its own cache entry
        slot = _Slot.of(store, path, speech, span=span)
        cached = slot.load(path)
        if cached is not None:
            return cached

    def run(progress: Callable[[float, float], None]) -> Transcript | None:
        transcript = recognise(
            path, speech.mode, speech.model, speech.language or None, speech.device, progress, span=span
        )
        slot.store(transcript)
        return transcript

    pending = PendingTranscript(run, info.duration if span is None else span[1] - span[0])
    pending.start()
    return pending


def transcript_for(
    path: str | os.PathLike,
    speech: SpeechOptions,
    cache: CacheOptions,
    *,
    subtitle_file: str | os.PathLike | None = None,
    on_progress: Callable[[float, float], None] | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> Transcript | None:
    """What is said in ``path`` as ``speech`` asks (None for ``off``, or a video without speech), from the
    transcript cache when the same file was transcribed the same way before; ``on_progress(done, total)``
    in audio seconds while recognising. Recognition covers only ``start``..``end`` seconds (a time range)
    unless the whole file's transcript is cached."""
    if speech.mode == "off" and subtitle_file is None:
        return None
    store = TranscriptCache.of(cache)
    slot = _Slot.of(store, path, speech, subtitle_file)
    cached = slot.load(path)
    if cached is not None:
        return cached
    span = None
    if start > 0 or end is not None:
        span = _asr_span(start, end, probe(path).duration)
        if span is not None:
            slot = _Slot.of(store, path, speech, subtitle_file, span)
            cached = slot.load(path)
            if cached is not None:
                return cached
    transcript = get_transcript(
        path,
        speech.mode,
        subtitle_file,
        speech.model,
        speech.language or None,
        speech.device,
        on_progress=on_progress,
        span=span,
    )
    slot.store(transcript)
    return transcript


def _asr_span(start: float, end: float | None, duration: float) -> tuple[float, float] | None:
    """The seconds to recognise for a time range, None for the whole file."""
    end = duration if end is None else min(end, duration)
    return None if start <= 0 and end >= duration else (max(0.0, start), end)
