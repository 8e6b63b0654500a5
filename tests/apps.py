"""The web app served on the tiny model for the API and browser tests (the fixture is ``served`` in conftest)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from gradio_client import Client, handle_file

import app
from qwen3vl_summarizer.options import Options, load_options

PROMPT = "Summarize this video."
MAX_NEW_TOKENS = 64  # long enough to press Stop mid-answer, short enough to keep tests quick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_options(model_dir: Path, **server) -> Options:
    return load_options(
        overrides={
            "model": {"id": str(model_dir)},
            "generation": {"max_new_tokens": MAX_NEW_TOKENS},
            "server": {"port": free_port(), **server},
            "cache": {"dir": os.environ["QWEN3VL_CACHE__DIR"]},  # conftest's per-run folder
            "library": {"path": os.environ["QWEN3VL_LIBRARY__PATH"]},  # conftest's too
        },
        environ={},
    )


@dataclass
class Served:
    url: str
    state: app.AppState
    options: Options

    def client(self) -> Client:
        return Client(self.url, verbose=False)

    def summarize(
        self,
        client: Client,
        video: Path,
        prompt: str = PROMPT,
        fps: float = 1.0,
        model: str | None = None,
        speech: str = "auto",
        language: str = "",
        start: str = "",
        end: str = "",
    ):
        """/summarize of ``video``; ``start``/``end``: the From/To fields (typed times; empty: all of it)."""
        args = (
            handle_file(str(video)),
            prompt,
            fps,
            True,
            8192,
            model or self.options.model.id,
            speech,
            language,
            start,
            end,
        )
        return client.submit(*args, api_name="/summarize")


def serve(model_dir: Path, library: Path | None = None, **server):
    """Start the app on a free port; yields a :class:`Served`, closes the app after. Gradio's own errors
    carry their message (``show_error``), so that a test tells Gradio's refusal from a crash. ``library``:
    a library file of its own (else the run's shared one); ``server``: ``[server]`` settings."""
    options = tiny_options(model_dir, **server)
    if library is not None:
        options = options.replace(library={"path": str(library)})
    state = app.AppState(options)
    demo = app.build_demo(options, state)
    app.launch(demo, options, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        yield Served(f"http://127.0.0.1:{options.server.port}/", state, options)
    finally:
        demo.close()
        state.close()
