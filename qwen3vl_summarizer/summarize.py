"""Orchestration: probe, plan, sample and open a session on one video; the CLI and the app share it.

``open_video`` does the cheap, checkable part (probe and plan: errors surface before any model work)
and returns a :class:`VideoJob` whose ``session`` reads frames lazily on its first ``ask``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .engine import Engine, Event, TurnStats, VideoSession
from .options import Options
from .plan import Plan, make_plan
from .video import FrameStream, VideoInfo, probe, sample

log = logging.getLogger(__name__)


@dataclass
class VideoJob:
    """One opened video: what it is, how it is fed to the model, and the session holding its cache."""

    info: VideoInfo
    plan: Plan
    context: int  # context length planned for, tokens
    frames: FrameStream
    session: VideoSession

    def ask(self, question: str, **kwargs) -> Iterator[Event]:
        return self.session.ask(question, **kwargs)

    @property
    def damage(self) -> str | None:
        """Set when the file turned out damaged and only the frames before the damage were used."""
        return self.frames.damage


def plan_video(
    info: VideoInfo, options: Options, context: int, prompt: str = "", engine: Engine | None = None
) -> Plan:
    """The plan for ``info`` under ``options`` (geometry from ``engine`` when loaded)."""
    return make_plan(
        info,
        options.sampling.fps,
        context,
        reserve=options.context.reserve_tokens,
        prompt=prompt,
        min_pixels=options.sampling.min_pixels,
        max_pixels=options.sampling.max_pixels,
        geometry=engine.geometry if engine is not None else None,
    )


def open_video(
    engine: Engine,
    path: str | os.PathLike,
    options: Options,
    prompt: str = "",
    *,
    cache_reuse: bool = True,
) -> VideoJob:
    """Probe and plan ``path``, and open a lazy session on it. Raises VideoError / OptionsError early.

    A video that does not fit the context in one pass is read up to its first segment's end, for now;
    the log says so.
    """
    info = probe(path)
    context = engine.context_length(options.context)
    plan = plan_video(info, options, context, prompt, engine)
    first = plan.segments[0]
    end = None if plan.fits else first.end
    if not plan.fits:
        log.warning(
            "%s needs %d segments at this context; summarising the first (%.0f-%.0f s)",
            info.path,
            len(plan.segments),
            first.start,
            first.end,
        )
    frames = sample(path, options.sampling.fps, (plan.width, plan.height), end=end)
    session = engine.session(
        frames,
        total_frames=first.frames,
        context=options.context,
        generation=options.generation,
        max_context=context,
        expected_tokens=first.tokens + options.generation.max_new_tokens,
        cache_reuse=cache_reuse,
    )
    return VideoJob(info=info, plan=plan, context=context, frames=frames, session=session)


def final_stats(events: Iterator[Event]) -> TurnStats:
    """Run a stream to its end and return its TurnStats."""
    last = None
    for last in events:  # noqa: B007
        pass
    if not isinstance(last, TurnStats):
        raise RuntimeError("the answer stream ended without its statistics")
    return last
