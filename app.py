"""Web app: upload a video, get a timestamped Markdown summary from Qwen3-VL, then ask follow-ups.

Thin front end over ``qwen3vl_summarizer``: handler functions first, then the ``gr.Blocks`` layout that
wires them (binding the app state), then ``main()``. The model (:class:`~qwen3vl_summarizer.loading.EngineSlot`)
and each browser session's open video (:class:`~qwen3vl_summarizer.jobs.JobStore`, keyed by
``request.session_hash``, freed on unload, caches released least recently used under
``server.session_memory_gb``) live in the library; the page keeps only its per-browser cancel events and
components. GPU work shares one queue slot pool (``concurrency_id="gpu"``).

    python app.py --model Qwen/Qwen3-VL-2B-Instruct --host 127.0.0.1 --port 7860
"""

import argparse
import contextlib
import functools
import html
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder as gradio_upload_folder

from qwen3vl_summarizer.engine import Engine, VideoSession
from qwen3vl_summarizer.errors import Cancelled, OptionsError, SessionBrokenError, SummarizerError
from qwen3vl_summarizer.events import Progress, Response, TextDelta
from qwen3vl_summarizer.export import FORMATS, get_writer
from qwen3vl_summarizer.jobs import JobStore
from qwen3vl_summarizer.loading import EngineSlot
from qwen3vl_summarizer.options import Options, load_options
from qwen3vl_summarizer.plan import Geometry, parse_range, plan_video
from qwen3vl_summarizer.prompts import list_prompts
from qwen3vl_summarizer.summarize import VideoJob
from qwen3vl_summarizer.timeline import (
    NO_SUMMARY_NOTE,
    TIMELINE_CSS,
    chapter_timeline,
    frame_reader,
    note_html,
)
from qwen3vl_summarizer.timestamps import format_timestamp, link_timestamps
from qwen3vl_summarizer.video import VideoInfo, probe, video_extensions

log = logging.getLogger("qwen3vl_summarizer.app")

FPS_MIN, FPS_MAX, FPS_STEP = 0.1, 4.0, 0.1  # frames per second offered by the slider
RANGE_NAMES = ("From", "To")  # the time-range fields, as their errors name them
# The context length a run may use, tokens: a typed or dragged value snaps into [CONTEXT_MIN, CONTEXT_MAX].
# The slider itself starts at 0, so that typing "5000" never passes through a value Gradio refuses ("5").
CONTEXT_MIN, CONTEXT_MAX, CONTEXT_STEP = 1024, 256 * 1024, 1024
DEFAULT_PROMPT = "general"
IMAGE_PROMPT = "Describe this image in detail, in Markdown. Include any text you can read in it."
STOPPED = "Stopped. The video stays loaded: ask again or press Summarize."
NOTHING_TO_STOP = "Nothing is running."
SUMMARY_PLACEHOLDER = "*The summary appears here, with every time a link into the video.*"
TRANSCRIPT_PLACEHOLDER = "*What is said in the video appears here once it is summarised.*"
SPEECH_CHOICES = [
    ("Auto: subtitles, else speech recognition", "auto"),
    ("Subtitles only (a file next to it or inside it)", "subtitles"),
    ("Speech recognition", "asr"),
    ("Off: frames only", "off"),
]
DOWNLOADS_PREFIX = "qwen3vl-app-"  # + pid: a folder per server process, removed once that process is gone
MAX_IMAGE_SIDE = 2048  # pixels; an image is shrunk to this before the model's processor sees it
SPEECH_POLL_S = 0.5  # how often the page hears how far transcription got, seconds
# Hides the transcript lines that do not contain the filter box's words (in the browser: no round trip).
FILTER_TRANSCRIPT_JS = """
(query) => {
  const words = (query || "").toLowerCase().split(/\\s+/).filter(Boolean);
  for (const item of document.querySelectorAll("#transcript li")) {
    const text = item.innerText.toLowerCase();
    item.style.display = words.every((w) => text.includes(w)) ? "" : "none";
  }
  return query;
}
"""
# The upload field takes every video container FFmpeg (PyAV) demuxes, by extension (video_extensions).
# Gradio's video upload accepts only what the browser types video/*, and Chromium types an MPEG-TS file
# (.ts) as a Qt translation (text/...): UPLOAD_TYPES_JS retypes such files and lists the extensions in the
# file picker.
UPLOAD_TYPES_JS = """
() => {
  if (window.__qwen3vlUploadTypes) return;
  window.__qwen3vlUploadTypes = true;
  const extensions = EXTENSIONS;
  const isVideo = (file) => file.type.startsWith("video/")
    || !extensions.some((ext) => file.name.toLowerCase().endsWith(ext));
  const retyped = (files) => {
    const list = new DataTransfer();
    for (const file of files) {
      list.items.add(isVideo(file) ? file : new File([file], file.name, { type: "video/mp2t" }));
    }
    return list.files;
  };
  const inPlayer = (event) => event.target.closest && event.target.closest("#player");
  // Before Gradio's own listeners (capture): a picked file gets a video type...
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!inPlayer(event) || input.type !== "file" || [...input.files].every(isVideo)) return;
    input.files = retyped(input.files);
  }, true);
  // ...and a dropped one goes through the file input the same way.
  document.addEventListener("drop", (event) => {
    const files = event.dataTransfer ? [...event.dataTransfer.files] : [];
    const input = inPlayer(event) && document.querySelector("#player input[type=file]");
    if (!input || files.every(isVideo)) return;
    event.preventDefault();
    event.stopPropagation();
    input.files = retyped(files);
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }, true);
  const widen = () => {  // the file picker lists these files too
    const input = document.querySelector("#player input[type=file]");
    if (input && !input.accept.includes(extensions[0])) input.accept += ", " + extensions.join(", ");
  };
  new MutationObserver(widen).observe(document.body, { childList: true, subtree: true });
  widen();
}
""".replace("EXTENSIONS", json.dumps(video_extensions()))
GENERIC_ERROR = "Something went wrong on the server (details are in its log). Try again, or reload the page."

