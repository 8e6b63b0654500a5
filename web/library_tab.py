"""The Library tab, and reopening a video from the library on the Video tab.

The library (:class:`~qwen3vl_summarizer.library.Library`, one per login name: ``AppState.library_for``) keeps
every summary and follow-up the page made. This module shows it: the videos, newest first, a page at a time
(poster, name, duration, date, questions); search hits (:meth:`Library.search`) with the match marked; a
question asked over the library (:meth:`Library.retrieve` + :func:`ask_prompt`, answered by the loaded model
from the passages found, each ``[video @ MM:SS]`` citation a link). Every link to a video is
``#open=ID&t=SECONDS`` (:data:`OPEN_ANCHOR`): the page's script (static/page.js) hands it to the hidden
"open" button, and :func:`open_video` restores that video on the Video tab at once (player or poster,
summary, chat, transcript, chapter timeline, downloads, plan line) and seeks the player there.

The page keeps the library id of the video it shows in the browser (``gr.BrowserState``, one entry per login
name): a reload calls :func:`restore`. Its next question reopens the video (``handlers.chat``).

The API (``gradio_client``) has the same library, scoped to the caller's login: ``/library_videos``,
``/library_search``, ``/library_video``, ``/library_open``, ``/library_ask``, ``/library_delete``.
"""

import html
import re
import time
from pathlib import Path
from typing import Any

import gradio as gr

from qwen3vl_summarizer import jobs
from qwen3vl_summarizer.errors import SummarizerError
from qwen3vl_summarizer.export import FORMATS, Chapter, parse_chapters, write_all
from qwen3vl_summarizer.library import (
    DEFAULT_PAGE,
    MARK,
    Hit,
    Library,
    LibraryError,
    LibraryNotFoundError,
    ask_prompt,
    nothing_found,
)
from qwen3vl_summarizer.timestamps import SECONDS_PER_HOUR, format_seek, format_timestamp, parse_timestamp
from qwen3vl_summarizer.video import probe

from . import handlers as h
from . import policy
from .i18n import T, browser_language, say
from .render import no_raw_html, note_html, plan_line, render_timeline, shown, video_line

OPEN_ANCHOR = "#open="  # a link that opens a library video: #open=ID or #open=ID&t=SECONDS
PAGE_SIZE = DEFAULT_PAGE  # videos per page of the tab
SEARCH_HITS = 30  # hits listed for a search
# [video name @ 01:02] or [video name @ 1:02:03], as ask_prompt asks the model to cite
CITATION = re.compile(r"\[([^\[\]\n]+?) @ (\d{1,2}(?::\d{2}){1,2})\]")
_MARKED = re.compile(re.escape(html.escape(MARK[0])) + r"(.+?)" + re.escape(html.escape(MARK[1])))


class StoredThumbnails:
    """The library's thumbnails of a video, as the timeline reads them (``nearest``, like
    :class:`~qwen3vl_summarizer.timeline.Thumbnails`)."""

    def __init__(self, items: list[tuple[float, bytes]]):
        self.items = sorted(items)

    def nearest(self, t: float) -> tuple[float, bytes] | None:
        return min(self.items, key=lambda item: (abs(item[0] - t), -item[0])) if self.items else None


# ----------------------------------------------------------------------------------------------------
# What the tab shows


def open_link(video_id: int, start: float | None = None) -> str:
    """The link that opens ``video_id`` on the Video tab (with the player at ``start`` seconds)."""
    return f"{OPEN_ANCHOR}{video_id}" + ("" if start is None else f"&t={format_seek(start)}")


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _poster_img(library: Library, video_id: int, css: str) -> str:
    import base64

    poster = library.poster(video_id)
    if poster is None:
        return f'<span class="{css} library-blank"></span>'
    return f'<img class="{css}" alt="" src="data:image/jpeg;base64,{base64.b64encode(poster).decode()}">'


