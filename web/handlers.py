"""The functions the page's events call: plain functions of the app state (bound by ``page.bind``), the
event's inputs and ``gr.Request``. Generators yield the page's outputs as the work goes on.

The model (:class:`~qwen3vl_summarizer.loading.EngineSlot`) and each browser session's open video
(:class:`~qwen3vl_summarizer.jobs.JobStore`, keyed by ``request.session_hash``, freed on unload, caches
released least recently used under ``server.session_memory_gb``) live in the library; the page keeps only its
per-browser cancel events (:class:`~qwen3vl_summarizer.jobs.Cancels`) and download folders.
"""

import contextlib
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr

from qwen3vl_summarizer.errors import Cancelled, OptionsError, SessionBrokenError, SummarizerError
from qwen3vl_summarizer.events import Event, Progress, Response, TextDelta
from qwen3vl_summarizer.export import FORMATS, write_all
from qwen3vl_summarizer.jobs import Cancels, JobStore
from qwen3vl_summarizer.library import Library, LibraryError, Recorder, open_library
from qwen3vl_summarizer.loading import EngineSlot
from qwen3vl_summarizer.options import Options
from qwen3vl_summarizer.plan import parse_range
from qwen3vl_summarizer.prompts import list_prompts
from qwen3vl_summarizer.summarize import VideoJob
from qwen3vl_summarizer.video import VideoInfo, probe

from . import policy
from .i18n import browser_language, say
from .render import (
    no_raw_html,
    note_html,
    plan_line,
    progress_line,
    shown,
    timeline_html,
    transcript_markdown,
    video_line,
)

log = logging.getLogger("qwen3vl_summarizer.app")

FPS_MIN, FPS_MAX, FPS_STEP = 0.1, 4.0, 0.1  # frames per second offered by the slider
RANGE_NAMES = ("From", "To")  # the time-range fields, as their errors name them
# The context length a run may use, tokens: a typed or dragged value snaps into [CONTEXT_MIN, CONTEXT_MAX].
# The slider itself starts at 0, so that typing "5000" never passes through a value Gradio refuses ("5").
CONTEXT_MIN, CONTEXT_MAX, CONTEXT_STEP = 1024, 256 * 1024, 1024
DEFAULT_PROMPT = {"en": "general", "zh": "general.zh"}  # the prompt template a page starts with, by language
IMAGE_PROMPT = "Describe this image in detail, in Markdown. Include any text you can read in it."
STOPPED = say("en", "stopped")
NOTHING_TO_STOP = say("en", "nothing_to_stop")
SPEECH_MODES = ("auto", "subtitles", "asr", "off")
GENERIC_ERROR = "Something went wrong on the server (details are in its log). Try again, or reload the page."