# Clicking a seek link ``[03:25](#t=205)`` (made by link_timestamps) moves the player there and plays;
# when the question box is empty it is pre-filled with a question about that moment.
SEEK_JS = """
() => {
  if (window.__qwen3vlSeek) return;
  window.__qwen3vlSeek = true;
  document.addEventListener("click", (event) => {
    const link = event.target.closest ? event.target.closest('a[href^="#t="]') : null;
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    const seconds = parseFloat(link.getAttribute("href").slice(3));
    const video = document.querySelector("#player video");
    if (video && Number.isFinite(seconds)) {
      video.currentTime = seconds;
      video.play().catch(() => {});
      const box = video.getBoundingClientRect();  // a link far below it (a phone): bring the player up
      if (box.top < 0 || box.bottom > window.innerHeight) {
        video.scrollIntoView({ block: "nearest" });
      }
    }
    const box = document.querySelector("#question textarea");
    if (box && !box.value.trim()) {
      box.value = `What is happening at ${link.textContent.trim()}?`;
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }, true);
}
"""

# For screen readers and keyboards: the status line and the summary are live regions (read out as they
# change), every seek link is named for what it does ("Play from 01:30"), and Ctrl+Enter (or Cmd+Enter)
# presses Ask in the question box, else the visible tab's main button (Summarize, Describe).
KEYS_HINT = (
    "<small>Keys: <kbd>Ctrl</kbd>+<kbd>Enter</kbd> (<kbd>⌘</kbd>+<kbd>Enter</kbd> on a Mac) summarizes; "
    "<kbd>Enter</kbd> in the question box asks.</small>"
)
ACCESS_JS = """
() => {
  if (window.__qwen3vlAccess) return;
  window.__qwen3vlAccess = true;
  const label = () => {
    for (const [id, name] of [["status", "Status"], ["summary", "Summary"], ["model-status", "Model"]]) {
      const el = document.getElementById(id);
      if (el && !el.hasAttribute("aria-live")) {
        el.setAttribute("role", id === "summary" ? "region" : "status");
        el.setAttribute("aria-live", "polite");
        el.setAttribute("aria-label", name);
      }
    }
    for (const link of document.querySelectorAll('a[href^="#t="]:not([aria-label])')) {
      link.setAttribute("aria-label", `Play from ${link.textContent.trim()}`);
    }
  };
  new MutationObserver(label).observe(document.body, { childList: true, subtree: true, characterData: true });
  label();
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.isComposing) return;
    const asking = event.target.closest && event.target.closest("#question");
    const ids = asking ? ["#ask"] : ["#summarize", "#describe"];
    const button = ids.map((id) => document.querySelector(id)).find((el) => el && el.offsetParent);
    if (!button) return;
    event.preventDefault();
    event.stopPropagation();  // not also Gradio's own Enter in the question box
    button.click();
  }, true);
}
"""
SUMMARY_MAX_HEIGHT = 520  # pixels; a longer summary scrolls inside its box
PLAYER_HEIGHT = 360  # pixels: a tall (4:3, portrait) video leaves room for its timeline and transcript
# Layout fixes Gradio's options do not reach (served with the page by launch()).
PAGE_CSS = """
#model-row { flex-wrap: nowrap; align-items: flex-end; }
#model-row > * { min-width: 0; }
#load-model { flex: 0 0 auto; align-self: flex-end; }
#player-note:has(#player-note-text:empty) { display: none; }
#keys-hint kbd { font-size: 0.85em; padding: 0 3px; border: 1px solid var(--border-color-primary);
  border-radius: 3px; }
"""

# Only the browser knows what it can play: Chromium plays H.264, VP9 and AV1 in MP4, MOV and MKV, but not
# AVI or MPEG-TS files, MPEG-4 Part 2, or HEVC without a hardware decoder. When the player fails (an error,
# or a picture 0 pixels wide) the page says so under it; the summary reads the file itself and still works.
# That note is the page's one word on it: Gradio's own "Video not playable" toast is kept from firing (the
# error stops at the document, before the player's listener). A file the summary cannot read either is
# taken out of the player by on_video, with the reason in the status line.
CANNOT_PLAY = (
    "Your browser cannot play this file, so the player stays blank and clicking a time will not move "
    "it. The summary and the questions still work. To watch along, convert it to H.264 MP4, e.g. "
    "ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4, and upload that."
)
PLAYER_NOTE_JS = """
() => {
  if (window.__qwen3vlPlayerNote) return;
  window.__qwen3vlPlayerNote = true;
  const note = (text) => {
    const el = document.querySelector("#player-note-text");
    if (el) el.innerText = text;
  };
  const inPlayer = (event) => event.target.closest && event.target.closest("#player video");
  // media events do not bubble, so listen while they descend (capture)
  document.addEventListener("loadstart", (event) => { if (inPlayer(event)) note(""); }, true);
  document.addEventListener("error", (event) => {
    if (!inPlayer(event)) return;
    event.stopPropagation();
    note(CANNOT_PLAY);
  }, true);
  document.addEventListener("loadedmetadata", (event) => {
    const video = inPlayer(event);
    if (video) note(video.videoWidth ? "" : CANNOT_PLAY);
  }, true);
  const player = document.querySelector("#player");
  if (player) {  // the video was cleared: no note about it
    new MutationObserver(() => { if (!player.querySelector("video")) note(""); })
      .observe(player, { childList: true, subtree: true });
  }
}
""".replace("CANNOT_PLAY", json.dumps(CANNOT_PLAY))


# ----------------------------------------------------------------------------------------------------
# Server-side state: the model and the open videos live in the library; the page keeps its cancel events


class Cancels:
    """Each browser session's cancel event for the work it runs now (its Stop button sets it)."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def new(self, sid: str) -> threading.Event:
        """A fresh event for the work this session starts now."""
        event = threading.Event()
        with self._lock:
            self._events[sid] = event
        return event

    def running(self, sid: str) -> bool:
        """Whether work that this session started still runs (its event is not set)."""
        with self._lock:
            event = self._events.get(sid)
        return event is not None and not event.is_set()

    def stop(self, sid: str) -> bool:
        """Set the session's event; False when none was running."""
        with self._lock:
            event = self._events.get(sid)
        running = event is not None and not event.is_set()
        if event is not None:
            event.set()
        return running

    def forget(self, sid: str) -> None:
        self.stop(sid)
        with self._lock:
            self._events.pop(sid, None)