def videos_html(library: Library, videos: list[dict[str, Any]], lang: str) -> str:
    """The list of videos: poster, name (each a link that opens it), duration, date, questions, and a
    delete button (page.js asks to confirm)."""
    if not videos:
        return note_html(say(lang, "library_empty"))
    items = []
    for v in videos:
        name = html.escape(v["name"])
        facts = [format_timestamp(v["duration"] or 0.0), _when(v["updated"]),
                 say(lang, "library_questions", count=v["questions"])]  # fmt: skip
        if not v["finished"]:
            facts.append(say(lang, "library_unfinished"))
        href = open_link(v["id"])
        items.append(
            f'<li class="library-video" data-id="{v["id"]}">'
            f'<a class="library-poster-link" href="{href}" tabindex="-1">'
            f"{_poster_img(library, v['id'], 'library-poster')}</a>"
            f'<span class="library-text"><a class="library-name" href="{href}">{name}</a>'
            f'<span class="library-facts">{" · ".join(html.escape(f) for f in facts)}</span></span>'
            f'<button class="library-delete" data-id="{v["id"]}" data-name="{name}" '
            f'aria-label="{html.escape(say(lang, "library_delete_one", name=v["name"]))}">'
            f"{html.escape(say(lang, 'library_delete'))}</button></li>"
        )
    return f'<ul class="library-videos">{"".join(items)}</ul>'


def hits_html(hits: list[Hit], query: str, lang: str) -> str:
    """Search hits: the video, the time (where the passage has one), the kind, and the snippet with the
    match marked; each a link that opens the video there."""
    if not hits:
        return note_html(say(lang, "library_no_hits", query=query))
    items = []
    for hit in hits:
        when = "" if hit.start is None else format_timestamp(hit.start, hit.start >= SECONDS_PER_HOUR)
        snippet = _MARKED.sub(r"<mark>\1</mark>", html.escape(hit.snippet))
        where = html.escape(hit.video_name) + (f" @ {when}" if when else "")
        items.append(
            f'<li class="library-hit"><a class="library-hit-link" href="{open_link(hit.video_id, hit.start)}">'
            f"{where}</a> "
            f'<span class="library-kind">{html.escape(say(lang, "kind_" + hit.kind))}</span>'
            f'<div class="library-snippet">{snippet}</div></li>'
        )
    heading = html.escape(say(lang, "library_hits", count=len(hits), query=query))
    return f'<p class="library-heading">{heading}</p><ol class="library-hits">{"".join(items)}</ol>'


def cite_links(answer: str, hits: list[Hit]) -> str:
    """A library answer as the page shows it: no raw HTML, and every ``[video name @ MM:SS]`` that names
    a video among the passages a link that opens it at that time."""
    ids = {hit.video_name: hit.video_id for hit in hits}

    def link(m: re.Match) -> str:
        name, when = m.group(1).strip(), m.group(2)
        if name not in ids:
            return m.group()
        label = f"{name} @ {when}".replace("[", "\\[").replace("]", "\\]")
        return f"[{label}]({open_link(ids[name], parse_timestamp(when))})"

    return CITATION.sub(link, no_raw_html(answer))


def stored_video_line(video: dict[str, Any], lang: str) -> str:
    """The video's facts from the library (the file itself may be gone)."""
    s = video.get("streams") or {}
    parts = [f"**{say(lang, 'duration')}** {format_timestamp(video['duration'] or 0.0)}"]
    if s.get("width"):
        parts.append(f"**{say(lang, 'resolution')}** {s['width']}×{s['height']}")
    if s.get("fps"):
        parts.append(f"**{say(lang, 'frame_rate')}** {s['fps']:.4g} fps")
    if s.get("codec"):
        parts.append(f"**{say(lang, 'codec')}** {s['codec']}")
    if s.get("audio") is False:
        parts.append(say(lang, "no_audio"))
    return " · ".join(parts)


def stored_transcript(run: dict[str, Any] | None, duration: float, lang: str) -> str:
    """The transcript panel from the library: one line a segment, its time a seek link."""
    if run is None or not run["transcript"]:
        return say(lang, "library_no_transcript")
    hours = duration >= SECONDS_PER_HOUR
    lines = [f"- [{format_timestamp(s['start'], hours)}](#t={format_seek(s['start'])}) "
             f"{html.escape(s['text']).replace('[', '&#91;')}" for s in run["transcript"]]  # fmt: skip
    source = (run["settings"] or {}).get("speech_source") or "library"
    heading = say(lang, "transcript_heading", lines=len(lines), source=source)
    return heading + "\n\n" + "\n".join(lines)