class AppState:
    """Everything the handlers share: options, the model, the open videos, cancel events, downloads."""

    def __init__(self, options: Options):
        self.options = options
        self.jobs = JobStore(budget_bytes=int(options.server.session_memory_gb * 2**30))
        self.engines = EngineSlot(options.model, on_switch=self.jobs.drop_engine)
        self.cancels = Cancels()
        self.downloads = policy.new_downloads_folder()
        self._libraries: dict[str, Library | None] = {}  # login name ('' without one) -> its library
        self._recorders: dict[str, Recorder] = {}  # page -> the run its answers are written into
        self._shown: dict[str, int] = {}  # page -> the library id of the video it shows
        self._uploaded: set[str] = set()  # pages given a video by the person (not restored from the library)
        self._lock = threading.Lock()

    def library_for(self, user: str | None) -> Library | None:
        """The library of ``user`` (the login name; everyone shares one without a login), opened once; None
        when it is off or cannot be opened (said once in the log: the page works without it)."""
        owner = user or ""
        with self._lock:
            if owner not in self._libraries:
                try:
                    self._libraries[owner] = open_library(self.options.library, owner=owner)
                except LibraryError as e:
                    log.warning("the library is not kept: %s", e)
                    self._libraries[owner] = None
            return self._libraries[owner]

    def record(self, sid: str, job: VideoJob, prompt: str, user: str | None) -> Recorder | None:
        """Start writing this page's new summary of ``job`` into the library (the follow-ups join it)."""
        library = self.library_for(user)
        recorder = None
        if library is not None:
            try:
                # the page reads uploads only: the file is the app's copy, deleted with the video
                recorder = library.record(job, "summarize", prompt, upload=True)
            except LibraryError as e:
                log.warning("this summary is not kept in the library: %s", e)
        with self._lock:
            if recorder is None:
                self._recorders.pop(sid, None)
                self._shown.pop(sid, None)
            else:
                self._recorders[sid] = recorder
                self._shown[sid] = recorder.video_id
        return recorder

    def show_library_video(self, sid: str, video_id: int) -> None:
        """The page now shows ``video_id`` from the library: its open video (if any) is let go, and its next
        question reopens this one (:meth:`reopen`)."""
        self.cancels.stop(sid)
        self.jobs.drop(sid)
        with self._lock:
            self._recorders.pop(sid, None)
            self._shown[sid] = video_id

    def uploaded(self, sid: str) -> None:
        """The person gave the page a video: a restore that comes later must not replace it."""
        with self._lock:
            self._uploaded.add(sid)

    def may_restore(self, sid: str) -> bool:
        """Whether the page is still as it loaded (no upload yet), so a reload may restore its library video."""
        return sid not in self._uploaded

    def shown_library_video(self, sid: str) -> int | None:
        """The library id of the video the page shows (summarised or opened from the library), or None."""
        return self._shown.get(sid)

    def forget_library_videos(self, video_ids: list[int]) -> None:
        """These library videos are being deleted: the pages that show them let them go."""
        with self._lock:  # (ids are unique across owners)
            pages = [sid for sid, video_id in self._shown.items() if video_id in video_ids]
        for sid in pages:
            self.cancels.stop(sid)
            self.jobs.drop(sid)
            self.forget(sid)

    def reopen(self, sid: str, user: str | None) -> VideoJob | None:
        """The page's library video opened again for a question (its latest run, the cache rebuilt from the
        cached features), its answers recorded into that run; None when the page shows none. Raises
        VideoGoneError when neither the file nor its features remain."""
        from qwen3vl_summarizer.jobs import reopen_job

        video_id = self._shown.get(sid)
        library = self.library_for(user)
        if video_id is None or library is None:
            return None
        runs = library.video(video_id)["runs"]
        model = (runs[-1]["settings"] or {}).get("model") if runs else None  # the run reopen_job reopens
        try:
            model = self.model_for(model)
        except SummarizerError:  # recorded with a model this server no longer offers
            model = self.model_for(None)
        job = reopen_job(self.engines.get(model), library, video_id, self.options)
        self.jobs.put(sid, job)
        recorder = library.resume(job)  # its next answers go on with the run it came from
        with self._lock:
            self._recorders[sid] = recorder
        return job

    def recorded(self, sid: str, response: Response, question: str) -> Iterator[Event]:
        """The answer's events, written into this page's run in the library as they pass (when it has one)."""
        recorder = self._recorders.get(sid)
        return response.events() if recorder is None else recorder.tap(response.events(), question)

    def forget(self, sid: str) -> None:
        """The page is gone: its run gets no more answers."""
        with self._lock:
            self._recorders.pop(sid, None)
            self._shown.pop(sid, None)

    def unloaded(self, sid: str) -> None:
        """The page closed."""
        self.forget(sid)
        with self._lock:
            self._uploaded.discard(sid)

    def close(self) -> None:
        """Close the libraries (the server is stopping)."""
        with self._lock:
            for library in filter(None, self._libraries.values()):
                library.close()
            self._libraries.clear()

    @property
    def models(self) -> list[str]:
        """What the model menu offers: the configured model, then the allowed ones."""
        return policy.offered_models(self.options)

    def model_for(self, model_id: str | None) -> str:
        """The model a request may load (:func:`web.policy.model_for`)."""
        return policy.model_for(self.options, model_id)

    def check_text(self, text: str, what: str) -> str | None:
        """Why ``text`` (a prompt or a question) cannot be accepted, or None."""
        return policy.check_text(self.options, text, what)