class AppState:
    """Everything the handlers share: options, the model, the open videos, cancel events, downloads."""

    def __init__(self, options: Options):
        self.options = options
        self.jobs = JobStore(budget_bytes=int(options.server.session_memory_gb * 2**30))
        self.engines = EngineSlot(options.model, on_switch=self.jobs.drop_engine)
        self.cancels = Cancels()
        remove_leftover_downloads()
        self.downloads = Path(tempfile.mkdtemp(prefix=f"{DOWNLOADS_PREFIX}{os.getpid()}-"))

    @property
    def models(self) -> list[str]:
        """What the model menu offers: the configured model, then the allowed ones."""
        return list(dict.fromkeys([self.options.model.id, *self.options.server.allowed_models]))

    def model_for(self, model_id: str | None) -> str:
        """The model a request may load: one the operator offers, or any with server.allow_any_model."""
        model_id = (model_id or "").strip() or self.options.model.id
        if model_id not in self.models and not self.options.server.allow_any_model:
            raise ModelNotOffered(
                f"this server offers these models: {', '.join(self.models)} (its operator can allow others "
                "with server.allow_any_model)"
            )
        return model_id

    def check_text(self, text: str, what: str) -> str | None:
        """Why ``text`` (a prompt or a question) cannot be accepted, or None."""
        limit = self.options.server.max_prompt_chars
        if len(text) > limit:
            return f"The {what} is {len(text):,} characters long; this server accepts up to {limit:,}."
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"The {what} holds characters that are not valid text (lone surrogates): type or paste it again."
        return None