def gone_note(library: Library, video: dict[str, Any], lang: str) -> str:
    """Under the player when the uploaded file is gone: the poster, and that questions still work."""
    text = html.escape(say(lang, "library_file_gone", name=video["name"]))
    return (
        f'<div class="library-gone">{_poster_img(library, video["id"], "library-gone-poster")}'
        f'<p id="library-gone-text" role="status">{text}</p></div>'
    )


# ----------------------------------------------------------------------------------------------------
# Opening a video from the library (a click, a reload)

# What open_video returns, in order (page.py wires them): the Video tab's player, facts, plan line, VideoInfo,
# status, summary, chat, stats, downloads, transcript, timeline, job id, the note under the player; then
# the selected tab and the browser's saved state.
OPENED = ("video", "video_md", "plan_md", "info_state", "status", "summary", "chatbot", "stats", "downloads",
          "transcript", "timeline", "job_id", "library_note", "tabs", "saved")  # fmt: skip


def _user(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or "") if request is not None else ""


def _library(state: h.AppState, request: gr.Request | None) -> Library:
    library = state.library_for(_user(request) or None)
    if library is None:
        raise LibraryError("the library is off on this server (library.enabled = false), or cannot be opened")
    return library


def saved_video(saved: Any, request: gr.Request | None) -> int | None:
    """The library id this browser saved for this login (the browser state: {login name: video id})."""
    value = saved.get(_user(request)) if isinstance(saved, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def with_saved(saved: Any, request: gr.Request | None, video_id: int | None) -> dict:
    """The browser state with this login's video set to ``video_id`` (None: forgotten)."""
    out = dict(saved) if isinstance(saved, dict) else {}
    out.pop(_user(request), None)
    if video_id is not None:
        out[_user(request)] = video_id
    return out


def opened_view(state: h.AppState, library: Library, video_id: int, sid: str, lang: str) -> dict[str, Any]:
    """Everything the Video tab shows of a library video, by OPENED name (no tab, no saved state)."""
    video = library.video(video_id)
    duration = video["duration"] or 0.0
    runs = video["runs"]
    run = next((r for r in reversed(runs) if r["summary"]), runs[-1] if runs else None)
    heard = next((r for r in reversed(runs) if r["transcript"]), None)
    player, info = None, None
    if video["path"]:
        try:
            player = policy.uploaded(video["path"])  # only a file uploaded here is shown (and readable)
            info = probe(player)
        except SummarizerError:
            player, info = None, None
    summary_text = run["summary"] if run is not None else ""
    chat = []
    for turn in run["turns"] if run is not None else []:
        answer = turn["answer"] + ("" if turn["finished"] else " *(unfinished)*")
        chat += [{"role": "user", "content": shown(turn["question"], duration)},
                 {"role": "assistant", "content": shown(answer, duration)}]  # fmt: skip
    if run is not None and run["chapters"] is not None:
        chapters = [Chapter(**c) for c in run["chapters"]]
    else:
        chapters, _ = parse_chapters(summary_text, duration)
    speech = [_Said(**s) for s in heard["transcript"]] if heard is not None else []
    timeline = render_timeline(
        chapters, duration, StoredThumbnails(library.thumbnails(video_id)), speech, lang
    )
    stats = (run["stats"] or {}) if run is not None else {}
    if stats.get("plan"):
        plan = "**Plan:** " + stats["plan"]
    elif info is not None:
        plan = plan_line(info, state.options, run["prompt"] if run else "", state.engines.engine)
    else:
        plan = ""
    status = say(lang, "library_opened", name=video["name"], when=_when(video["updated"]))
    if run is not None and not run["finished"]:
        status += " " + say(lang, "library_run_unfinished", error=run["error"] or say(lang, "library_no_end"))
    return {
        "video": player,
        "video_md": video_line(info, lang) if info is not None else stored_video_line(video, lang),
        "plan_md": plan,
        "info_state": info,
        "status": status,
        "summary": shown(summary_text, duration)
        if summary_text.strip()
        else say(lang, "summary_placeholder"),
        "chatbot": chat,
        "stats": stats,
        "downloads": _downloads(state, library, video, sid),
        "transcript": stored_transcript(heard, duration, lang),
        "timeline": timeline if summary_text.strip() else note_html(say(lang, "no_summary_note")),
        "job_id": state.jobs.token_for(sid),
        "library_note": "" if player is not None else gone_note(library, video, lang),
    }


class _Said:
    def __init__(self, start: float, end: float, text: str):
        self.start, self.end, self.text = start, end, text


def _downloads(state: h.AppState, library: Library, video: dict[str, Any], sid: str) -> list[str] | None:
    try:
        summary = library.summary(video["id"])
    except LibraryError:
        return None
    folder = state.downloads / h._folder_name(sid)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]", "_", Path(video["name"]).stem) or "video"
    paths, _ = write_all(summary, folder, f"{stem}.summary", FORMATS, skip_empty=True)
    return [str(p) for p in paths]


