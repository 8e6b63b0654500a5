"""The page: its components, laid out, and their events wired to the handlers (``handlers.py``); served
with its script and stylesheet (``static/``) and its translations (``i18n.py``) by :func:`launch`."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from qwen3vl_summarizer.export import FORMATS, get_writer
from qwen3vl_summarizer.options import Options
from qwen3vl_summarizer.video import video_extensions

from . import handlers as h
from . import library_tab
from .handlers import AppState
from .i18n import I18N, T, page_config
from .render import note_html

log = logging.getLogger("qwen3vl_summarizer.app")

SAVED_KEY = "qwen3vl-library-video"  # the browser's storage key for the library video the page shows
STATIC = Path(__file__).resolve().parent / "static"
PAGE_JS = STATIC / "page.js"  # the page's one script: seek links, player note, upload types, keys, filter
PAGE_CSS = STATIC / "page.css"  # layout fixes Gradio's options do not reach, and the timeline's styles
SUMMARY_MAX_HEIGHT = 520  # pixels; a longer summary scrolls inside its box
PLAYER_HEIGHT = 360  # pixels: a tall (4:3, portrait) video leaves room for its timeline and transcript


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


def build_demo(options: Options, state: AppState | None = None) -> gr.Blocks:
    """The web app for ``options`` (model id, sampling, context, server limits); no model is loaded.

    The components that events write to carry a plain ``label``: it names that output in the HTTP API
    (``/gradio_api/info``), so where a person should read a title it is a translated heading beside them."""
    state = state or AppState(options)
    auto_default = options.context.max_context == "auto"
    context_default = options.context.max_context_cap if auto_default else options.context.max_context
    context_default = h.snap_context(context_default)
    gpu = {"concurrency_id": "gpu", "concurrency_limit": model_concurrency(options)}
    cheap = {"concurrency_limit": None, "api_visibility": "private"}  # UI plumbing, outside the GPU pool

    max_age = int(options.server.upload_max_age_hours * 3600)
    # Uploads (and Gradio's copies of the files it serves) older than max_age are deleted, checked hourly;
    # Gradio also empties its cache when the server restarts, interrupted uploads included.
    with gr.Blocks(title="Qwen3-VL video summarizer", delete_cache=(min(max_age, 3600), max_age)) as demo:
        demo.app_state = state  # for tests and embedding
        gr.Markdown(T("heading"))
        with gr.Row(elem_id="model-row"):  # one line even on a phone (page.css); the status goes under it
            model_id = gr.Dropdown(
                state.models,
                value=options.model.id,
                label=T("model"),
                allow_custom_value=options.server.allow_any_model,
                scale=3,
                min_width=180,
                info=T("model_info"),
            )
            load_btn = gr.Button(T("load_model"), scale=0, min_width=110, elem_id="load-model")
        model_status = gr.Markdown(h.describe_model(state, not_loaded=T("model_not_loaded")), label="model_status",
                                   elem_id="model-status")  # fmt: skip

        # The library id of the video this page shows, per login name, kept by the browser: a reload brings it
        # back (library_tab.restore). Not secret (the server checks that the id is the login's), so the key
        # is fixed: a restarted server still reads what the browser kept.
        saved = gr.BrowserState({}, storage_key=SAVED_KEY, secret=SAVED_KEY)
        tabs = gr.Tabs(selected="video")
        with tabs, gr.Tab(T("tab_video"), id="video"), gr.Row():
            with gr.Column(scale=1):
                gr.Markdown(T("video_formats"), elem_id="video-formats")
                video = gr.Video(
                    label="video",
                    show_label=False,
                    sources=["upload"],
                    elem_id="player",
                    height=PLAYER_HEIGHT,
                )
                gr.HTML('<p id="player-note-text" role="status"></p>', elem_id="player-note", padding=False)
                # A library video whose file is gone: its poster, and that questions still work.
                library_note = gr.HTML("", elem_id="library-note", padding=False)
                # Chapters of the finished summary: a bar of spans and cards that seek the player (page.js).
                timeline = gr.HTML(note_html(T("no_summary_note")), label="timeline", elem_id="timeline")
                video_md = gr.Markdown(label="video_info", elem_id="video-info")
                with gr.Accordion(T("transcript_box"), open=False, elem_id="transcript-box"):
                    gr.Textbox(  # filters the lines in the browser (page.js): no event, no round trip
                        placeholder=T("find_word"), show_label=False, elem_id="transcript-filter", max_lines=1
                    )
                    transcript = gr.Markdown(
                        T("transcript_placeholder"), label="transcript", elem_id="transcript", max_height=320
                    )
                info_state = gr.State(None)  # this page's VideoInfo
                prompt_name = gr.Dropdown(
                    h.prompt_choices(), value=h.DEFAULT_PROMPT["en"], label=T("prompt_template")
                )
                prompt = gr.Textbox(h.prompt_text(h.DEFAULT_PROMPT["en"]), label=T("prompt"), lines=4,
                                    max_lines=8)  # fmt: skip
                with gr.Row(equal_height=True):
                    fps = gr.Slider(
                        h.FPS_MIN,
                        h.FPS_MAX,
                        value=options.sampling.fps,
                        step=h.FPS_STEP,
                        label=T("fps"),
                        elem_id="fps",
                        scale=3,
                    )
                    # The time range read; empty: from the start, to the end. 90, 1:30 or 01:00:00. (An
                    # initial "" makes them optional for API clients.)
                    range_from = gr.Textbox("", label=T("range_from"), placeholder=T("range_start"),
                                            max_lines=1, scale=1, min_width=90, elem_id="range-from")  # fmt: skip
                    range_to = gr.Textbox("", label=T("range_to"), placeholder=T("range_end"), max_lines=1,
                                          scale=1, min_width=90, elem_id="range-to")  # fmt: skip
                with gr.Row():
                    auto = gr.Checkbox(auto_default, label=T("auto_context"))
                    context = gr.Slider(
                        0,
                        h.CONTEXT_MAX,
                        value=context_default,
                        step=h.CONTEXT_STEP,
                        label=T("context"),
                        interactive=not auto_default,
                    )
                with gr.Row():
                    speech = gr.Dropdown(h.speech_choices("en"), value=options.speech.mode, label=T("speech"),
                                         elem_id="speech", scale=3)  # fmt: skip
                    language = gr.Textbox(
                        options.speech.language, label=T("language"), placeholder="auto", scale=1, max_lines=1,
                        info=T("language_info"),
                    )  # fmt: skip
                plan_md = gr.Markdown(T("upload_first"), label="plan", elem_id="plan")
                with gr.Row():
                    summarize_btn = gr.Button(T("summarize"), variant="primary", elem_id="summarize")
                    stop_btn = gr.Button(T("stop"), variant="stop")
                gr.Markdown(T("keys_hint"), elem_id="keys-hint")
            with gr.Column(scale=1):
                status = gr.Markdown(label="status", elem_id="status")
                summary = gr.Markdown(  # long summaries scroll inside: the chat stays in reach
                    T("summary_placeholder"),
                    label="summary",
                    elem_id="summary",
                    min_height=120,
                    max_height=SUMMARY_MAX_HEIGHT,
                    buttons=["copy"],
                )
                formats = ", ".join(get_writer(f).description for f in FORMATS)
                gr.Markdown(f"**{T('downloads')}:** {formats}", elem_id="downloads-heading")
                downloads = gr.File(label="downloads", show_label=False, file_count="multiple",
                                    elem_id="downloads", height=120)  # fmt: skip
                chatbot = gr.Chatbot(label="chat", show_label=False, placeholder=T("chat_placeholder"),
                                     elem_id="chat", height=320)  # fmt: skip
                # The summarised video's id: API clients pass it to /chat (each of their calls is a session).
                job_id = gr.Textbox(visible=False, label="job_id")
                with gr.Row(equal_height=True):
                    question = gr.Textbox(
                        placeholder=T("question_placeholder"),
                        label="Question about the video",  # the box's accessible name; /chat's first output
                        show_label=False,
                        elem_id="question",
                        scale=4,
                    )
                    ask_btn = gr.Button(T("ask"), scale=1, elem_id="ask")
                with gr.Accordion(T("statistics"), open=False):
                    stats = gr.JSON(label="stats", show_label=False, elem_id="stats")

        with tabs, gr.Tab(T("tab_library"), id="library") as library:
            opened = {"video": video, "video_md": video_md, "plan_md": plan_md, "info_state": info_state,
                      "status": status, "summary": summary, "chatbot": chatbot, "stats": stats,
                      "downloads": downloads, "transcript": transcript, "timeline": timeline, "job_id": job_id,
                      "library_note": library_note, "tabs": tabs, "saved": saved}  # fmt: skip
            opened = [opened[name] for name in library_tab.OPENED]
            asking_library = library_tab.build(state, library, model_id, opened, saved)

        with tabs, gr.Tab(T("tab_image"), id="image"), gr.Row():
            with gr.Column():
                # A path, opened by read_image with its pixel cap: Gradio only reads the header (image_mode=None).
                image = image_input(label=T("image"), type="filepath", image_mode=None, sources=["upload"])
                image_prompt = gr.Textbox(h.IMAGE_PROMPT, label=T("prompt"), lines=2)
                describe_btn = gr.Button(T("describe"), variant="primary", elem_id="describe")
            image_md = gr.Markdown(label="description", elem_id="image-description")

        # Cheap events run outside the GPU pool so the plan line stays live during a summary.
        settings = [info_state, fps, auto, context, prompt, range_from, range_to]
        load_btn.click(bind(h.load_model, state), model_id, model_status, api_name="load_model", **gpu).then(
            bind(h.on_settings, state), settings, plan_md, **cheap
        ).then(bind(h.context_view, state), [auto, context], context, **cheap)
        # upload and clear, not change: on_video empties the player of a file it cannot read, and that
        # change must not wipe the status line that says why.
        video_view = [video_md, plan_md, info_state, status, summary, chatbot, stats, downloads, transcript,
                      timeline, video]  # fmt: skip
        video.upload(
            bind(h.on_video, state),
            [video, fps, auto, context, prompt, range_from, range_to],
            video_view,
            concurrency_limit=None,
            show_progress="hidden",
            api_name="video",
        ).then(library_tab.forget_saved, saved, saved, **cheap).then(lambda: "", None, library_note, **cheap)
        video.clear(bind(h.on_clear, state), None, video_view, show_progress="hidden", **cheap).then(
            library_tab.forget_saved, saved, saved, **cheap
        ).then(lambda: "", None, library_note, **cheap)
        prompt_name.change(h.on_prompt_name, prompt_name, prompt, **cheap)
        auto.change(bind(h.context_view, state), [auto, context], context, **cheap)
        context.release(h.on_context_left, context, context, **cheap)  # a typed 500 becomes 1024
        for component in (fps, auto, context, prompt, range_from, range_to):
            component.change(bind(h.on_settings, state), settings, plan_md, show_progress="hidden", **cheap)
        summarizing = (
            summarize_btn.click(
                bind(h.summarize, state),
                [video, prompt, fps, auto, context, model_id, speech, language, range_from, range_to],
                [summary, status, stats, chatbot, downloads, transcript, job_id, timeline],
                api_name="summarize",
                show_progress="hidden",  # the status line shows progress and errors; no badges
                **gpu,
            )
            .then(bind(h.describe_model, state), None, model_status, **cheap)
            .then(bind(h.context_view, state), [auto, context], context, **cheap)
            # the loaded model fixes the auto context
            .then(bind(h.on_settings, state), settings, plan_md, **cheap)
            .then(bind(library_tab.remember, state), saved, saved, **cheap)  # a reload brings it back
            .then(lambda: "", None, library_note, **cheap)
        )
        ask = {"fn": bind(h.chat, state), "inputs": [question, chatbot, job_id],
               "outputs": [question, chatbot, stats, status], "show_progress": "hidden"}  # fmt: skip
        asking = [
            question.submit(**ask, api_name="chat", **gpu),
            ask_btn.click(**ask, api_visibility="private", **gpu),
        ]
        describing = describe_btn.click(
            bind(h.describe_image, state),
            [image, image_prompt, model_id],
            image_md,
            api_name="describe_image",
            **gpu,
        )
        stop_btn.click(
            bind(h.stop, state),
            None,
            status,
            cancels=[summarizing, *asking, describing, *asking_library],
            concurrency_limit=None,
            api_name="stop",
        )
        demo.load(bind(h.context_view, state), [auto, context], context, **cheap)
        demo.load(h.on_load, None, [speech, prompt_name, prompt], **cheap)
        # What the server holds now (a reload must not say "not loaded" while the model is loaded)...
        demo.load(bind(h.describe_model, state), None, model_status, **cheap)
        # ...and the library video this browser showed, as it was left.
        demo.load(bind(library_tab.restore, state), saved, opened, **cheap)
        demo.unload(bind(h.forget, state))  # the page closed: stop its work, free its cached video
    demo.queue(default_concurrency_limit=model_concurrency(options))
    return demo


def model_concurrency(options: Options) -> int:
    """How many events that use the model run at once: one model in this process runs
    ``server.concurrency_limit``; a vLLM server batches the requests of ``server.vllm_concurrency_limit``."""
    server = options.server
    return server.concurrency_limit if options.model.backend == "local" else server.vllm_concurrency_limit


def launch(demo: gr.Blocks, options: Options, **kwargs: Any) -> Any:
    """Serve ``demo`` with the server options (local only unless asked, upload size capped), its script,
    stylesheet and translations."""
    server = options.server
    settings = {
        "server_name": server.host,
        "server_port": server.port,
        "share": server.share,
        "max_file_size": f"{server.max_upload_mb}mb",
        "i18n": I18N,
        "css_paths": [PAGE_CSS],
        "js": PAGE_JS.read_text(encoding="utf-8"),
        "head": page_config(video_extensions()),
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