def image_input(**kwargs: Any) -> gr.Image:
    """gr.Image that hands a file Pillow cannot open to the handler (read_image says what is wrong, in the
    status line) instead of failing the event with Gradio's generic error, as an API client's upload can.
    Its preprocess is wrapped on the instance: a subclass of a Gradio component writes a .pyi stub beside
    this file at import."""
    from PIL import UnidentifiedImageError

    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def preprocess_or_path(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (UnidentifiedImageError, OSError, ValueError):
            if payload is None or payload.path is None:
                raise
            return str(payload.path)

    image.preprocess = preprocess_or_path
    return image


class ModelNotOffered(SummarizerError):
    """A request named a model that the operator does not offer."""


class NotAnUpload(SummarizerError):
    """A request named a file on the server that was not uploaded through it."""


def uploaded(path: str) -> str:
    """``path`` if it is a file uploaded through this server (in Gradio's upload folder), else refuse:
    a client must not make the server read, or learn about, any other file."""
    folder = Path(gradio_upload_folder()).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(folder) or not resolved.is_file():
        raise NotAnUpload("only files uploaded through this page can be read: upload the file again")
    return str(resolved)


def remove_leftover_downloads() -> None:
    """Download folders of app processes that are no longer running (a crash, a kill) are deleted."""
    for folder in Path(tempfile.gettempdir()).glob(f"{DOWNLOADS_PREFIX}*"):
        pid = folder.name.removeprefix(DOWNLOADS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_image(path: str, max_pixels: int) -> np.ndarray:
    """An uploaded image as RGB [H, W, 3], refused before decoding when its header says it is larger than
    ``max_pixels``, and shrunk to at most MAX_IMAGE_SIDE pixels a side (the model reads less than that)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise OptionsError(
                    f"the image is {width}×{height} ({width * height / 1e6:.0f} megapixels); this server reads "
                    f"images up to {max_pixels / 1e6:.0f} megapixels"
                )
            image.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # JPEG: decode at a reduced scale
            image = image.convert("RGB")
            image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
            return np.asarray(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
        raise OptionsError(
            f"{Path(path).name} is not an image this server can read ({e.__class__.__name__})"
        ) from None


def describe_model(state: AppState) -> str:
    engine = state.engines.engine
    if engine is None:
        return "**Model:** not loaded yet; it loads on first use, or press *Load model*."
    return f"**Model:** `{engine.model_id}` on {engine.device}, {str(engine.dtype).removeprefix('torch.')}"


def _message(e: SummarizerError, upload: str | None = None) -> str:
    """The error's one line, naming an upload by its file name rather than its server-side path."""
    text = str(e)
    return text.replace(upload, Path(upload).name) if upload else text


def show_error(message: str) -> str:
    """A failure: a toast now, and the status line to return, which stays until the next action.

    Handlers never raise ``gr.Error``: Gradio would paint an error badge over every output of the event
    (summary, chat, question box), blocking typing until each is closed."""
    gr.Warning(message, title="Error")
    return f"**Error:** {message}"


def warn(message: str) -> str:
    """A problem with the request itself: a toast, and the same words in the status line."""
    gr.Warning(message)
    return message


@dataclass
class _Failure:
    message: str = ""

    def show(self) -> str:
        return show_error(self.message)

    def __bool__(self) -> bool:
        return bool(self.message)


@contextlib.contextmanager
def _status_errors(upload: str | None = None) -> Iterator[_Failure]:
    """Catch a library error (what happened, what to do) or an unexpected one (logged) into the yielded
    failure, for the handler to show (:func:`show_error`) after the block."""
    failure = _Failure()
    try:
        yield failure
    except SummarizerError as e:
        failure.message = _message(e, upload)
    except Exception:
        log.exception("unexpected error in a request")
        failure.message = GENERIC_ERROR


# ----------------------------------------------------------------------------------------------------
# Small pure helpers


_CODE_RE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)


def no_raw_html(markdown: str) -> str:
    """Markdown with every ``<`` outside code shown as text: a model's answer or a person's message cannot
    make the browser load a remote image (``<img src=…>``) or run anything. Code keeps its ``<``."""
    parts = _CODE_RE.split(markdown)
    return "".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def shown(markdown: str, duration: float | None) -> str:
    """Text from the model or a person as the page shows it: no raw HTML, every time a seek link."""
    return link_timestamps(no_raw_html(markdown), duration)


def prompt_choices() -> list[tuple[str, str]]:
    """(menu label, template name) of the summary prompts; the merge templates are internal."""
    return [(f"{p.title} ({p.language})", p.name) for p in list_prompts() if not p.name.startswith("merge")]


def prompt_text(name: str) -> str:
    return next((p.text for p in list_prompts() if p.name == name), "")


def run_options(
    options: Options, fps: float, auto_context: bool, context: float, speech: str | None = None,
    language: str | None = None,
) -> Options:  # fmt: skip
    """The options of one run: the page's fps, context length and speech settings over the configured
    ones (None keeps the configured value)."""
    max_context = "auto" if auto_context else snap_context(context)
    speech_options = {"mode": speech, "language": None if language is None else language.strip().lower()}
    return options.replace(
        sampling={"fps": float(fps)},
        context={"max_context": max_context},
        speech={k: v for k, v in speech_options.items() if v is not None},
    )


def snap_context(tokens: float | None) -> int:
    """A context length from the page (typed, dragged, or sent by a client) as a run uses it: a whole
    number of tokens in [CONTEXT_MIN, CONTEXT_MAX]."""
    try:
        value = round(float(tokens))
    except (TypeError, ValueError, OverflowError):
        return CONTEXT_MAX
    return min(max(value, CONTEXT_MIN), CONTEXT_MAX)


def transcript_markdown(job: VideoJob) -> str:
    """The transcript panel: one line a segment, its time a link that seeks the player; or why there is
    no speech in this summary."""
    transcript = job.transcript
    if transcript is None and job.pending_speech is not None:
        return "*The speech is being transcribed while the video is read; its lines come with the summary.*"
    if transcript is None:
        if job.options.speech.mode == "off":
            return "*Speech is off for this summary: the model read the frames only.*"
        if not job.info.has_audio:
            return "*The video has no audio track: the model read the frames only.*"
        return (
            "*No subtitles were found and no speech model could be loaded (the server's log says why): "
            "the model read the frames only.*"
        )
    hours = job.info.duration >= 3600
    # The words are the video's, not ours: shown as text (escaped), never as HTML or Markdown links.
    lines = [f"- {link_timestamps(f'[{format_timestamp(s.start, hours)}]', job.info.duration)} "
             f"{html.escape(s.text).replace('[', '&#91;')}" for s in transcript.segments]  # fmt: skip
    source = transcript.source.replace("asr:", "speech recognition, ").replace("sidecar:", "subtitle file ")
    source = source.replace("embedded:", "subtitles in the video, ")
    if transcript.span is not None:  # a time range: only that part was listened to
        first, last = (format_timestamp(t, hours) for t in transcript.span)
        source += f" of {first}–{last} only"
    heading = f"*{len(transcript.segments)} lines from {source}" + (
        f" ({transcript.language})*" if transcript.language else "*"
    )
    return heading + "\n\n" + ("\n".join(lines) if lines else "*(nothing was said)*")


def timeline_html(job: VideoJob) -> str:
    """The chapter timeline of the job's finished summary (a bar over the whole video, where speech is under
    it, a card per chapter with the thumbnail of the frame read nearest its start, decoded now when the
    frames were not: a feature-cache hit), or a one-line note when it has no chapters."""
    plan = job.plan
    end = job.info.duration if plan.end is None else plan.end
    read = frame_reader(job.info.path, plan.fps, (plan.width, plan.height), plan.start, end)
    speech = job.transcript.segments if job.transcript is not None else ()
    return chapter_timeline(
        job.summary_text, job.info.duration, job.thumbnails, end=plan.end, speech=speech, read_frame=read
    )


def video_line(info: VideoInfo) -> str:
    parts = [
        f"**Duration** {format_timestamp(info.duration)}",
        f"**Resolution** {info.width}×{info.height}",
        f"**Frame rate** {info.fps:.4g} fps",
        f"**Codec** {info.codec}",
    ]
    if not info.has_audio:
        parts.append("no audio")
    return " · ".join(parts)


def plan_line(info: VideoInfo, options: Options, prompt: str, engine: Engine | None, speech: str = "",
              start: float = 0.0, end: float | None = None) -> str:  # fmt: skip
    """What the model will see and what it costs, as one line; planning problems become the line.
    ``speech``: the transcript as the model reads it, once known (its tokens are counted and shown).
    ``start``/``end``: the time range read, seconds (the whole video by default)."""
    auto = options.context.max_context == "auto"
    if engine is not None:
        context = engine.context_length(options.context)
    else:
        context = options.context.max_context_cap if auto else int(options.context.max_context)
    try:
        geometry = engine.geometry(options.context) if engine is not None else None
        plan = plan_video(info, options, context, speech + prompt, geometry, start=start, end=end)
    except SummarizerError as e:
        return f"**Cannot plan:** {e}"
    line = "**Plan:** " + plan.summary()
    if speech:
        line += f" · of which speech {(geometry or Geometry()).text_tokens(speech):,} tokens"
    if not plan.fits:
        length = format_timestamp(max(s.end - s.start for s in plan.segments))
        line += f" (parts of up to {length}, each summarised with the video's own times, then merged)"
    if auto and engine is None:
        line += " · *auto context: the exact length is set when the model loads*"
    return line


def progress_line(stages: dict[str, tuple[int, int]], started: float) -> str:
    """``Decoding frames 4/8 · Encoding vision 4/8 · Prefill 43/51 tokens · about 3 s left``.

    The estimate follows prefill, which trails decoding and vision and ends with the video's last
    token, so it holds through all three stages; before the first prefill chunk it follows decoding."""
    names = {
        "segment": "Part",
        "frames": "Decoding frames",
        "vision": "Encoding vision",
        "prefill": "Prefill",
    }
    if "merge" in stages:
        parts = ["Merging the parts"]
        stages = {k: v for k, v in stages.items() if k == "prefill"}
    else:
        parts = []
    for stage in ("segment", "frames", "vision", "prefill"):
        if stage in stages:
            done, total = stages[stage]
            unit = " tokens" if stage == "prefill" else ""
            parts.append(f"{names[stage]} {done:,}/{total:,}{unit}")
    done, total = stages.get("prefill", stages.get("frames", (0, 0)))
    elapsed = time.perf_counter() - started
    if 0 < done < total and elapsed > 1:
        parts.append(f"about {elapsed * (total - done) / done:.0f} s left")
    if "speech" in stages and stages["speech"][0] < stages["speech"][1]:  # recognition beside the video
        parts.append(speech_line(*stages["speech"], started))
    return " · ".join(parts)


def _folder_name(sid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", sid)


def _sid(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "local"


@contextlib.contextmanager
def _closing(response: Response, cancel: threading.Event) -> Iterator[Response]:
    """Close the answer's stream however its consumer stops (Stop, page closed, error).

    Closing it rewinds the session's cache to its last complete turn, so the session stays usable.
    """
    try:
        yield response
    finally:
        cancel.set()
        response.close()


# ----------------------------------------------------------------------------------------------------
# Handlers: plain functions of the app state and the event's inputs; build_demo binds the state.


def on_video(state: AppState, video: str | None, fps: float, auto: bool, context: float, prompt: str,
             range_from: str, range_to: str, request: gr.Request):  # fmt: skip
    """New upload: show its facts and plan, and clear what belonged to the previous video.

    Yields (video facts, plan line, VideoInfo, status, summary, chat, stats, downloads, transcript,
    timeline, player); the cleared view comes first, so a bad file leaves nothing of the old one behind,
    and a file that cannot be read leaves the player too (its reason stays in the status line)."""
    sid = _sid(request)
    job = state.jobs.get(sid)
    if job is not None and job.info.path != video:
        state.cancels.stop(sid)  # work on the old video has nothing more to show
        state.jobs.drop(sid)  # a new video: free the old one's cache now
    cleared = ("", SUMMARY_PLACEHOLDER, [], None, None, TRANSCRIPT_PLACEHOLDER, note_html(NO_SUMMARY_NOTE))
    if not video:
        yield "", "", None, *cleared, gr.skip()
        return
    try:
        info = probe(uploaded(video))
    except SummarizerError as e:
        yield "", "", None, show_error(_message(e, video)), *cleared[1:], None
        return
    plan = on_settings(state, info, fps, auto, context, prompt, range_from, range_to, request)
    yield video_line(info), plan, info, *cleared, gr.skip()


def on_clear(state: AppState, request: gr.Request):
    """The player was emptied: what belonged to its video goes too (see :func:`on_video`)."""
    yield from on_video(state, None, FPS_MIN, True, 0, "", "", "", request)


def on_settings(state: AppState, info: VideoInfo | None, fps: float, auto: bool, context: float,
                prompt: str, range_from: str, range_to: str, request: gr.Request) -> str:  # fmt: skip
    """The plan line, redrawn while the sliders and the From/To fields change; with the speech's tokens
    once it was transcribed."""
    if info is None:
        return "*Upload a video to see how it will be read.*"
    try:
        opts = run_options(state.options, fps, auto, context)
        start, end = parse_range(range_from, range_to, RANGE_NAMES)
    except OptionsError as e:
        return f"**Cannot plan:** {e}"
    job = state.jobs.peek(_sid(request))
    speech = job.speech if job is not None and job.info.path == info.path else ""
    return plan_line(info, opts, prompt or "", state.engines.engine, speech, start, end)


def context_view(state: AppState, auto: bool, context: float) -> dict:
    """The context slider: with Auto, greyed and showing the length auto picks (the loaded model's, on its
    device; the configured cap until a model is loaded); without, editable from the value it shows."""
    if not auto:
        return gr.update(interactive=True)
    engine = state.engines.engine
    opts = replace(state.options.context, max_context="auto")
    value = engine.context_length(opts) if engine is not None else opts.max_context_cap
    return gr.update(interactive=False, value=value)


def on_context_left(context: float) -> Any:
    """The context field was left (or the slider let go): a typed value outside the range snaps into it."""
    snapped = snap_context(context)
    return gr.skip() if snapped == context else snapped


def on_prompt_name(name: str) -> str:
    return prompt_text(name)


def load_model(state: AppState, model_id: str, progress=gr.Progress()) -> str:  # noqa: B008 (Gradio's idiom)
    progress(0.1, desc=f"Loading {model_id}…")
    with _status_errors() as failed:
        state.engines.get(state.model_for(model_id))
    if failed:  # the model that was loaded (if any) stays loaded
        return failed.show() + "  \n" + describe_model(state)
    return describe_model(state)


def summarize(state: AppState, video: str | None, prompt: str, fps: float, auto: bool, context: float,
              model_id: str, speech: str, language: str, range_from: str, range_to: str,
              request: gr.Request):  # fmt: skip
    """Stream the summary of the video, or of its ``range_from``-``range_to`` (typed times; empty: its
    start, its end). Yields (summary, status, stats, chat, download files, transcript, job id, timeline)."""
    sid = _sid(request)
    keep = (gr.skip(),) * 6  # stats, chat, downloads, transcript, job id, timeline
    if not video:
        yield gr.skip(), warn("No video yet: upload one (drag and drop works), then press Summarize."), *keep
        return
    if not (prompt or "").strip():
        yield gr.skip(), warn("The prompt is empty: pick a template or write what you want."), *keep
        return
    if problem := state.check_text(prompt, "prompt"):
        yield gr.skip(), warn(problem), *keep
        return
    try:
        time_range = parse_range(range_from, range_to, RANGE_NAMES)
    except OptionsError as e:
        yield gr.skip(), warn(str(e)), *keep
        return
    state.jobs.expire(state.options.server.session_idle_minutes * 60)
    cancel = state.cancels.new(sid)
    yield "", "Loading the model…", None, [], None, gr.skip(), gr.skip(), note_html(NO_SUMMARY_NOTE)
    with _status_errors(video) as failed:
        video = uploaded(video)
        opts = run_options(state.options, fps, auto, context, speech, language)
        engine = state.engines.get(state.model_for(model_id))
        try:
            opened = yield from _open_with_speech_progress(
                state, sid, engine, video, opts, prompt, cancel, time_range
            )
        except Cancelled:
            yield gr.skip(), STOPPED, *keep
            return
        job, response = opened
        yield (
            gr.skip(),
            gr.skip(),
            gr.skip(),
            gr.skip(),
            gr.skip(),
            transcript_markdown(job),
            state.jobs.token_for(sid),
            gr.skip(),
        )
        info, plan = job.info, job.plan
        note = "" if plan.fits else f" ({len(plan.segments)} parts, then a merge)"
        stages, started = {}, time.perf_counter()
        try:
            with _closing(response, cancel):
                for event in response:
                    if isinstance(event, Progress):
                        if event.stage in ("segment", "merge"):  # a new part: its own stages start over
                            stages = {event.stage: (min(event.done + 1, event.total), event.total)}
                            started = time.perf_counter()
                        else:
                            stages[event.stage] = (event.done, event.total)
                        yield gr.skip(), progress_line(stages, started) + note, *keep
                    elif isinstance(event, TextDelta):
                        text = shown(response.streamed, info.duration)
                        yield text, "Writing the summary…" + note, *keep
        except Cancelled:
            yield shown(response.streamed, info.duration), STOPPED, gr.skip(), [], None, *(gr.skip(),) * 3
            return
        final = response.stats
        files, skipped = write_downloads(state, sid, job)
        if job.damage:
            gr.Warning(f"The file is damaged; only the part before the damage was read: {job.damage}")
        if job.speech_note:
            gr.Warning(f"Speech: {job.speech_note}.")
        if final.text.strip():
            done = (
                f"Done: read {final.prefill_tokens:,} tokens, wrote {len(final.tokens):,} "
                f"({final.decode_tokens_per_s:.1f} tokens/s)"
            )
            chapters = [d for d in skipped if not d.startswith("transcript")]
            if chapters:
                done += f" · no {', '.join(chapters)} to download: the summary has no chapter times"
            if len(chapters) < len(skipped) and job.transcript is not None:
                done += " · the transcript was empty"
        else:
            done = (
                f"The model answered with no text ({len(final.tokens):,} tokens of white space or control "
                "tokens). Try another prompt or template, or a higher frame rate."
            )
        stats = {"turn": "summary", **final.to_dict()}
        summary = shown(final.text, info.duration) if final.text.strip() else SUMMARY_PLACEHOLDER
        yield summary, done + note, stats, [], files, transcript_markdown(job), gr.skip(), timeline_html(job)
    if failed:
        yield gr.skip(), failed.show(), *keep


def _open_with_speech_progress(state: AppState, sid: str, engine: Engine, video: str, opts: Options,
                               prompt: str, cancel: threading.Event,
                               time_range: tuple[float, float | None] = (0.0, None)):  # fmt: skip
    """``state.jobs.summarize`` (of ``time_range``, start and end seconds) on a worker thread, yielding
    status updates while speech is transcribed before the job exists (``summarize.SPEECH_BESIDE_VIDEO``
    off; otherwise recognition runs beside the video and reports in the Response's events, and this returns
    at once). Returns (job, response); raises what it raised."""
    heard: dict[str, tuple[float, float]] = {}
    started = time.perf_counter()

    def on_speech(done: float, total: float) -> None:
        heard["speech"] = (done, total)

    keep = (gr.skip(),) * 6
    start, end = time_range
    with ThreadPoolExecutor(1, thread_name_prefix="open-video") as pool:
        future = pool.submit(
            state.jobs.summarize, sid, engine, video, opts, prompt, cancel, on_speech, start=start, end=end
        )
        while True:
            try:
                return future.result(timeout=SPEECH_POLL_S)
            except FutureTimeout:
                if "speech" in heard:
                    yield gr.skip(), speech_line(*heard["speech"], started), *keep


def speech_line(done: float, total: float, started: float) -> str:
    """``Transcribing the speech 01:20/45:00 · about 40 s left``."""
    hours = total >= 3600
    line = f"Transcribing the speech {format_timestamp(done, hours)}/{format_timestamp(total, hours)}"
    elapsed = time.perf_counter() - started
    if 0 < done < total and elapsed > 1:
        line += f" · about {elapsed * (total - done) / done:.0f} s left"
    return line


def chat(
    state: AppState, message: str, history: list[dict], job_id: str | None = None, request: gr.Request = None
):
    """A follow-up about the summarised video, answered from its cache. ``job_id`` (what /summarize
    returned) lets an API client, whose every call is a new session, ask about the video it summarised.

    Yields (question box, chat, stats, status)."""
    sid = state.jobs.key_for(job_id) or _sid(request)
    message = (message or "").strip()
    keep = (gr.skip(),) * 3
    if not message:
        yield *keep, warn("Type a question first.")
        return
    if problem := state.check_text(message, "question"):
        yield *keep, warn(problem)
        return
    state.jobs.expire(state.options.server.session_idle_minutes * 60)
    job = state.jobs.get(sid)
    if job is None:
        text = (
            "No video has been read for this page yet (or it was unloaded to make room): "
            "upload a video if needed and press Summarize, then ask."
        )
        yield *keep, show_error(text)
        return
    duration = job.info.duration
    history = [*(history or []), {"role": "user", "content": shown(message, duration)}]
    cancel = state.cancels.new(sid)
    try:
        response = job.ask(message, cancel=cancel)
    except SessionBrokenError:
        state.jobs.drop(sid)
        text = "This video could not be read earlier: press Summarize to read it again."
        yield *keep, show_error(text)
        return
    yield "", history, gr.skip(), ""  # show the question now; the box is free for the next one
    with _status_errors() as failed:
        try:
            with _closing(response, cancel):
                for event in response:
                    if isinstance(event, TextDelta):
                        answer = {
                            "role": "assistant",
                            "content": shown(response.streamed, duration),
                        }
                        yield gr.skip(), [*history, answer], gr.skip(), gr.skip()
            answer = {"role": "assistant", "content": shown(response.text, duration)}
            if not response.text.strip():
                answer["content"] = "*(the model answered with no text; try asking another way)*"
            yield gr.skip(), [*history, answer], {"turn": "follow-up", **response.stats.to_dict()}, gr.skip()
        except Cancelled:
            answer = {
                "role": "assistant",
                "content": shown(response.streamed, duration) + " *(stopped)*",
            }
            yield gr.skip(), [*history, answer], gr.skip(), gr.skip()
    if failed:
        yield *keep, failed.show()


def describe_image(state: AppState, image: str | None, prompt: str, model_id: str, request: gr.Request):
    """Stream a description of one uploaded image with the same model."""
    if image is None:
        yield warn("No image yet: upload one, then press Describe.")
        return
    prompt = (prompt or "").strip() or IMAGE_PROMPT
    if problem := state.check_text(prompt, "prompt"):
        yield warn(problem)
        return
    cancel = state.cancels.new(_sid(request))
    yield "Loading the model…"
    with _status_errors() as failed:
        pixels = read_image(uploaded(image), state.options.server.max_image_pixels)
        engine = state.engines.get(state.model_for(model_id))
        options = state.options
        session = VideoSession(
            engine, None, image=pixels, context=options.context, generation=options.generation
        )
        response = session.ask(prompt, cancel=cancel)
        try:
            with _closing(response, cancel):
                for event in response:
                    if isinstance(event, TextDelta):
                        yield no_raw_html(response.streamed)
        except Cancelled:
            yield no_raw_html(response.streamed) + " *(stopped)*"
    if failed:
        yield failed.show()


def stop(state: AppState, request: gr.Request) -> str:
    """Stop this page's running work (its handler rewinds the unfinished turn)."""
    return STOPPED if state.cancels.stop(_sid(request)) else NOTHING_TO_STOP


def forget(state: AppState, request: gr.Request) -> None:
    """The page closed: stop its work and free its video."""
    sid = _sid(request)
    state.cancels.forget(sid)
    state.jobs.drop(sid)
    shutil.rmtree(state.downloads / _folder_name(sid), ignore_errors=True)


def write_downloads(state: AppState, sid: str, job: VideoJob) -> tuple[list[str], list[str]]:
    """The finished summary in every registered export format that has something to hold: (the files'
    paths, the descriptions of the formats left out because they would be empty, e.g. no chapters)."""
    summary = job.summary()
    folder = state.downloads / _folder_name(sid)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]", "_", Path(job.info.path).stem) or "video"
    paths, skipped = [], []
    for fmt in FORMATS:
        writer = get_writer(fmt)
        text = writer.to_string(summary)
        if not writer.has_content(text):
            skipped.append(writer.description)
            continue
        path = folder / f"{stem}.summary.{writer.extension}"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths, skipped


# ----------------------------------------------------------------------------------------------------
# Layout and wiring


def bind(handler: Callable, state: AppState) -> Callable:
    """``handler`` with ``state`` as its first argument, still a function (or generator function) whose
    signature and type hints Gradio reads to pass ``gr.Request`` and ``gr.Progress`` and to stream.
    (``functools.partial`` hides both from Gradio.)"""
    if inspect.isgeneratorfunction(handler):

        def bound(*args: Any, **kwargs: Any) -> Any:
            yield from handler(state, *args, **kwargs)
    else:

        def bound(*args: Any, **kwargs: Any) -> Any:
            return handler(state, *args, **kwargs)

    functools.update_wrapper(bound, handler)
    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    bound.__annotations__ = {k: v for k, v in handler.__annotations__.items() if k != "state"}
    del bound.__wrapped__  # Gradio must see the bound signature, not the handler's
    return bound


def build_demo(options: Options, state: AppState | None = None) -> gr.Blocks:
    """The web app for ``options`` (model id, sampling, context, server limits); no model is loaded."""
    state = state or AppState(options)
    auto_default = options.context.max_context == "auto"
    context_default = options.context.max_context_cap if auto_default else options.context.max_context
    context_default = snap_context(context_default)
    gpu = {"concurrency_id": "gpu", "concurrency_limit": options.server.concurrency_limit}
    cheap = {"concurrency_limit": None, "api_visibility": "private"}  # UI plumbing, outside the GPU pool

    max_age = int(options.server.upload_max_age_hours * 3600)
    # Uploads (and Gradio's copies of the files it serves) older than max_age are deleted, checked hourly;
    # Gradio also empties its cache when the server restarts, interrupted uploads included.
    with gr.Blocks(title="Qwen3-VL video summarizer", delete_cache=(min(max_age, 3600), max_age)) as demo:
        demo.app_state = state  # for tests and embedding
        gr.Markdown(
            "# Qwen3-VL video summarizer\nUpload a video, get a timestamped summary, then ask about it."
        )
        with gr.Row(elem_id="model-row"):  # one line even on a phone (PAGE_CSS); the status goes under it
            model_id = gr.Dropdown(
                state.models,
                value=options.model.id,
                label="Model",
                allow_custom_value=options.server.allow_any_model,
                scale=3,
                min_width=180,
                info="A Qwen3-VL Instruct checkpoint: hub id, local folder or quantized checkpoint",
            )
            load_btn = gr.Button("Load model", scale=0, min_width=110, elem_id="load-model")
        model_status = gr.Markdown(describe_model(state), elem_id="model-status")

        with gr.Tab("Video"), gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(
                    label="Video (MP4, MKV, MOV, WebM, AVI, MPEG-TS…)",
                    sources=["upload"],
                    elem_id="player",
                    height=PLAYER_HEIGHT,
                )
                gr.HTML('<p id="player-note-text" role="status"></p>', elem_id="player-note", padding=False)
                # Chapters of the finished summary: a bar of spans and cards that seek the player (SEEK_JS).
                timeline = gr.HTML(
                    note_html(NO_SUMMARY_NOTE), elem_id="timeline", css_template=TIMELINE_CSS, js_on_load=None
                )
                video_md = gr.Markdown(elem_id="video-info")
                with gr.Accordion(
                    "Transcript: what is said, each time a link", open=False, elem_id="transcript-box"
                ):
                    transcript_filter = gr.Textbox(
                        placeholder="Find a word…", show_label=False, elem_id="transcript-filter", max_lines=1
                    )
                    transcript = gr.Markdown(TRANSCRIPT_PLACEHOLDER, elem_id="transcript", max_height=320)
                info_state = gr.State(None)  # this page's VideoInfo
                prompt_name = gr.Dropdown(prompt_choices(), value=DEFAULT_PROMPT, label="Prompt template")
                prompt = gr.Textbox(prompt_text(DEFAULT_PROMPT), label="Prompt", lines=4, max_lines=8)
                with gr.Row(equal_height=True):
                    fps = gr.Slider(
                        FPS_MIN,
                        FPS_MAX,
                        value=options.sampling.fps,
                        step=FPS_STEP,
                        label="Frames per second",
                        elem_id="fps",
                        scale=3,
                    )
                    # The time range read; empty: from the start, to the end. 90, 1:30 or 01:00:00. (An
                    # initial "" makes them optional for API clients.)
                    range_from = gr.Textbox("", label=RANGE_NAMES[0], placeholder="start", max_lines=1,
                                            scale=1, min_width=90, elem_id="range-from")  # fmt: skip
                    range_to = gr.Textbox("", label=RANGE_NAMES[1], placeholder="end", max_lines=1,
                                          scale=1, min_width=90, elem_id="range-to")  # fmt: skip
                with gr.Row():
                    auto = gr.Checkbox(auto_default, label="Auto context (what fits the device)")
                    context = gr.Slider(
                        0,
                        CONTEXT_MAX,
                        value=context_default,
                        step=CONTEXT_STEP,
                        label="Context length (tokens)",
                        interactive=not auto_default,
                    )
                with gr.Row():
                    speech = gr.Dropdown(
                        SPEECH_CHOICES, value=options.speech.mode, label="Speech", elem_id="speech", scale=3
                    )
                    language = gr.Textbox(
                        options.speech.language, label="Language", placeholder="auto", scale=1, max_lines=1,
                        info="e.g. en, de, zh; empty = detect",
                    )  # fmt: skip
                plan_md = gr.Markdown("*Upload a video to see how it will be read.*", elem_id="plan")
                with gr.Row():
                    summarize_btn = gr.Button("Summarize", variant="primary", elem_id="summarize")
                    stop_btn = gr.Button("Stop", variant="stop")
                gr.Markdown(KEYS_HINT, elem_id="keys-hint")
            with gr.Column(scale=1):
                status = gr.Markdown(elem_id="status")
                summary = gr.Markdown(  # long summaries scroll inside: the chat stays in reach
                    SUMMARY_PLACEHOLDER,
                    label="Summary",
                    elem_id="summary",
                    min_height=120,
                    max_height=SUMMARY_MAX_HEIGHT,
                    buttons=["copy"],
                )
                downloads = gr.File(
                    label="Downloads: " + ", ".join(get_writer(f).description for f in FORMATS),
                    file_count="multiple",
                    elem_id="downloads",
                    height=120,
                )
                chatbot = gr.Chatbot(label="Follow-up questions", elem_id="chat", height=320)
                # The summarised video's id: API clients pass it to /chat (each of their calls is a session).
                job_id = gr.Textbox(visible=False, label="Job id")
                with gr.Row(equal_height=True):
                    question = gr.Textbox(
                        placeholder="Ask about the video…",
                        label="Question about the video",
                        show_label=False,
                        elem_id="question",
                        scale=4,
                    )
                    ask_btn = gr.Button("Ask", scale=1, elem_id="ask")
                with gr.Accordion("Last turn statistics", open=False):
                    stats = gr.JSON(label="Statistics", elem_id="stats")

        with gr.Tab("Image"), gr.Row():
            with gr.Column():
                # A path, opened by read_image with its pixel cap: Gradio only reads the header (image_mode=None).
                image = image_input(label="Image", type="filepath", image_mode=None, sources=["upload"])
                image_prompt = gr.Textbox(IMAGE_PROMPT, label="Prompt", lines=2)
                describe_btn = gr.Button("Describe", variant="primary", elem_id="describe")
            image_md = gr.Markdown(elem_id="image-description")

        # Cheap events run outside the GPU pool so the plan line stays live during a summary.
        settings = [info_state, fps, auto, context, prompt, range_from, range_to]
        load_btn.click(bind(load_model, state), model_id, model_status, api_name="load_model", **gpu).then(
            bind(on_settings, state), settings, plan_md, **cheap
        ).then(bind(context_view, state), [auto, context], context, **cheap)
        # upload and clear, not change: on_video empties the player of a file it cannot read, and that
        # change must not wipe the status line that says why.
        video_view = [video_md, plan_md, info_state, status, summary, chatbot, stats, downloads, transcript,
                      timeline, video]  # fmt: skip
        video.upload(
            bind(on_video, state),
            [video, fps, auto, context, prompt, range_from, range_to],
            video_view,
            concurrency_limit=None,
            show_progress="hidden",
            api_name="video",
        )
        video.clear(bind(on_clear, state), None, video_view, show_progress="hidden", **cheap)
        prompt_name.change(on_prompt_name, prompt_name, prompt, **cheap)
        transcript_filter.change(None, transcript_filter, None, js=FILTER_TRANSCRIPT_JS)
        auto.change(bind(context_view, state), [auto, context], context, **cheap)
        context.release(on_context_left, context, context, **cheap)  # a typed 500 becomes 1024
        for component in (fps, auto, context, prompt, range_from, range_to):
            component.change(bind(on_settings, state), settings, plan_md, show_progress="hidden", **cheap)
        summarizing = (
            summarize_btn.click(
                bind(summarize, state),
                [video, prompt, fps, auto, context, model_id, speech, language, range_from, range_to],
                [summary, status, stats, chatbot, downloads, transcript, job_id, timeline],
                api_name="summarize",
                show_progress="hidden",  # the status line shows progress and errors; no badges
                **gpu,
            )
            .then(bind(describe_model, state), None, model_status, **cheap)
            .then(bind(context_view, state), [auto, context], context, **cheap)
            .then(
                bind(on_settings, state),
                settings,
                plan_md,
                **cheap,  # the loaded model fixes the auto context
            )
        )
        ask_inputs, ask_outputs = [question, chatbot, job_id], [question, chatbot, stats, status]
        ask = {
            "fn": bind(chat, state),
            "inputs": ask_inputs,
            "outputs": ask_outputs,
            "show_progress": "hidden",
        }
        asking = [
            question.submit(**ask, api_name="chat", **gpu),
            ask_btn.click(**ask, api_visibility="private", **gpu),
        ]
        describing = describe_btn.click(
            bind(describe_image, state),
            [image, image_prompt, model_id],
            image_md,
            api_name="describe_image",
            **gpu,
        )
        stop_btn.click(
            bind(stop, state),
            None,
            status,
            cancels=[summarizing, *asking, describing],
            concurrency_limit=None,
            api_name="stop",
        )
        demo.load(None, js=SEEK_JS)
        demo.load(bind(context_view, state), [auto, context], context, **cheap)
        demo.load(None, js=PLAYER_NOTE_JS)
        demo.load(None, js=UPLOAD_TYPES_JS)
        demo.load(None, js=ACCESS_JS)
        demo.unload(bind(forget, state))  # the page closed: stop its work, free its cached video
    demo.queue(default_concurrency_limit=options.server.concurrency_limit)
    return demo


def launch(demo: gr.Blocks, options: Options, **kwargs: Any) -> Any:
    """Serve ``demo`` with the server options: local only unless asked, upload size capped."""
    server = options.server
    settings = {
        "server_name": server.host,
        "server_port": server.port,
        "share": server.share,
        "max_file_size": f"{server.max_upload_mb}mb",
        "css": PAGE_CSS,
        **kwargs,
    }
    if server.auth:
        settings["auth"] = [tuple(pair.split(":", 1)) for pair in server.auth.split(",")]
    elif settings["server_name"] not in ("127.0.0.1", "localhost", "::1") or settings["share"]:
        log.warning(
            "listening on %s without a login: anyone who can reach it can use the model; "
            "pass --auth USER:PASSWORD (or QWEN3VL_SERVER__AUTH)",
            "a share link" if settings["share"] else settings["server_name"],
        )
    return demo.launch(**settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Web app: summarize a video with Qwen3-VL, then chat about it."
    )
    parser.add_argument(
        "--model", help="hub id or local folder of a Qwen3-VL model (default: from the config)"
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port to listen on (default 7860)")
    parser.add_argument(
        "--share", action="store_true", default=None, help="also open a public gradio.live link"
    )
    parser.add_argument("--config", help="TOML config file (default: the package's configs/default.toml)")
    parser.add_argument(
        "--auth", metavar="USER:PASSWORD",
        help="require this login (comma-separated for several; or QWEN3VL_SERVER__AUTH): use it whenever the "
        "server listens beyond this machine (--host 0.0.0.0, --share, Docker)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = load_options(
            args.config,
            overrides={
                "model": {"id": args.model},
                "server": {"host": args.host, "port": args.port, "share": args.share, "auth": args.auth},
            },
        )
    except OptionsError as e:
        parser.error(str(e))
    launch(build_demo(options), options)


if __name__ == "__main__":
    main()