def _view_tuple(view: dict[str, Any], tab: Any, saved: Any) -> tuple:
    values = {**view, "tabs": tab, "saved": saved}
    return tuple(values[name] for name in OPENED)


def open_video(state: h.AppState, target: str, saved: Any, request: gr.Request) -> tuple:
    """The "open" button (a ``#open=ID&t=S`` link clicked; page.js puts ``ID&t=S`` in the box): that
    library video on the Video tab, and saved in the browser. Returns the OPENED outputs."""
    sid, lang = h._sid(request), browser_language(request)
    match = re.fullmatch(r"\s*(\d+)(?:&t=[\d.]+)?\s*", target or "")
    skip = (gr.skip(),) * len(OPENED)
    if match is None:
        return skip
    video_id = int(match.group(1))
    try:
        library = _library(state, request)
        view = opened_view(state, library, video_id, sid, lang)
    except LibraryNotFoundError:
        return _status_only(h.warn(say(lang, "library_gone")), saved=with_saved(saved, request, None))
    except SummarizerError as e:
        return _status_only(h.show_error(str(e)))
    state.show_library_video(sid, video_id)
    return _view_tuple(view, gr.Tabs(selected="video"), with_saved(saved, request, video_id))


def _status_only(status: str, saved: Any = None) -> tuple:
    values = {name: gr.skip() for name in OPENED}
    values["status"] = status
    if saved is not None:
        values["saved"] = saved
    return tuple(values[name] for name in OPENED)


def restore(state: h.AppState, saved: Any, request: gr.Request) -> tuple:
    """The page loaded: the library video this browser showed last (for this login), as it was left; not
    over a video the person uploaded meanwhile, and without a word when it is no longer in the library."""
    sid, lang = h._sid(request), browser_language(request)
    video_id = saved_video(saved, request)
    skip = (gr.skip(),) * len(OPENED)
    if video_id is None or state.library_for(_user(request) or None) is None:  # nothing kept, or no library
        return skip
    try:
        view = opened_view(state, _library(state, request), video_id, sid, lang)
    except LibraryNotFoundError:  # deleted since (another tab, the CLI)
        values = dict(zip(OPENED, skip, strict=True))
        values["saved"] = with_saved(saved, request, None)
        return tuple(values[name] for name in OPENED)
    except SummarizerError as e:
        return _status_only(h.show_error(str(e)))
    if not state.may_restore(sid):  # the person uploaded a video while this was read: theirs stays
        return skip
    state.show_library_video(sid, video_id)
    return _view_tuple(view, gr.skip(), gr.skip())  # a reload stays on the tab it opens on


def remember(state: h.AppState, saved: Any, request: gr.Request) -> Any:
    """After a summary: the browser keeps the library id of the video this page now shows."""
    video_id = state.shown_library_video(h._sid(request))
    if video_id is None or saved_video(saved, request) == video_id:
        return gr.skip()
    return with_saved(saved, request, video_id)


