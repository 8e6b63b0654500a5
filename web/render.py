"""What the page shows, as Markdown or HTML: the video's facts, the plan, progress, the transcript panel, the
chapter timeline, and text from the model or a person made safe to show. Pure functions of library objects;
texts in the language the handler passes (``lang``, :mod:`web.i18n`)."""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from gradio.i18n import I18nData

from qwen3vl_summarizer.engine import Engine
from qwen3vl_summarizer.errors import SummarizerError
from qwen3vl_summarizer.export import Chapter, parse_chapters
from qwen3vl_summarizer.jobs import plan_for
from qwen3vl_summarizer.markdown import code_ranges
from qwen3vl_summarizer.options import Options
from qwen3vl_summarizer.plan import Geometry
from qwen3vl_summarizer.summarize import VideoJob
from qwen3vl_summarizer.timeline import Thumbnails
from qwen3vl_summarizer.timestamps import (
    SECONDS_PER_HOUR,
    SEEK_ANCHOR,
    format_seek,
    format_timestamp,
    link_timestamps,
)
from qwen3vl_summarizer.video import Frame, VideoInfo

from .i18n import say

# Span and card colours, cycled (a colour-blind-safe palette: Okabe-Ito, minus black and yellow).
CHAPTER_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7F7F7F")
NO_SUMMARY_NOTE = say("en", "no_summary_note")
NO_CHAPTERS_NOTE = say("en", "no_chapters_note")
MIN_SPAN_PERCENT = 0.4  # a chapter shorter than this share of the video still gets a visible span
MERGE_SPEECH_PERCENT = 0.3  # speech marks closer than this share of the video are drawn as one


# --- text from the model or a person -------------------------------------------------------------------


def no_raw_html(markdown: str) -> str:
    """Markdown with every ``<`` outside code shown as text: a model's answer or a person's message cannot
    make the browser load a remote image (``<img src=…>``) or run anything. Code (fenced with ``` or ~~~ of
    any length, or inline) keeps its ``<``."""
    parts, at = [], 0
    for start, end in code_ranges(markdown):
        parts += [markdown[at:start].replace("<", "&lt;"), markdown[start:end]]
        at = end
    parts.append(markdown[at:].replace("<", "&lt;"))
    return "".join(parts)


def shown(markdown: str, duration: float | None) -> str:
    """Text from the model or a person as the page shows it: no raw HTML, every time a seek link."""
    return link_timestamps(no_raw_html(markdown), duration)


# --- lines about the video, the plan and the work -------------------------------------------------------


def video_line(info: VideoInfo, lang: str = "en") -> str:
    """``**Duration** 00:03 · **Resolution** 128×96 · **Frame rate** 25 fps · **Codec** h264``."""
    parts = [
        f"**{say(lang, 'duration')}** {format_timestamp(info.duration)}",
        f"**{say(lang, 'resolution')}** {info.width}×{info.height}",
        f"**{say(lang, 'frame_rate')}** {info.fps:.4g} fps",
        f"**{say(lang, 'codec')}** {info.codec}",
    ]
    if not info.has_audio:
        parts.append(say(lang, "no_audio"))
    return " · ".join(parts)


def plan_line(info: VideoInfo, options: Options, prompt: str, engine: Engine | None, speech: str = "",
              start: float = 0.0, end: float | None = None) -> str:  # fmt: skip
    """What the model will see and what it costs, as one line; planning problems become the line.
    ``speech``: the transcript as the model reads it, once known (its tokens are counted and shown).
    ``start``/``end``: the time range read, seconds (the whole video by default)."""
    auto = options.context.max_context == "auto"
    try:
        plan = plan_for(info, options, speech + prompt, engine, start=start, end=end)
    except SummarizerError as e:
        return f"**Cannot plan:** {e}"
    line = "**Plan:** " + plan.summary()
    if speech:
        geometry = engine.geometry(options.context) if engine is not None else Geometry()
        line += f" · of which speech {geometry.text_tokens(speech):,} tokens"
    if not plan.fits:
        length = format_timestamp(max(s.end - s.start for s in plan.segments))
        line += f" (parts of up to {length}, each summarised with the video's own times, then merged)"
    if auto and engine is None:
        line += " · *auto context: the exact length is set when the model loads*"
    return line


