"""The scripted session (tests/scripted.py) keeps to VideoSession's interface and behaves as it does, so
the tests that script answers test the layers above it and not a different contract."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import pytest

from qwen3vl_summarizer import video
from qwen3vl_summarizer.engine import Engine, VideoSession
from qwen3vl_summarizer.errors import Cancelled
from qwen3vl_summarizer.events import Progress, TextDelta, TurnStats
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import load_options
from tests.scripted import Script, ScriptedSession
from tests.videos import write_video

# What the package reads of a session (summarize.py, jobs.py, cli.py, app.py)
USED = ("ask", "turns", "damage", "frames_read", "features_from_cache", "media_tokens", "total_frames")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scripted") / "clip.mp4"
    write_video(path, [i * 0.5 for i in range(6)])  # 3 s
    return path


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    options = load_options(overrides={"model": {"device": "cpu", "dtype": "float32"}}, environ={})
    return load_engine(options.model, str(tiny_model_dir))


def test_it_takes_what_a_video_session_takes(engine: Engine, clip: Path) -> None:
    assert inspect.signature(ScriptedSession.ask) == inspect.signature(VideoSession.ask)
    real = inspect.signature(VideoSession.__init__).parameters
    scripted = inspect.signature(ScriptedSession.__init__).parameters
    assert [(n, p.kind) for n, p in real.items()] == [
        (n, p.kind) for n, p in scripted.items() if n != "script"
    ]
    frames = video.sample(clip, 1.0, (64, 64))
    sessions = [
        VideoSession(engine, frames, total_frames=3),
        ScriptedSession(engine, frames, script=Script()),
    ]
    for name in USED:
        assert all(hasattr(session, name) for session in sessions), name


def test_answers_stream_in_order_and_replay(clip: Path) -> None:
    script = Script()
    script.enqueue("### [00:00] One\n\nA  red block.\n", "第二个回答")
    session = ScriptedSession(None, video.sample(clip, 1.0, (64, 64)), total_frames=3, script=script)
    first = session.ask("Summarize.")
    events = list(first.events())
    assert [e for e in events if isinstance(e, Progress)] == [Progress("frames", n, 3) for n in (1, 2, 3)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == first.text == "### [00:00] One\n\nA  red block.\n"
    stats = events[-1]
    assert isinstance(stats, TurnStats) and stats.read_video and len(stats.tokens) == len(deltas)
    assert list(first.events()) == events  # consumed: replayed from memory
    second = session.ask("And then?")
    assert second.text == "第二个回答" and not second.stats.read_video  # the video is read once
    assert [t.question for t in session.turns] == ["Summarize.", "And then?"]
    assert [(a.question, a.frames) for a in script.asked] == [("Summarize.", 3), ("And then?", 3)]
    with pytest.raises(AssertionError, match="no scripted answer left"):
        list(session.ask("More?"))


def test_branch_and_cancel_as_a_video_session(clip: Path) -> None:
    script = Script()
    script.enqueue("first summary", "a follow-up", "second summary", "never shown at all")
    session = ScriptedSession(None, video.sample(clip, 1.0, (64, 64)), script=script)
    assert [session.ask("p1").text, session.ask("q1").text] == ["first summary", "a follow-up"]
    assert session.ask("p2", branch=0).text == "second summary"
    assert [t.question for t in session.turns] == ["p2"]
    with pytest.raises(ValueError, match="branch"):
        session.ask("q", branch=2)
    cancel = threading.Event()
    stream = session.ask("q2", cancel=cancel).events()
    assert next(stream) == TextDelta("never", 0)
    cancel.set()
    with pytest.raises(Cancelled):
        next(stream)
    assert [t.question for t in session.turns] == ["p2"], "a cancelled turn is dropped"


def test_speech_recognised_beside_the_video_is_waited_for(clip: Path) -> None:
    script = Script()
    script.enqueue("ok")

    def transcript(cancel):
        yield Progress("speech", 1, 1)
        return "[00:01] hello\n"

    session = ScriptedSession(None, video.sample(clip, 1.0, (64, 64)), speech=transcript, script=script)
    events = list(session.ask("Summarize.").events())
    assert Progress("speech", 1, 1) in events
    assert script.asked[0].speech == "[00:01] hello\n"


def test_the_fixture_scripts_the_sessions_the_engine_makes(scripted, engine: Engine, clip: Path) -> None:
    scripted.enqueue("scripted")
    session = engine.session(video.sample(clip, 1.0, (64, 64)), total_frames=3)
    assert isinstance(session, ScriptedSession) and scripted.sessions == [session]
    assert session.ask("Summarize.").text == "scripted" and scripted.questions == ["Summarize."]
