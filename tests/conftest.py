"""Shared fixtures: a tiny random Qwen3-VL built offline once per session, loaded like the real one."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright's own browser download fails here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' vision-feature cache and library out of the user's home: one fresh folder each
    per run."""
    import os
    import tempfile

    os.environ["QWEN3VL_CACHE__DIR"] = tempfile.mkdtemp(prefix="qwen3vl-test-features-")
    library = tempfile.mkdtemp(prefix="qwen3vl-test-library-")
    os.environ["QWEN3VL_LIBRARY__PATH"] = os.path.join(library, "library.db")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-VL model folder (seed 0), built once per test session. Treat it as read-only."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3vl"), seed=0)


@pytest.fixture
def tiny_model(tiny_model_dir: Path):
    """(model, processor) loaded through `from_pretrained`, float32, eval mode, on CPU.

    Loaded afresh for each test (a fraction of a second): the model keeps per-video state
    (`rope_deltas`), which must not leak from one test into the next.
    """
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval(), processor


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path):
    """The web app on the tiny model, one per test module (tests/apps.py)."""
    from tests.apps import serve

    yield from serve(tiny_model_dir)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    """Sessions that answer with enqueued text (``scripted.enqueue(...)``), for the layers above the
    engine; see tests/scripted.py."""
    from tests.scripted import Script

    script = Script()
    script.install(monkeypatch)
    return script


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright, one per test module (skipped where either is missing)."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