def progress_line(stages: dict[str, tuple[int, int]], started: float, lang: str = "en") -> str:
    """``Decoding frames 4/8 · Encoding vision 4/8 · Prefill 43/51 tokens · about 3 s left``.

    The estimate follows prefill, which trails decoding and vision and ends with the video's last
    token, so it holds through all three stages; before the first prefill chunk it follows decoding."""
    if "merge" in stages:
        parts = [say(lang, "merging")]
        stages = {k: v for k, v in stages.items() if k == "prefill"}
    else:
        parts = []
    for stage in ("segment", "frames", "vision", "prefill"):
        if stage in stages:
            done, total = stages[stage]
            unit = say(lang, "tokens_unit") if stage == "prefill" else ""
            parts.append(f"{say(lang, 'stage_' + stage)} {done:,}/{total:,}{unit}")
    done, total = stages.get("prefill", stages.get("frames", (0, 0)))
    elapsed = time.perf_counter() - started
    if 0 < done < total and elapsed > 1:
        parts.append(say(lang, "time_left", seconds=f"{elapsed * (total - done) / done:.0f}"))
    if "speech" in stages and stages["speech"][0] < stages["speech"][1]:  # recognition beside the video
        parts.append(speech_line(*stages["speech"], started, lang))
    return " · ".join(parts)


def speech_line(done: float, total: float, started: float, lang: str = "en") -> str:
    """``Transcribing the speech 01:20/45:00 · about 40 s left``."""
    hours = total >= 3600
    line = say(lang, "transcribing", done=format_timestamp(done, hours), total=format_timestamp(total, hours))
    elapsed = time.perf_counter() - started
    if 0 < done < total and elapsed > 1:
        line += " · " + say(lang, "time_left", seconds=f"{elapsed * (total - done) / done:.0f}")
    return line


def transcript_markdown(job: VideoJob, lang: str = "en") -> str:
    """The transcript panel: one line a segment, its time a link that seeks the player; or why there is
    no speech in this summary."""
    transcript = job.transcript
    if transcript is None and job.pending_speech is not None:
        return say(lang, "speech_pending")
    if transcript is None:
        if job.options.speech.mode == "off":
            return say(lang, "speech_off")
        if not job.info.has_audio:
            return say(lang, "no_audio_track")
        return say(lang, "no_speech_source")
    hours = job.info.duration >= 3600
    # The words are the video's, not ours: shown as text (escaped), never as HTML or Markdown links.
    lines = [f"- {link_timestamps(f'[{format_timestamp(s.start, hours)}]', job.info.duration)} "
             f"{html.escape(s.text).replace('[', '&#91;')}" for s in transcript.segments]  # fmt: skip
    kind, _, detail = transcript.source.partition(":")  # asr:small, sidecar:talk.srt, embedded:mov_text
    source = say(lang, f"source_{kind}", detail=detail) if kind in ("asr", "sidecar", "embedded") else kind
    if transcript.span is not None:  # a time range: only that part was listened to
        first, last = (format_timestamp(t, hours) for t in transcript.span)
        source = say(lang, "source_span", source=source, first=first, last=last)
    if transcript.language:
        source += f" ({transcript.language})"
    heading = say(lang, "transcript_heading", lines=len(transcript.segments), source=source)
    return heading + "\n\n" + ("\n".join(lines) if lines else say(lang, "nothing_said"))


# --- the chapter timeline ---------------------------------------------------------------------------------
# A bar with one clickable span per chapter, a thin track where speech is, and a card per chapter with the
# thumbnail of the frame read nearest its start. Every link is ``href="#t=SECONDS"``, the anchor the page's
# seek script handles; a link's text is the chapter's start time, so the seek pre-fills the question box
# with "What is happening at 03:10?". Styles: static/page.css.


def timeline_html(job: VideoJob, lang: str = "en") -> str:
    """The chapter timeline of the job's finished summary (a bar over the whole video, where speech is under
    it, a card per chapter with the thumbnail of the frame read nearest its start, decoded now when the
    frames were not: a feature-cache hit), or a one-line note when it has no chapters."""
    speech = job.transcript.segments if job.transcript is not None else ()
    return chapter_timeline(job.summary_text, job.info.duration, job.thumbnails, end=job.plan.end,
                            speech=speech, read_frame=job.frame_reader(), lang=lang)  # fmt: skip


class Said(Protocol):
    """A stretch of speech (a transcript's segment): seconds on the video's clock, and its words."""

    start: float
    end: float
    text: str


def chapter_timeline(
    markdown: str,
    duration: float,
    thumbnails: Thumbnails | None = None,
    *,
    end: float | None = None,
    speech: Sequence[Said] = (),
    read_frame: Callable[[float], Frame | None] | None = None,
    lang: str = "en",
) -> str:
    """The timeline of a summary's chapters (:func:`~qwen3vl_summarizer.export.parse_chapters`) on a video of
    ``duration`` seconds, as HTML. ``end``: where the summarised range ends, when it is not the video's end
    (the last chapter ends there). ``speech``: the transcript's segments, marked under the chapters.
    ``read_frame`` (:func:`~qwen3vl_summarizer.timeline.frame_reader`): decodes the frames the cards need
    that were not kept while reading (:meth:`Thumbnails.fill`); they are kept in ``thumbnails``."""
    chapters, _ = parse_chapters(markdown, duration if end is None else end)
    if thumbnails is not None and read_frame is not None:
        thumbnails.fill([c.start for c in chapters], read_frame)
    return render_timeline(chapters, duration, thumbnails, speech, lang=lang)


