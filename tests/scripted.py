"""A scripted session for testing the layers above the engine (summarize, jobs, the CLI, the page), as
simonw/llm's ``MockModel.enqueue`` does for its models: each answer is text a test enqueued, streamed
through the same :class:`~qwen3vl_summarizer.events.Response` a real session returns.

    def test_chapters_reach_the_srt(scripted, ...):
        scripted.enqueue("### [00:00–00:01] Opening\\n\\nA red block.\\n")
        ...  # run the CLI, a JobStore, the page: every session answers from the queue, in order
        assert scripted.questions == [PROMPT]

The ``scripted`` fixture (conftest.py) puts :class:`ScriptedSession` where the package makes its sessions
(``Engine.session``, and ``VideoSession`` in summarize.py for a long video's merge). Everything else is
real: the engine's tokenizer and geometry plan the video, and a session still reads its frames (so the
thumbnails, a damaged file and speech recognition beside the video behave as they do), it only does not
run the model. The tiny model's answers are noise, so a test that needs an answer with a shape (chapters,
timestamps, a given summary) scripts it here instead of replacing ``VideoSession.ask`` or the exports.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qwen3vl_summarizer import engine as engine_module
from qwen3vl_summarizer import summarize as summarize_module
from qwen3vl_summarizer.engine import Turn
from qwen3vl_summarizer.errors import Cancelled, DamagedVideoError
from qwen3vl_summarizer.events import Event, Progress, Response, TextDelta, TurnStats
from qwen3vl_summarizer.video import Frame

_PIECE = re.compile(r"\s*\S+|\s+")  # what one TextDelta carries: a word and the space before it


@dataclass
class Asked:
    """One question a scripted session answered, with what the session held when it was asked."""

    question: str
    answer: str
    frames: int  # frames the session had read
    speech: str  # the transcript text the session was given ("" without one)
    branch: int | None


@dataclass
class Script:
    """The queue of answers, shared by every scripted session of a test, and what they were asked."""

    answers: deque[str] = field(default_factory=deque)
    asked: list[Asked] = field(default_factory=list)
    sessions: list[ScriptedSession] = field(default_factory=list)

    def enqueue(self, *answers: str) -> None:
        """Answers for the next questions, in the order they will be asked (by any session)."""
        self.answers.extend(answers)

    @property
    def questions(self) -> list[str]:
        return [a.question for a in self.asked]

    def next_answer(self, question: str) -> str:
        if not self.answers:
            raise AssertionError(f"no scripted answer left for the question {question[:80]!r}")
        return self.answers.popleft()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Sessions made by the package from now on (until the test ends) are scripted ones."""

        def session(*args: Any, **kwargs: Any) -> ScriptedSession:
            made = ScriptedSession(*args, script=self, **kwargs)
            self.sessions.append(made)
            return made

        # Engine.session builds engine.VideoSession; summarize.py builds a long video's merge session itself.
        monkeypatch.setattr(engine_module, "VideoSession", session)
        monkeypatch.setattr(summarize_module, "VideoSession", session)


class ScriptedSession:
    """:class:`~qwen3vl_summarizer.engine.VideoSession`'s interface, answering from a :class:`Script`.

    Takes the same arguments (those that shape the model's work are kept, not used). The first question
    reads the frames (``Progress("frames")``) and waits for a transcript still being made, as the real
    session does; each answer streams word by word, then its :class:`TurnStats` (one made-up token id
    per word; ``prefill_tokens`` counts the frames and the question's words). ``branch`` and ``cancel``
    behave as the real ones: a cancelled turn is dropped and the session stays usable.
    """

    def __init__(
        self,
        engine: Any,
        frames: Iterable[Frame] | None = None,
        *,
        script: Script,
        total_frames: int | None = None,
        image: Any = None,
        context: Any = None,
        generation: Any = None,
        max_context: int | None = None,
        expected_tokens: int | None = None,
        cache_reuse: bool = True,
        feature_cache: Any = None,
        feature_key: str | None = None,
        speech: str | Callable[[threading.Event | None], Iterator[Event]] | None = None,
    ):
        if frames is not None and image is not None:
            raise ValueError("a session holds frames or an image (or neither, for text), not both")
        self.engine = engine
        self.script = script
        # Kept for a test to look at; they shape the model's work, and there is none here.
        self.context, self.generation, self.max_context = context, generation, max_context
        self.expected_tokens, self.cache_reuse = expected_tokens, cache_reuse
        self.feature_cache, self.feature_key = feature_cache, feature_key
        self.total_frames = total_frames
        self.turns: list[Turn] = []
        self.frames_read = 0
        self.timestamps: list[float] = []
        self.damage: str | None = None
        self.features_from_cache = False
        self.speech = speech if isinstance(speech, str) else ""
        self._speech_later = speech if callable(speech) else None
        self._source = frames
        self._frames = iter(frames) if frames is not None else None
        self._media_done = False

    @property
    def media_tokens(self) -> int:
        return self.frames_read

    def ask(
        self, question: str, *, branch: int | None = None, cancel: threading.Event | None = None
    ) -> Response:
        if branch is not None and not 0 <= branch <= len(self.turns):
            raise ValueError(f"branch must be in 0..{len(self.turns)}, got {branch}")
        return Response(self._turn(question, branch, cancel))

    def _turn(self, question: str, branch: int | None, cancel: threading.Event | None) -> Iterator[Event]:
        t_start = time.perf_counter()
        timings = {"frames": 0.0}
        fresh = not self._media_done
        if fresh:
            yield from self._read_media(cancel, timings)
        answer = self.script.next_answer(question)
        self.script.asked.append(Asked(question, answer, self.frames_read, self.speech, branch))
        kept = self.turns if branch is None else self.turns[:branch]
        turn = Turn(question, [], text=answer)
        ttft = None
        for i, piece in enumerate(_PIECE.findall(answer)):
            _check(cancel)
            ttft = time.perf_counter() - t_start if ttft is None else ttft
            turn.answer_ids.append(i)
            yield TextDelta(piece, i)
        self.turns = [*kept, turn]
        elapsed = time.perf_counter() - t_start
        yield TurnStats(
            question=question,
            text=answer,
            tokens=list(turn.answer_ids),
            prefill_tokens=self.frames_read * fresh + len(question.split()) + 1,
            ttft_s=ttft if ttft is not None else elapsed,
            decode_tokens_per_s=len(turn.answer_ids) / max(elapsed, 1e-9),
            timings=timings,
            read_video=fresh and self._frames is not None,
        )

    def _read_media(self, cancel: threading.Event | None, timings: dict[str, float]) -> Iterator[Event]:
        t0 = time.perf_counter()
        for frame in self._frames or ():
            _check(cancel)
            self.frames_read += 1
            self.timestamps.append(frame.t)
            yield Progress("frames", self.frames_read, self.total_frames or self.frames_read)
        timings["frames"] = time.perf_counter() - t0
        if self.frames_read == 0 and self._frames is not None:
            raise DamagedVideoError("no frame could be read from the video")
        self.damage = getattr(self._source, "damage", None)
        if self._speech_later is not None:  # recognition beside the video: its text, once ready
            self.speech = (yield from self._speech_later(cancel)) or ""
            self._speech_later = None
        self._media_done = True


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("stopped")