def forget_saved(saved: Any, request: gr.Request) -> Any:
    """A new upload: a reload no longer brings back the library video."""
    return gr.skip() if saved_video(saved, request) is None else with_saved(saved, request, None)


# ----------------------------------------------------------------------------------------------------
# The tab's events


def list_page(state: h.AppState, page: float, request: gr.Request) -> tuple:
    """The videos of page ``page`` (0 = newest). Returns (list HTML, paging line, page, tick choices)."""
    lang = browser_language(request)
    try:
        library = _library(state, request)
        total = library.count_videos()
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(int(page or 0), 0), pages - 1)
        videos = library.list_videos(PAGE_SIZE, page * PAGE_SIZE)
    except SummarizerError as e:
        return note_html(str(e)), "", 0, gr.update(choices=[], value=[])
    paging = say(lang, "library_paging", page=page + 1, pages=pages, count=total)
    choices = [(v["name"], v["id"]) for v in videos]
    return videos_html(library, videos, lang), paging, page, gr.update(choices=choices, value=[])


def previous_page(state: h.AppState, page: float, request: gr.Request) -> tuple:
    return list_page(state, int(page or 0) - 1, request)


def next_page(state: h.AppState, page: float, request: gr.Request) -> tuple:
    return list_page(state, int(page or 0) + 1, request)


def search(state: h.AppState, query: str, request: gr.Request) -> str:
    """Search hits for ``query`` as HTML ("" for an empty query: the list shows instead)."""
    lang = browser_language(request)
    query = (query or "").strip()
    if not query:
        return ""
    try:
        hits = _library(state, request).search(query, SEARCH_HITS)
    except SummarizerError as e:
        return note_html(str(e))
    return hits_html(hits, query, lang)


def delete_video(state: h.AppState, target: str, page: float, saved: Any, request: gr.Request) -> tuple:
    """Delete one video (confirmed in the browser). Returns the list outputs, the status line, saved."""
    lang = browser_language(request)
    match = re.fullmatch(r"\s*(\d+)\s*", target or "")
    if match is None:
        return (*list_page(state, page, request), gr.skip(), gr.skip())
    video_id = int(match.group(1))
    try:
        _delete(state, _library(state, request), [video_id])
        status = say(lang, "library_deleted", count=1)
    except SummarizerError as e:
        status = h.show_error(str(e))
    forgotten = saved_video(saved, request) == video_id
    saved = with_saved(saved, request, None) if forgotten else gr.skip()
    return (*list_page(state, page, request), status, saved)


def delete_everything(state: h.AppState, saved: Any, request: gr.Request) -> tuple:
    """Delete all of this login's videos (confirmed in the browser)."""
    lang = browser_language(request)
    try:
        library = _library(state, request)
        ids = [v["id"] for v in library.list_videos(library.count_videos() or 1)]
        status = say(lang, "library_deleted", count=_delete(state, library, ids, everything=True))
    except SummarizerError as e:
        status = h.show_error(str(e))
    return (*list_page(state, 0, request), status, with_saved(saved, request, None))


def _delete(state: h.AppState, library: Library, ids: list[int], everything: bool = False) -> int:
    """Remove the videos (rows, cached features, the uploaded copy: :func:`jobs.delete_video`), after the
    pages that show them let them go; how many were removed."""
    state.forget_library_videos(ids)
    if everything:
        return jobs.delete_everything(library, state.options)
    for video_id in ids:
        jobs.delete_video(library, video_id, state.options)
    return len(ids)


