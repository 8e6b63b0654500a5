"""The job layer both front ends share: the answer object, the job store's reuse and release rules, the
exported summary, and the server's model slot (tiny model where a model is needed)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from qwen3vl_summarizer import jobs, transcripts
from qwen3vl_summarizer.errors import ContextTooSmallError, IncompleteAnswerError, ModelLoadError
from qwen3vl_summarizer.events import Progress, Response, TextDelta, TurnStats
from qwen3vl_summarizer.jobs import JobStore, open_job, plan_for
from qwen3vl_summarizer.loading import EngineSlot, load_engine
from qwen3vl_summarizer.options import load_options
from qwen3vl_summarizer.transcripts import PendingTranscript
from tests.videos import write_video

PROMPT = "Summarize the video."


def stats(text: str = "ab") -> TurnStats:
    return TurnStats("q", text, [1, 2], prefill_tokens=5, ttft_s=0.1, decode_tokens_per_s=2.0)


# --- Response --------------------------------------------------------------------------------------------


def test_a_response_streams_then_holds_its_answer_and_replays() -> None:
    done = []
    events = [Progress("prefill", 1, 2), TextDelta("a", 1), TextDelta("", 3), TextDelta("b", 2), stats()]
    response = Response(iter(events), on_done=done.append)
    assert not response.done
    streamed = []
    for event in response.events():
        streamed.append(event)
        if isinstance(event, TextDelta):
            assert response.streamed.endswith(event.text)
    assert streamed == events and done == [events[-1]]
    assert response.text == "ab" and response.stats is events[-1]
    assert list(response.events()) == events, "a consumed response replays from memory"
    assert list(response) == ["a", "b"], "iterating it yields the text, no empty chunks"
    assert done == [events[-1]], "on_done runs once"


def test_iterating_a_response_streams_its_text_and_text_is_what_streamed() -> None:
    events = [Progress("prefill", 1, 2), TextDelta("a", 1), TextDelta("b", 2), stats("ab")]
    response = Response(iter(events))
    chunks = []
    for chunk in response:
        assert isinstance(chunk, str)
        chunks.append(chunk)
    assert chunks == ["a", "b"] and response.text == "".join(chunks) == response.stats.text
    assert list(response) == chunks, "and replays"


def test_stats_runs_an_unread_response_to_its_end() -> None:
    assert Response(iter([TextDelta("x", 1), stats("x")])).text == "x"


def test_a_stream_without_its_statistics_is_one_precise_error() -> None:
    with pytest.raises(IncompleteAnswerError, match="without its statistics"):
        list(Response(iter([TextDelta("a", 1)])))
    with pytest.raises(IncompleteAnswerError):
        Response(iter([])).stats  # noqa: B018


def test_relay_passes_events_and_returns_the_stats() -> None:
    final = stats()

    def outer():
        got = yield from Response(iter([TextDelta("a", 1), final])).relay()
        assert got is final
        yield "after"

    assert [type(e).__name__ if not isinstance(e, str) else e for e in outer()] == ["TextDelta", "after"]


def test_closing_a_response_closes_its_stream() -> None:
    closed = []

    def source():
        try:
            yield TextDelta("a", 1)
            yield TextDelta("b", 2)
            yield stats()
        finally:
            closed.append(True)

    response = Response(source())
    next(iter(response))
    response.close()
    assert closed == [True]
    with pytest.raises(IncompleteAnswerError, match="stopped before it finished"):
        response.stats  # noqa: B018

    # Leaving a loop early (a consumer that breaks, a page that closed) stops the work at once too.
    closed.clear()
    response = Response(source())
    for _ in response:
        break
    assert closed == [True]
    closed.clear()
    response = Response(source())
    for _ in response.events():
        break
    assert closed == [True]


# --- JobStore ------------------------------------------------------------------------------------------


def fake_job(name: str, size: int, released: list[str], holds_kv_cache: bool = True) -> SimpleNamespace:
    job = SimpleNamespace(
        plan=SimpleNamespace(kv_cache_bytes=size), released=False, holds_kv_cache=holds_kv_cache
    )

    def release():
        released.append(name)
        job.released = True

    job.release = release
    return job


def test_jobs_release_their_caches_least_recently_used() -> None:
    released: list[str] = []
    store = JobStore(budget_bytes=100)
    store.put("a", fake_job("a", 60, released))
    store.put("b", fake_job("b", 60, released))
    assert released == ["a"], "over budget: the oldest gives its cache back"
    assert "a" in store, "its conversation stays"
    store.put("c", fake_job("c", 30, released))
    assert released == ["a"]
    store.get("a")  # used again: counts again, so the least recent other one is released
    assert released == ["a", "b"]
    store.drop("b")
    assert "b" not in store and len(store) == 2


def test_jobs_of_a_model_server_are_outside_the_budget() -> None:
    """A vLLM server's jobs hold no KV cache in this process: never released, and not counted."""
    released: list[str] = []
    store = JobStore(budget_bytes=100)
    store.put("served", fake_job("served", 1000, released, holds_kv_cache=False))
    store.put("a", fake_job("a", 60, released))
    store.put("served too", fake_job("served too", 1000, released, holds_kv_cache=False))
    assert released == []
    store.put("b", fake_job("b", 60, released))
    assert released == ["a"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return load_engine(load_options(overrides={"model": {"device": "cpu", "dtype": "float32"}}, environ={}).model,
                       str(tiny_model_dir))  # fmt: skip


def options(fps: float = 2.0):
    return load_options(
        overrides={
            "sampling": {"fps": fps},
            "context": {"max_context": 8192},
            "generation": {"max_new_tokens": 4, "repetition_penalty": 1.0},
            "cache": {"enabled": False},  # so that reading the video again really reads it
        },
        environ={},
    )


def test_the_same_video_read_the_same_way_is_reused_for_a_new_prompt(engine, tmp_path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, [i * 0.5 for i in range(6)])
    store = JobStore(budget_bytes=2**30)
    job, response = store.summarize("page", engine, video, options(), PROMPT)
    first = response.stats
    assert first.read_video and job.answers == [first]
    follow_up = job.ask("And then?").stats
    assert job.answers == [first, follow_up]

    again, response = store.summarize("page", engine, video, options(), "List the key moments.")
    second = response.stats
    assert again is job and not second.read_video, "a new prompt only: the video stays in the cache"
    assert second.prefill_tokens < job.session.media_tokens
    assert job.answers == [second], "a new summary replaces the conversation"

    other, response = store.summarize("page", engine, video, options(fps=1.0), PROMPT)
    assert other is not job and response.stats.read_video, "another sampling rate reads the video again"
    assert store.get("page") is other


def test_another_time_range_reads_the_video_again(engine, tmp_path) -> None:
    from qwen3vl_summarizer.errors import OptionsError

    video = tmp_path / "clip.mp4"
    write_video(video, [i * 0.5 for i in range(12)])  # 6 s
    store = JobStore(budget_bytes=2**30)
    job, response = store.summarize("page", engine, video, options(), PROMPT, start=1.0, end=4.0)
    assert response.stats.read_video and (job.plan.start, job.plan.end, job.plan.frames) == (1.0, 4.0, 6)
    again, response = store.summarize("page", engine, video, options(), "List it.", start=1, end=4)
    assert again is job and not response.stats.read_video, "the same range: a new prompt only"
    assert job.reads_as(video, options(), engine, 1.0, 4.0) and not job.reads_as(video, options(), engine)
    other, response = store.summarize("page", engine, video, options(), PROMPT, start=2.0, end=4.0)
    assert other is not job and response.stats.read_video, "another range reads the video again"
    # An end at the video's end is the whole rest of it: the same reading as no end.
    rest, _ = store.summarize("page", engine, video, options(), PROMPT, start=2.0)
    assert rest.reads_as(video, options(), engine, 2.0, 6.0) and rest.plan.end is None
    with pytest.raises(OptionsError, match="after the end of the video"):
        store.summarize("page", engine, video, options(), PROMPT, start=1.0, end=60.0)


def test_the_exported_summary_is_built_from_the_jobs_answers(engine, tmp_path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, [i * 0.5 for i in range(6)])
    job, response = JobStore(budget_bytes=2**30).summarize("cli", engine, video, options(), PROMPT)
    with pytest.raises(ValueError, match="not been summarised"):
        job.summary()
    response.stats  # noqa: B018
    job.ask("q1").stats  # noqa: B018
    summary = job.summary("general")
    assert summary.markdown == job.answers[0].text + "\n\n---\n\n**Q: q1**\n\n" + job.answers[1].text
    assert summary.video == "clip.mp4" and summary.model == engine.model_id and summary.prompt == "general"
    assert [t["question"] for t in summary.stats["turns"]] == [PROMPT, "q1"]
    assert summary.stats["prompt_tokens"] == job.plan.tokens and summary.stats["frames"] == job.plan.frames


def test_a_video_that_fails_to_plan_stops_its_recognition(engine, tmp_path, monkeypatch) -> None:
    """A batch must not go on recognising a file that failed while the next one runs."""
    video = tmp_path / "talk.mp4"
    write_video(video, [i * 0.5 for i in range(6)], audio_seconds=3.0)
    started, stopped, finished = threading.Event(), threading.Event(), []
    real_stop = PendingTranscript.stop

    def stop(self) -> None:
        real_stop(self)
        stopped.set()

    def recognise(path, mode, model, language, device, progress, **kwargs):
        started.set()
        assert stopped.wait(30), "nobody stopped the recognition"
        progress(0.0, 3.0)  # raises Cancelled: the thread ends here
        finished.append(path)

    opened: list = []

    def start_transcript(*args, **kwargs):
        opened.append(real_start(*args, **kwargs))
        return opened[-1]

    real_start = jobs.start_transcript
    monkeypatch.setattr(PendingTranscript, "stop", stop)
    monkeypatch.setattr(transcripts, "recognise", recognise)
    monkeypatch.setattr(jobs, "start_transcript", start_transcript)
    too_small = options().replace(
        context={"max_context": 1024, "reserve_tokens": 1000}, speech={"mode": "asr"}
    )
    with pytest.raises(ContextTooSmallError):
        open_job(engine, video, too_small, PROMPT)
    (pending,) = opened
    assert isinstance(pending, PendingTranscript) and started.is_set()
    assert pending.finished.wait(30) and not pending.done and finished == [], "stopped, not finished"


def test_a_job_probes_its_file_once(engine, tmp_path, monkeypatch) -> None:
    from qwen3vl_summarizer import video as video_module

    video = tmp_path / "talk.mp4"
    write_video(video, [i * 0.5 for i in range(6)], audio_seconds=3.0)
    probed = []
    real = video_module.probe

    def probe(path):
        probed.append(path)
        return real(path)

    for module in (jobs, transcripts, video_module):
        monkeypatch.setattr(module, "probe", probe)
    monkeypatch.setattr(transcripts, "recognise", lambda *args, **kwargs: None)  # no speech model here
    job = open_job(engine, video, options().replace(speech={"mode": "asr"}), PROMPT)
    assert job.ask(PROMPT).stats.read_video
    assert probed == [video], "probed once: the transcript, the plan and the frames share its VideoInfo"


def test_plan_for_counts_as_the_job_does(engine, tmp_path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, [i * 0.5 for i in range(6)])
    opts = options().replace(speech={"mode": "off"})
    job = open_job(engine, video, opts, PROMPT)
    assert plan_for(job.info, opts, PROMPT, engine) == job.plan
    without_model = plan_for(job.info, opts, PROMPT)  # Qwen3-VL-2B's geometry: the frames are the same
    assert (without_model.frames, without_model.width, without_model.height) == (
        job.plan.frames, job.plan.width, job.plan.height,
    )  # fmt: skip


# --- EngineSlot ----------------------------------------------------------------------------------------


def test_a_model_that_fails_to_load_leaves_the_current_one(tiny_model_dir, tmp_path) -> None:
    model = load_options(overrides={"model": {"id": str(tiny_model_dir), "device": "cpu"}}, environ={}).model
    switched = []
    slot = EngineSlot(model, on_switch=switched.append)
    engine = slot.get()
    assert slot.get(str(tiny_model_dir)) is engine, "the same id is not loaded twice"
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="not a model folder"):
        slot.get(str(empty))
    assert slot.engine is engine and switched == [], "a failed switch keeps the working model"
    with pytest.raises(ModelLoadError, match="model folder not found: /no/such/folder"):
        slot.get("/no/such/folder")
    assert slot.engine is engine


def test_a_transformers_too_old_for_the_engine_is_refused(tiny_model_dir, monkeypatch) -> None:
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    with pytest.raises(ModelLoadError, match=r"transformers 5.17.0 is too old.*transformers>=5.24"):
        load_engine(load_options(environ={}).model, str(tiny_model_dir))