def speech_track(speech: Sequence[Said], duration: float) -> str:
    """HTML: a thin bar with a mark where each stretch of speech is (marks closer than
    MERGE_SPEECH_PERCENT of the video drawn as one), each a link to its start; "" without speech."""
    if not speech or not duration > 0:
        return ""
    hours = duration >= SECONDS_PER_HOUR
    merged: list[list] = []  # [start, end, first text, how many]
    for said in sorted(speech, key=lambda s: s.start):
        if merged and (said.start - merged[-1][1]) / duration * 100 < MERGE_SPEECH_PERCENT:
            merged[-1][1] = max(merged[-1][1], said.end)
            merged[-1][3] += 1
        else:
            merged.append([said.start, said.end, said.text, 1])
    marks = []
    for start, stop, text, count in merged:
        left = min(100.0, max(0.0, start / duration * 100))
        width = min(100.0 - left, max(0.0, (stop - start) / duration * 100))
        when = format_timestamp(start, hours)
        words = html.escape(text + (f" (and {count - 1} more)" if count > 1 else ""))
        marks.append(
            f'<a class="timeline-said" href="{SEEK_ANCHOR}{format_seek(start)}" title="{when} {words}" '
            f'aria-label="Speech at {when}: {words}" style="left: {left:.2f}%; width: {width:.2f}%;">'
            f'<span class="timeline-hidden">{when}</span></a>'
        )
    return f'<div class="timeline-speech" role="group" aria-label="Speech">{"".join(marks)}</div>'


def render_timeline(
    chapters: list[Chapter],
    duration: float,
    thumbnails: Thumbnails | None = None,
    speech: Sequence[Said] = (),
    lang: str = "en",
) -> str:
    """HTML: a bar with one span per chapter placed at ``start / duration`` (left) and as wide as its
    share of the video, the speech marks (:func:`speech_track`), then one card per chapter; every span,
    mark and card seeks the player to its start. Without chapters, a one-line note (and the speech)."""
    said = speech_track(speech, duration)
    if not chapters or not duration > 0:
        return note_html(say(lang, "no_chapters_note")) + (f'<nav class="timeline" aria-label="Timeline">{said}</nav>'
                                               if said else "")  # fmt: skip
    hours = max(duration, *(c.end for c in chapters)) >= SECONDS_PER_HOUR
    spans, cards = [], []
    for i, chapter in enumerate(chapters):
        colour = CHAPTER_COLOURS[i % len(CHAPTER_COLOURS)]
        left = min(100.0, max(0.0, chapter.start / duration * 100))
        width = min(100.0 - left, max(MIN_SPAN_PERCENT, (chapter.end - chapter.start) / duration * 100))
        start = format_timestamp(chapter.start, hours)
        when = f"{start}–{format_timestamp(chapter.end, hours)}"
        title = html.escape(chapter.title)
        href = f"{SEEK_ANCHOR}{format_seek(chapter.start)}"
        spans.append(
            f'<a class="timeline-span" href="{href}" data-title="{title}" title="{title} ({when})" '
            f'aria-label="Chapter {i + 1}: {title}, play from {start}" '
            f'style="left: {left:.2f}%; width: {width:.2f}%; background: {colour};">'
            f'<span class="timeline-hidden">{start}</span></a>'
        )
        thumbnail = thumbnails.nearest(chapter.start) if thumbnails is not None else None
        picture = (
            f'<img src="data:image/jpeg;base64,{base64.b64encode(thumbnail[1]).decode()}" alt="" '
            f'data-t="{format_seek(thumbnail[0])}">'
            if thumbnail is not None
            else '<span class="timeline-blank"></span>'
        )
        cards.append(
            f'<li class="timeline-card" style="border-top-color: {colour};">{picture}'
            f'<span class="timeline-text"><span class="timeline-title">{title}</span>'
            f'<a href="{href}" aria-label="Play {title} from {start}">{start}</a>'
            f"–{format_timestamp(chapter.end, hours)}</span></li>"
        )
    return (
        f'<nav class="timeline" aria-label="Chapters">'
        f'<div class="timeline-bar">{"".join(spans)}</div>{said}'
        f'<ol class="timeline-cards">{"".join(cards)}</ol></nav>'
    )


def note_html(text: str | I18nData) -> str:
    """The timeline's place when there is no timeline: one line saying why (a text, or a key the browser
    translates)."""
    return f'<p class="timeline-note">{text if isinstance(text, I18nData) else html.escape(text)}</p>'