# ----------------------------------------------------------------------------------------------------
# Small helpers


def describe_model(state: AppState, request: gr.Request = None, not_loaded: Any = None) -> str:
    """The model line: which model is loaded, on what; ``not_loaded`` (or the browser's language's words)
    when none is."""
    engine = state.engines.engine
    if engine is None:
        return not_loaded or say(browser_language(request), "model_not_loaded")
    dtype = str(engine.dtype).removeprefix("torch.")
    return say(
        browser_language(request), "model_loaded", model=engine.model_id, device=engine.device, dtype=dtype
    )


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


def prompt_choices() -> list[tuple[str, str]]:
    """(menu label, template name) of the summary prompts; the merge templates are internal."""
    return [(f"{p.title} ({p.language})", p.name) for p in list_prompts() if not p.name.startswith("merge")]


def prompt_text(name: str) -> str:
    return next((p.text for p in list_prompts() if p.name == name), "")


def speech_choices(lang: str) -> list[tuple[str, str]]:
    """(menu label, speech mode) in ``lang``."""
    return [(say(lang, f"speech_choice_{mode}"), mode) for mode in SPEECH_MODES]


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
# Handlers


def on_load(request: gr.Request) -> tuple:
    """A page opened: in another language than English, its speech menu and its starting prompt template
    (and prompt) in that language. Returns (speech menu, prompt template menu, prompt)."""
    lang = browser_language(request)
    if lang == "en":  # as laid out
        return gr.skip(), gr.skip(), gr.skip()
    name = DEFAULT_PROMPT.get(lang, DEFAULT_PROMPT["en"])
    return gr.update(choices=speech_choices(lang)), name, prompt_text(name)


def on_video(state: AppState, video: str | None, fps: float, auto: bool, context: float, prompt: str,
             range_from: str, range_to: str, request: gr.Request):  # fmt: skip
    """New upload: show its facts and plan, and clear what belonged to the previous video.

    Yields (video facts, plan line, VideoInfo, status, summary, chat, stats, downloads, transcript,
    timeline, player); the cleared view comes first, so a bad file leaves nothing of the old one behind,
    and a file that cannot be read leaves the player too (its reason stays in the status line)."""
    sid, lang = _sid(request), browser_language(request)
    job = state.jobs.get(sid)
    if job is not None and job.info.path != video:
        state.cancels.stop(sid)  # work on the old video has nothing more to show
        state.jobs.drop(sid)  # a new video: free the old one's cache now
    if job is None or job.info.path != video:
        state.forget(sid)  # and a question no longer goes to the library video the page showed
    if video:
        state.uploaded(sid)
    cleared = ("", say(lang, "summary_placeholder"), [], None, None, say(lang, "transcript_placeholder"),
               note_html(say(lang, "no_summary_note")))  # fmt: skip
    if not video:
        yield "", "", None, *cleared, gr.skip()
        return
    try:
        info = probe(policy.uploaded(video))
    except SummarizerError as e:
        yield "", "", None, show_error(_message(e, video)), *cleared[1:], None
        return
    plan = on_settings(state, info, fps, auto, context, prompt, range_from, range_to, request)
    yield video_line(info, lang), plan, info, *cleared, gr.skip()


def on_clear(state: AppState, request: gr.Request):
    """The player was emptied: what belonged to its video goes too (see :func:`on_video`)."""
    yield from on_video(state, None, FPS_MIN, True, 0, "", "", "", request)


def on_settings(state: AppState, info: VideoInfo | None, fps: float, auto: bool, context: float,
                prompt: str, range_from: str, range_to: str, request: gr.Request) -> str:  # fmt: skip
    """The plan line, redrawn while the sliders and the From/To fields change; with the speech's tokens
    once it was transcribed."""
    if info is None:
        return say(browser_language(request), "upload_first")
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


