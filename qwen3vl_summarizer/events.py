"""What an answer streams, and the answer object that every consumer reads it through.

``VideoSession.ask()`` and ``VideoJob.ask()`` return a :class:`Response`. Iterating it streams the
answer's text; ``response.events()`` streams :class:`Progress` and :class:`TextDelta` events and, last,
the turn's :class:`TurnStats`. Once consumed, ``response.text`` and ``response.stats`` hold the answer,
and iterating again replays it from memory (as simonw/llm's ``Response`` does). A stream that ends without its statistics raises
:class:`~.errors.IncompleteAnswerError`, in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import IncompleteAnswerError


@dataclass(frozen=True)
class Progress:
    """Work under way: ``stage`` is "frames", "vision", "prefill", "segment", "merge" or "speech"
    (recognition beside the video); ``done`` of ``total`` units (frames, tokens, parts, or audio seconds)."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class TextDelta:
    """New answer text (may be empty when a token completes no character yet)."""

    text: str
    token_id: int | None  # None for the flush of an incomplete character at the end, or for headers


@dataclass(frozen=True)
class TurnStats:
    """How one answered turn went; ``text`` is the whole answer."""

    question: str
    text: str
    tokens: list[int]  # generated token ids (end-of-turn token excluded)
    prefill_tokens: int  # tokens computed for this turn before the first answer token
    ttft_s: float  # time to first token, seconds
    decode_tokens_per_s: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: frames, vision, prefill
    read_video: bool = False  # whether this turn decoded or encoded the video (else it came from the cache)
    cached_tokens: int | None = None  # prompt tokens a model server took from its prefix cache (None: local)

    def to_dict(self) -> dict[str, Any]:
        """The turn's numbers for the JSON export and the page (no answer text or token ids)."""
        return {
            "question": self.question,
            "read_video": self.read_video,
            "prefill_tokens": self.prefill_tokens,
            "generated_tokens": len(self.tokens),
            "ttft_s": round(self.ttft_s, 3),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 1),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            **({} if self.cached_tokens is None else {"cached_tokens": self.cached_tokens}),
        }

    def as_json(self) -> dict[str, Any]:
        """Everything, token ids and text included (the CLI's ``--json``)."""
        return dataclasses.asdict(self)


Event = Progress | TextDelta | TurnStats


class Response:
    """One answer, as simonw/llm's ``Response``: iterating it streams the answer's text (``str`` chunks);
    :meth:`events` streams the typed events (:class:`Progress`, :class:`TextDelta`, then the turn's
    :class:`TurnStats`) for a front end that shows progress too. Either way, once consumed, ``.text`` is
    the answer (exactly the chunks streamed, joined), ``.stats`` its statistics, and iterating again
    replays from memory.

    ``on_done(stats)`` is called once, when the stream delivers its statistics. ``close()`` stops a
    stream that is still running (the session rewinds the unfinished turn).
    """

    def __init__(self, events: Iterator[Event], on_done: Callable[[TurnStats], None] | None = None):
        self._source = events
        self._finished = False  # the source is exhausted: iterating replays ``_events``
        self._events: list[Event] = []
        self._stats: TurnStats | None = None
        self._on_done = on_done
        self.streamed = ""  # the text so far (``.text`` once the stream has ended)

    def __iter__(self) -> Iterator[str]:
        for event in self.events():
            if isinstance(event, TextDelta) and event.text:
                yield event.text

    def events(self) -> Iterator[Event]:
        """The typed events, as they come (or replayed, once consumed)."""
        if self._finished:
            yield from self._events
            return
        try:
            for event in self._source:
                self._events.append(event)
                if isinstance(event, TextDelta):
                    self.streamed += event.text
                elif isinstance(event, TurnStats):
                    self._stats = event
                    if self._on_done is not None:
                        self._on_done(event)
                yield event
        except GeneratorExit:  # the consumer left the loop early: stop the work now, not at collection
            self.close()
            raise
        self._finished = True
        if self._stats is None:
            raise IncompleteAnswerError("the answer stream ended without its statistics")

    def relay(self) -> Iterator[Event]:
        """Yield the progress and text events; return the stats (``stats = yield from r.relay()``)."""
        for event in self.events():
            if not isinstance(event, TurnStats):
                yield event
        return self.stats

    @property
    def done(self) -> bool:
        return self._stats is not None

    @property
    def stats(self) -> TurnStats:
        """The turn's statistics; runs the stream to its end first if it has not been read."""
        if self._stats is None:
            for _ in self.events():
                pass
        if self._stats is None:  # closed before its end
            raise IncompleteAnswerError("the answer was stopped before it finished")
        return self._stats

    @property
    def text(self) -> str:
        """The whole answer, as streamed; runs the stream to its end first if it has not been read."""
        self.stats  # noqa: B018
        return self.streamed

    def close(self) -> None:
        """Stop the stream if it is still running; its turn is dropped and the session stays usable."""
        close = getattr(self._source, "close", None)
        if close is not None and not self._finished:
            close()
        self._finished = True