def ask_library(state: h.AppState, question: str, ticked: list | None, model_id: str, request: gr.Request):
    """A question over the library (or the ticked videos): the passages found, answered by the loaded model
    from them alone, streamed; every citation a link. Yields (answer, status)."""
    lang = browser_language(request)
    question = (question or "").strip()
    if not question:
        yield gr.skip(), h.warn(say(lang, "type_question"))
        return
    if problem := state.check_text(question, "question"):
        yield gr.skip(), h.warn(problem)
        return
    cancel = state.cancels.new(h._sid(request))
    with h._status_errors() as failed:
        hits = _retrieve(_library(state, request), question, ticked)
        if not hits:
            yield nothing_found(question), ""
            return
        yield "", say(lang, "library_asking", count=len(hits))
        engine = state.engines.get(state.model_for(model_id))
        options = state.options
        session = engine.session(None, context=options.context, generation=options.generation)
        response = session.ask(ask_prompt(question, hits), cancel=cancel)
        try:
            with h._closing(response, cancel):
                for _ in response:
                    yield cite_links(response.streamed, hits), gr.skip()
        except h.Cancelled:
            yield cite_links(response.streamed, hits) + " *(stopped)*", say(lang, "stopped")
            return
        sources = sorted({hit.video_name for hit in hits})
        yield cite_links(response.text, hits), say(lang, "library_answered", sources=", ".join(sources))
    if failed:
        yield gr.skip(), failed.show()


def _retrieve(library: Library, question: str, ticked: list | None) -> list[Hit]:
    """The passages for ``question``: of every video, or of the ticked ones."""
    ids = {int(v) for v in ticked or []}
    return library.retrieve(question, videos=ids or None)


# ----------------------------------------------------------------------------------------------------
# The API: the same library, for the caller's login


def api_videos(state: h.AppState, page: int = 0, request: gr.Request = None) -> list[dict]:
    """The caller's videos, newest first, a page of PAGE_SIZE (page 0 = newest)."""
    library = _library(state, request)
    return [_public(v) for v in library.list_videos(PAGE_SIZE, max(int(page), 0) * PAGE_SIZE)]


def _public(video: dict) -> dict:
    """A video as the API gives it: not where it lies on the server (and no "path" key, which
    gradio_client would take for a file to download)."""
    return {k: v for k, v in video.items() if k not in ("path", "fingerprint")}


def api_search(state: h.AppState, query: str, request: gr.Request = None) -> list[dict]:
    """Search the caller's library: hits with video (id, name), start, text, snippet, kind."""
    return [hit.to_dict() for hit in _library(state, request).search(query, SEARCH_HITS)]


def api_video(state: h.AppState, video_id: int, request: gr.Request = None) -> dict:
    """Everything kept about one of the caller's videos (runs: summary, chapters, turns, transcript)."""
    return _public(_library(state, request).video(int(video_id)))


def api_open(state: h.AppState, video_id: int, request: gr.Request = None) -> str:
    """Open one of the caller's videos for questions: returns the job id /chat takes (its next question
    reopens the video from its cached features)."""
    sid = h._sid(request)
    _library(state, request).video(int(video_id))  # this caller's, or LibraryNotFoundError
    state.show_library_video(sid, int(video_id))
    return state.jobs.token_for(sid)


def api_ask(
    state: h.AppState, question: str, video_ids: list[int] | None = None, request: gr.Request = None
) -> dict:
    """Answer ``question`` over the caller's library (or the videos ``video_ids``) with the loaded model, from
    the passages found: {"answer": text (NOTHING_FOUND's words when none was), "passages": hits}."""
    hits = _retrieve(_library(state, request), question, video_ids)
    if not hits:
        return {"answer": nothing_found(question), "passages": []}
    options = state.options
    engine = state.engines.get(state.model_for(None))
    session = engine.session(None, context=options.context, generation=options.generation)
    response = session.ask(ask_prompt(question, hits))
    return {"answer": response.text, "passages": [hit.to_dict() for hit in hits]}


def api_delete(state: h.AppState, video_id: int, request: gr.Request = None) -> int:
    """Delete one of the caller's videos; returns how many videos the caller has left."""
    library = _library(state, request)
    library.video(int(video_id))
    _delete(state, library, [int(video_id)])
    return library.count_videos()


# ----------------------------------------------------------------------------------------------------
# Layout and wiring