def load_model(state: AppState, model_id: str, request: gr.Request, progress=gr.Progress()) -> str:  # noqa: B008 (Gradio's idiom)
    progress(0.1, desc=f"Loading {model_id}…")
    with _status_errors() as failed:
        state.engines.get(state.model_for(model_id))
    if failed:  # the model that was loaded (if any) stays loaded
        return failed.show() + "  \n" + describe_model(state, request)
    return describe_model(state, request)


def summarize(state: AppState, video: str | None, prompt: str, fps: float, auto: bool, context: float,
              model_id: str, speech: str, language: str, range_from: str, range_to: str,
              request: gr.Request):  # fmt: skip
    """Stream the summary of the video, or of its ``range_from``-``range_to`` (typed times; empty: its
    start, its end). Yields (summary, status, stats, chat, download files, transcript, job id, timeline).

    The job id (what /chat takes to ask about this video from another session) is in the last output of
    every run that opened the video, "" in the last output of one that did not."""
    sid, lang = _sid(request), browser_language(request)
    keep = (gr.skip(),) * 4  # stats, chat, downloads, transcript
    if not video:
        yield gr.skip(), warn(say(lang, "no_video")), *keep, "", gr.skip()
        return
    if not (prompt or "").strip():
        yield gr.skip(), warn(say(lang, "empty_prompt")), *keep, "", gr.skip()
        return
    if problem := state.check_text(prompt, "prompt"):
        yield gr.skip(), warn(problem), *keep, "", gr.skip()
        return
    try:
        time_range = parse_range(range_from, range_to, RANGE_NAMES)
    except OptionsError as e:
        yield gr.skip(), warn(str(e)), *keep, "", gr.skip()
        return
    state.jobs.expire(state.options.server.session_idle_minutes * 60)
    cancel = state.cancels.new(sid)
    no_summary = note_html(say(lang, "no_summary_note"))
    yield "", say(lang, "loading_model"), None, [], None, gr.skip(), gr.skip(), no_summary
    job_id = ""
    with _status_errors(video) as failed:
        video = policy.uploaded(video)
        opts = run_options(state.options, fps, auto, context, speech, language)
        engine = state.engines.get(state.model_for(model_id))
        start, end = time_range
        job, response = state.jobs.summarize(sid, engine, video, opts, prompt, cancel, start=start, end=end)
        recorder = state.record(sid, job, prompt, request.username if request else None)
        job_id = state.jobs.token_for(sid)
        yield (*(gr.skip(),) * 5, transcript_markdown(job, lang), job_id, gr.skip())
        info, plan = job.info, job.plan
        note = "" if plan.fits else say(lang, "parts_note", parts=len(plan.segments))
        stages, started = {}, time.perf_counter()
        try:
            with _closing(response, cancel):
                for event in state.recorded(sid, response, prompt):
                    match event:
                        case TextDelta():
                            text = shown(response.streamed, info.duration)
                            yield text, say(lang, "writing") + note, *keep, gr.skip(), gr.skip()
                        case Progress(stage="segment" | "merge"):  # a new part: its own stages start over
                            stages = {event.stage: (min(event.done + 1, event.total), event.total)}
                            started = time.perf_counter()
                            yield (
                                gr.skip(),
                                progress_line(stages, started, lang) + note,
                                *keep,
                                gr.skip(),
                                gr.skip(),
                            )
                        case Progress():
                            stages[event.stage] = (event.done, event.total)
                            yield (
                                gr.skip(),
                                progress_line(stages, started, lang) + note,
                                *keep,
                                gr.skip(),
                                gr.skip(),
                            )
        except Cancelled:
            text = shown(response.streamed, info.duration)
            yield text, say(lang, "stopped"), gr.skip(), [], None, gr.skip(), job_id, gr.skip()
            return
        final = response.stats
        if recorder is not None:
            recorder.finish()
        files, skipped = write_downloads(state, sid, job)
        if job.damage:
            gr.Warning(f"The file is damaged; only the part before the damage was read: {job.damage}")
        if job.speech_note:
            gr.Warning(f"Speech: {job.speech_note}.")
        if final.text.strip():
            done = say(lang, "done", read=f"{final.prefill_tokens:,}", wrote=f"{len(final.tokens):,}",
                       rate=f"{final.decode_tokens_per_s:.1f}")  # fmt: skip
            chapters = [d for d in skipped if not d.startswith("transcript")]
            if chapters:
                done += say(lang, "no_chapter_files", formats=", ".join(chapters))
            if len(chapters) < len(skipped) and job.transcript is not None:
                done += say(lang, "empty_transcript")
        else:
            done = say(lang, "empty_answer", tokens=f"{len(final.tokens):,}")
        stats = {"turn": "summary", **final.to_dict()}
        summary = (
            shown(job.summary_text, info.duration) if final.text.strip() else say(lang, "summary_placeholder")
        )
        timeline = timeline_html(job, lang)
        yield summary, done + note, stats, [], files, transcript_markdown(job, lang), job_id, timeline
    if failed:
        yield gr.skip(), failed.show(), *keep, job_id, gr.skip()


