"""What a hostile or careless client can do to the server, and what it must not (tiny model, loopback)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

import app
from qwen3vl_summarizer.errors import OptionsError
from qwen3vl_summarizer.jobs import JobStore
from tests.apps import PROMPT, Served, tiny_options
from tests.videos import write_video
from web import policy, render

NOT_AN_UPLOAD = "only files uploaded through this page can be read: upload the file again"


def call(served: Served, api: str, data: list | str, timeout: float = 120) -> list | dict:
    """A raw /gradio_api/call request, as a script without gradio_client would make it (``data`` may be
    the JSON text itself); the final data, or Gradio's error (``{"error": message, ...}``) when it failed,
    or the raw answer when it sent neither."""
    body = data if isinstance(data, str) else json.dumps(data)
    with httpx.Client(base_url=served.url, timeout=timeout) as http:
        posted = http.post(
            f"gradio_api/call/{api}",
            content='{"data": ' + body + "}",
            headers={"content-type": "application/json"},
        )
        event = posted.json()["event_id"]
        text = http.get(f"gradio_api/call/{api}/{event}").text
    lines = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    if "event: error" in text:
        return json.loads(lines[-1]) if lines and lines[-1] != "null" else {"error": None}
    return json.loads(lines[-1]) if lines and lines[-1] != "null" else [text]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hardening") / "clip.mp4"
    write_video(path, [i * 0.5 for i in range(6)])
    return path


def test_only_uploaded_files_are_read(served: Served, clip: Path, tmp_path: Path) -> None:
    """A path the client names (not uploaded through this server) is refused, existing or not, the same way:
    by this app's own check, or earlier by Gradio's (whose message the test server shows)."""
    picture = tmp_path / "server-side.png"
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(picture)
    for path in (str(picture), "/etc/passwd", "/no/such/file.png", str(clip)):
        described = call(served, "describe_image", [{"path": path}, "Describe.", served.options.model.id])
        # The image input hands a file it cannot open to the handler: the handler's own check refuses it.
        assert described == [f"**Error:** {NOT_AN_UPLOAD}"], path
    # Without Gradio's file metadata, Gradio refuses the file before any handler runs.
    model = served.options.model.id
    for path in (str(clip), "/etc/passwd"):
        for api, data in (
            ("summarize", [{"path": path}, PROMPT, 1.0, True, 8192, model, "auto", "", "", ""]),
            ("video", [{"path": path}, 1.0, True, 8192, PROMPT, "", ""]),
        ):
            answer = call(served, api, data)
            assert "The 'meta' field must be explicitly provided" in answer["error"], (api, path, answer)
    # With it, as Gradio's own client sends it, the path still has to be an upload.
    meta = {"meta": {"_type": "gradio.FileData"}}
    answer = call(served, "video", [{"path": str(clip), **meta}, 1.0, True, 8192, PROMPT, "", ""])
    refused = f"Cannot move {clip} to the gradio cache dir because it was not uploaded by a user."
    assert answer["error"] == refused


def test_an_image_bomb_is_refused_before_decoding(served: Served, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("L", (12_000, 12_000)).save(bomb, optimize=True)  # 144 megapixels in a small file
    assert bomb.stat().st_size < 1_000_000
    client = served.client()
    t0 = time.perf_counter()
    text = client.predict(
        handle_file(str(bomb)), "Describe.", served.options.model.id, api_name="/describe_image"
    )
    assert "megapixels" in text and time.perf_counter() - t0 < 30
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("just text", encoding="utf-8")
    text = client.predict(
        handle_file(str(not_an_image)), "Describe.", served.options.model.id, api_name="/describe_image"
    )
    assert "notes.png is not an image this server can read" in text


def test_long_or_broken_text_is_refused_at_once(served: Served, clip: Path) -> None:
    client = served.client()
    long_prompt = "Describe everything. " * 2_000  # 42,000 characters
    t0 = time.perf_counter()
    status = served.summarize(client, clip, prompt=long_prompt).result()[1]
    assert "characters long" in status and "20,000" in status and time.perf_counter() - t0 < 15
    # JSON may carry a lone surrogate; no Python client sends one, so a raw request does.
    status = call(served, "chat", '["What \\ud800 is this?", [], null]')[3]
    assert "not valid text" in status


def test_an_api_client_keeps_its_video_across_calls_with_the_job_id(served: Served, clip: Path) -> None:
    """Each /call is its own session; the job id that /summarize returns carries the video to /chat."""
    first = served.client()
    job_id = first.predict(handle_file(str(clip)), PROMPT, 1.0, True, 8192, served.options.model.id, "auto", "", "",
                           "", api_name="/summarize")[6]  # fmt: skip
    assert isinstance(job_id, str) and job_id == served.state.jobs.token_for(first.session_hash)
    later = served.client()  # a new session, as every raw HTTP call is
    answer = list(later.submit("What happens at 0:01?", [], job_id, api_name="/chat"))
    history = answer[-1][1]
    stats = next(o[2] for o in reversed(answer) if isinstance(o[2], dict) and "read_video" in o[2])
    assert history[-1]["role"] == "assistant" and stats["read_video"] is False
    _, _, _, status = later.predict("And without the id?", [], api_name="/chat")
    assert "No video has been read" in status
    _, _, _, status = later.predict("A made-up id?", [], "not-a-real-job-id", api_name="/chat")
    assert "No video has been read" in status


def test_model_choice_is_the_operators(tiny_model_dir: Path) -> None:
    options = tiny_options(tiny_model_dir)
    state = app.AppState(options)
    assert state.model_for("") == str(tiny_model_dir) and state.model_for("Qwen/Qwen3-VL-4B-Instruct")
    for model in ("/etc/shadow", "someone/huge-model", "../models"):
        with pytest.raises(policy.ModelNotOffered, match="this server offers these models"):
            state.model_for(model)
    open_server = app.AppState(options.replace(server={"allow_any_model": True}))
    assert open_server.model_for("someone/other-model") == "someone/other-model"


def test_markdown_from_the_model_or_a_person_cannot_carry_html() -> None:
    text = (
        'See <img src="https://example.com/x.png"> and `a <b> tag` and\n```\n<div>\n```\n<script>x</script>'
    )
    shown = render.no_raw_html(text)
    assert "<img" not in shown and "&lt;img" in shown and "&lt;script>" in shown
    assert "`a <b> tag`" in shown and "```\n<div>\n```" in shown, "code keeps its characters"
    # Every fence CommonMark knows keeps its code: tildes, four backticks (holding a three-backtick line),
    # an unclosed fence (to the end); a shorter fence does not close a longer one.
    for fenced, after in [
        ("~~~\n<div>\n~~~", "&lt;b>"),
        ("````\n```\n<div>\n````", "&lt;b>"),
        ("~~~~\n~~~\n<div>\n~~~~", "&lt;b>"),
        ("```\n<div>", "<b>"),  # unclosed: the rest is code
    ]:
        assert render.no_raw_html(f"<i>\n{fenced}\n<b>") == f"&lt;i>\n{fenced}\n{after}", fenced
    assert render.no_raw_html("``a `<b>` c`` <i>") == "``a `<b>` c`` &lt;i>", "a code span of two backticks"


def test_idle_sessions_are_forgotten_and_their_tokens_with_them() -> None:
    store = JobStore(budget_bytes=2**30)
    job = type(
        "Job",
        (),
        {"plan": type("Plan", (), {"kv_cache_bytes": 1})(), "released": False, "holds_kv_cache": True},
    )()
    store.put("a", job)
    token = store.token_for("a")
    assert store.key_for(token) == "a" and store.token_for("a") == token
    store.expire(idle_seconds=60)
    assert "a" in store
    store._used["a"] -= 120  # as if two minutes had passed
    store.expire(idle_seconds=60)
    assert "a" not in store and store.key_for(token) is None


def test_download_folders_of_dead_servers_are_removed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(policy.tempfile, "gettempdir", lambda: str(tmp_path))
    dead = tmp_path / f"{policy.DOWNLOADS_PREFIX}999999999-abc"
    alive = tmp_path / f"{policy.DOWNLOADS_PREFIX}{os.getpid()}-abc"
    for folder in (dead, alive):
        (folder / "session").mkdir(parents=True)
    policy.remove_leftover_downloads()
    assert not dead.exists() and alive.exists()


def test_auth_is_passed_to_gradio_and_a_public_server_without_it_is_warned_about(
    tiny_model_dir: Path, monkeypatch, caplog
) -> None:
    seen = {}
    demo = type("Demo", (), {"launch": lambda self, **kw: seen.update(kw)})()
    options = tiny_options(tiny_model_dir, auth="ann:secret,bob:pw")
    app.launch(demo, options)
    assert seen["auth"] == [("ann", "secret"), ("bob", "pw")]
    with pytest.raises(OptionsError, match="server.auth"):
        tiny_options(tiny_model_dir, auth="no-colon")
    app.launch(demo, tiny_options(tiny_model_dir, host="0.0.0.0"))
    assert "without a login" in caplog.text


def test_the_handlers_own_upload_check(tmp_path: Path, monkeypatch) -> None:
    """Behind Gradio's checks, every handler also refuses a path outside the upload folder itself."""
    uploads = tmp_path / "uploads"
    (uploads / "abc").mkdir(parents=True)
    inside = uploads / "abc" / "clip.mp4"
    inside.write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret", encoding="utf-8")
    (uploads / "abc" / "link.mp4").symlink_to(outside)
    monkeypatch.setattr(policy, "gradio_upload_folder", lambda: str(uploads))
    assert policy.uploaded(str(inside)) == str(inside.resolve())
    for path in (
        outside,
        uploads / "abc" / "link.mp4",
        uploads / "abc" / ".." / ".." / "secret.txt",
        uploads,
    ):
        with pytest.raises(policy.NotAnUpload, match="only files uploaded"):
            policy.uploaded(str(path))


def test_work_stops_when_its_client_goes_away(served: Served, clip: Path) -> None:
    """A client that closes its connection mid-answer frees the model at once, not after the answer."""
    job_id = served.summarize(served.client(), clip).result()[6]
    key = served.state.jobs.key_for(job_id)
    session = served.state.jobs.get(key).session
    usual = session.generation
    session.generation = dataclasses.replace(usual, max_new_tokens=100_000)  # an answer of minutes
    turns = len(session.turns)
    with httpx.Client(base_url=served.url, timeout=60) as http:
        posted = http.post("gradio_api/call/chat", json={"data": ["Tell me everything.", [], job_id]})
        with http.stream("GET", f"gradio_api/call/chat/{posted.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and "assistant" in line:
                    break  # the answer has begun streaming: now the client goes away
    assert served.state.cancels.wait(key, timeout=20), "the answer ran on after its client left"
    assert len(session.turns) == turns  # the unfinished answer was rolled back; the video stays loaded
    session.generation = usual
    answer = list(served.client().submit("What happens at 0:01?", [], job_id, api_name="/chat"))
    assert answer[-1][1][-1]["role"] == "assistant"