def build(state: h.AppState, tab: gr.Tab, model_id: gr.Component, opened: list[gr.Component],
          saved: gr.BrowserState) -> list:  # fmt: skip
    """The Library tab's components (inside ``tab``) and their events. ``opened``: the components
    :func:`open_video` writes, by OPENED. Returns the events a Stop
    button cancels."""
    bind = _binder()
    cheap = {"concurrency_limit": None, "api_visibility": "private", "show_progress": "hidden"}
    gpu = {"concurrency_id": "gpu", "concurrency_limit": state.options.server.concurrency_limit}
    with gr.Row(equal_height=True):
        query = gr.Textbox(placeholder=T("library_search_placeholder"), show_label=False, scale=4,
                           max_lines=1, elem_id="library-search")  # fmt: skip
        search_btn = gr.Button(T("library_search"), scale=1, elem_id="library-search-btn")
    status = gr.Markdown("", elem_id="library-status")  # what the tab's actions did, and their errors
    hits = gr.HTML("", elem_id="library-hits")
    with gr.Row(equal_height=True):
        prev_btn = gr.Button(T("library_prev"), scale=0, min_width=110, size="sm", elem_id="library-prev")
        paging = gr.Markdown("", elem_id="library-paging")
        next_btn = gr.Button(T("library_next"), scale=0, min_width=110, size="sm", elem_id="library-next")
        refresh_btn = gr.Button(
            T("library_refresh"), scale=0, min_width=110, size="sm", elem_id="library-refresh"
        )
    videos = gr.HTML(note_html(T("library_empty")), elem_id="library-videos")
    page = gr.State(0)
    with gr.Accordion(T("library_ask_heading"), open=True, elem_id="library-ask-box"):
        ticked = gr.CheckboxGroup([], label=T("library_ticked"), elem_id="library-ticked")
        with gr.Row(equal_height=True):
            question = gr.Textbox(placeholder=T("library_ask_placeholder"), show_label=False, scale=4,
                                  elem_id="library-question")  # fmt: skip
            ask_btn = gr.Button(T("ask"), scale=1, elem_id="library-ask")
        answer = gr.Markdown("", elem_id="library-answer")
    with gr.Row():
        gr.HTML("")
        delete_all_btn = gr.Button(
            T("library_delete_all"),
            variant="stop",
            size="sm",
            scale=0,
            min_width=260,
            elem_id="library-delete-all",
        )
    # The bridge from the HTML lists' links and buttons (page.js): it puts the target in the box, then clicks.
    with gr.Row(elem_classes=["library-bridge"]):
        target = gr.Textbox(elem_id="library-target", show_label=False, container=False)
        open_btn = gr.Button("open", elem_id="library-open")
        delete_btn = gr.Button("delete", elem_id="library-delete")

    listing = [videos, paging, page, ticked]
    for trigger in (tab.select, refresh_btn.click):
        trigger(bind(list_page, state), [page], listing, **cheap)
    prev_btn.click(bind(previous_page, state), [page], listing, **cheap)
    next_btn.click(bind(next_page, state), [page], listing, **cheap)
    for trigger in (query.submit, search_btn.click):
        trigger(bind(search, state), [query], hits, **cheap)
    open_btn.click(bind(open_video, state), [target, saved], opened, **cheap).then(
        None, js="() => window.__qwen3vlSeekPending && window.__qwen3vlSeekPending()"
    )
    delete_btn.click(bind(delete_video, state), [target, page, saved], [*listing, status, saved], **cheap)
    delete_all_btn.click(bind(delete_everything, state), [saved], [*listing, status, saved], **cheap)
    ask = {"fn": bind(ask_library, state), "inputs": [question, ticked, model_id], "outputs": [answer, status],
           "show_progress": "hidden", **gpu}  # fmt: skip
    asking = [
        question.submit(**ask, api_visibility="private"),
        ask_btn.click(**ask, api_visibility="private"),
    ]

    for fn, name in ((api_videos, "library_videos"), (api_search, "library_search"), (api_video, "library_video"),
                     (api_open, "library_open"), (api_delete, "library_delete")):  # fmt: skip
        gr.api(bind(fn, state), api_name=name, concurrency_limit=None)
    gr.api(bind(api_ask, state), api_name="library_ask", **gpu)
    return asking


def _binder():
    from .page import bind

    return bind