def chat(
    state: AppState, message: str, history: list[dict], job_id: str | None = None, request: gr.Request = None
):
    """A follow-up about the summarised video, answered from its cache. ``job_id`` (what /summarize
    returned) lets an API client, whose every call is a new session, ask about the video it summarised.

    Yields (question box, chat, stats, status)."""
    sid, lang = state.jobs.key_for(job_id) or _sid(request), browser_language(request)
    message = (message or "").strip()
    keep = (gr.skip(),) * 3
    if not message:
        yield *keep, warn(say(lang, "type_question"))
        return
    if problem := state.check_text(message, "question"):
        yield *keep, warn(problem)
        return
    state.jobs.expire(state.options.server.session_idle_minutes * 60)
    job = state.jobs.get(sid)
    if job is None:
        with _status_errors() as failed:  # a video from the library (a reload, the Library tab): reopen it
            job = state.reopen(sid, request.username if request else None)
        if failed:
            yield *keep, failed.show()
            return
    if job is None:
        yield *keep, show_error(say(lang, "no_job"))
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
                for _ in state.recorded(sid, response, message):
                    answer = {"role": "assistant", "content": shown(response.streamed, duration)}
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
    lang = browser_language(request)
    if image is None:
        yield warn(say(lang, "no_image"))
        return
    prompt = (prompt or "").strip() or IMAGE_PROMPT
    if problem := state.check_text(prompt, "prompt"):
        yield warn(problem)
        return
    cancel = state.cancels.new(_sid(request))
    yield say(lang, "loading_model")
    with _status_errors() as failed:
        pixels = policy.read_image(policy.uploaded(image), state.options.server.max_image_pixels)
        engine = state.engines.get(state.model_for(model_id))
        options = state.options
        session = engine.session(None, image=pixels, context=options.context, generation=options.generation)
        response = session.ask(prompt, cancel=cancel)
        try:
            with _closing(response, cancel):
                for _ in response:
                    yield no_raw_html(response.streamed)
        except Cancelled:
            yield no_raw_html(response.streamed) + " *(stopped)*"
    if failed:
        yield failed.show()


def stop(state: AppState, request: gr.Request) -> str:
    """Stop this page's running work (its handler rewinds the unfinished turn)."""
    running = state.cancels.stop(_sid(request))
    return say(browser_language(request), "stopped" if running else "nothing_to_stop")


def forget(state: AppState, request: gr.Request) -> None:
    """The page closed: stop its work and free its video."""
    sid = _sid(request)
    state.cancels.forget(sid)
    state.jobs.drop(sid)
    state.unloaded(sid)
    shutil.rmtree(state.downloads / _folder_name(sid), ignore_errors=True)


def write_downloads(state: AppState, sid: str, job: VideoJob) -> tuple[list[str], list[str]]:
    """The finished summary in every registered export format that has something to hold: (the files'
    paths, the descriptions of the formats left out because they would be empty, e.g. no chapters)."""
    summary = job.summary()
    folder = state.downloads / _folder_name(sid)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]", "_", Path(job.info.path).stem) or "video"
    paths, skipped = write_all(summary, folder, f"{stem}.summary", FORMATS, skip_empty=True)
    return [str(p) for p in paths], skipped
