"""The web app through its API (gradio_client), on the tiny random model: mechanics, never wording."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from qwen3vl_summarizer.export import FORMATS, get_writer
from qwen3vl_summarizer.feature_cache import FeatureCache
from qwen3vl_summarizer.library import Library
from qwen3vl_summarizer.video import probe
from tests.apps import PROMPT, Served, tiny_options
from tests.videos import write_video
from web import handlers, render


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = (0.1 * np.sin(np.arange(int(seconds * 16000)) / 10.0)).astype(np.float32)[None, :]
        for i in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, i : i + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("app-media")
    short, other = folder / "short.mp4", folder / "other.mp4"
    write_video(short, [i * 0.5 for i in range(8)])  # 4 s: 4 frames at 1 fps
    write_video(other, [float(i) for i in range(6)], size=(160, 96))
    broken = folder / "broken.mp4"
    broken.write_bytes(b"this is not a video, just some text " * 50)
    image = folder / "picture.png"
    Image.fromarray(np.full((64, 96, 3), 200, np.uint8)).save(image)
    return SimpleNamespace(
        short=short, other=other, broken=broken, audio=write_audio_only(folder / "voice.m4a"), image=image
    )


def test_summary_streams_then_follow_ups_reuse_the_cached_video(served: Served, media) -> None:
    # The first summary reads the video: no features of it left on disk by a test that ran before.
    FeatureCache(Path(served.options.cache.dir), 2**30).clear()
    client = served.client()
    outputs = list(served.summarize(client, media.short))
    texts = [o[0] for o in outputs if o[0]]
    assert len(texts) >= 3, "the summary should arrive in several streamed updates"
    assert all(len(a) <= len(b) for a, b in zip(texts, texts[1:], strict=False))
    assert any("frames" in str(o[1]) for o in outputs), "progress through the stages is shown"
    summary, status, stats, chat, files, *_ = outputs[-1]
    transcripts = [o[5] for o in outputs if isinstance(o[5], str)]
    assert any("no audio track" in t for t in transcripts), "the page says why no speech was used"
    # Every registered format that has something to hold; the chapter tracks only if the noise has times,
    # and no transcript (the video has no audio). The status names each chapter format left out.
    written = {Path(f).name.split(".summary.", 1)[1] for f in files}
    extensions = {get_writer(f).extension: get_writer(f).description for f in FORMATS}
    chapter_formats = [e for e in extensions if e not in ("md", "json") and not e.startswith("transcript")]
    assert {"md", "json"} <= written <= {"md", "json", *chapter_formats}
    assert all(Path(f).read_text(encoding="utf-8").strip() not in ("", "WEBVTT") for f in files)
    left_out = [extensions[e] for e in chapter_formats if e not in written]
    if left_out:
        assert f" · no {', '.join(left_out)} to download: the summary has no chapter times" in status
    else:
        assert "to download" not in status
    assert status.startswith("Done") and stats["read_video"] is True
    opened = served.state.jobs.get(client.session_hash)
    video_tokens = opened.session.media_tokens
    assert stats["prefill_tokens"] > video_tokens > 0
    frames_read = opened.session.frames_read

    # Downloads: the same summary as Markdown and JSON, built by the job as the CLI builds it.
    md_path, json_path = (next(f for f in files if f.endswith(ext)) for ext in (".md", ".json"))
    assert Path(md_path).read_text(encoding="utf-8").strip()
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    assert (
        data["video"] == "short.mp4"
        and data["stats"]["turns"][0]["prefill_tokens"] == stats["prefill_tokens"]
    )
    assert data["stats"] == opened.summary().stats

    # A follow-up prefills only its own tokens: no frame is decoded or encoded again.
    job = client.submit("What happens at 0:02?", [], api_name="/chat")
    outputs = list(job)
    _, history, stats2, _ = job.result()
    assert outputs[0][0] == "", "the question box is cleared as soon as the question is shown"
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert "[00:02](#t=2)" in _text(history[0]), "times in the question become seek links"
    assert stats2["read_video"] is False and 0 < stats2["prefill_tokens"] < video_tokens
    assert opened.session.frames_read == frames_read and len(opened.session.turns) == 2

    # A second follow-up carries the history; the cache still holds the video.
    _, history, stats3, _ = client.predict("And then?", history, api_name="/chat")
    assert len(history) == 4 and stats3["read_video"] is False and len(opened.session.turns) == 3

    # Summarize again with another prompt: the cached video is reused (branch from the prompt).
    outputs = list(served.summarize(client, media.short, prompt="List the key moments."))
    stats4 = outputs[-1][2]
    assert stats4["read_video"] is False and stats4["prefill_tokens"] < video_tokens
    assert outputs[-1][3] == [] and len(opened.session.turns) == 1


def test_the_pages_summary_and_questions_are_kept_in_the_library(served: Served, tmp_path: Path) -> None:
    """What the page shows is written into the library (issue 20's first slice: the Library tab comes
    next): the video, its summary as answered, and each follow-up with its question."""
    video = tmp_path / "kept.mp4"
    write_video(video, [i * 0.5 for i in range(6)], size=(128, 80))
    client = served.client()
    *_, (summary, status, *_) = served.summarize(client, video)
    assert status.startswith("Done")
    job = served.state.jobs.get(client.session_hash)
    _, history, _, _ = client.predict("What happens at 0:01?", [], api_name="/chat")
    with Library(served.options.library.path) as library:
        [entry] = [v for v in library.list_videos() if v["name"] == "kept.mp4"]
        run = library.video(entry["id"])["runs"][-1]
    assert entry["questions"] == 1 and run["finished"] and run["prompt"] == PROMPT
    assert run["summary"] == job.summary_text and run["stats"]["prefill_tokens"] > 0
    [turn] = run["turns"]
    assert (turn["question"], turn["answer"]) == ("What happens at 0:01?", job.answers[1].text)
    assert turn["finished"] and turn["stats"]["read_video"] is False


def test_stop_cancels_and_leaves_the_session_usable(served: Served, media) -> None:
    client = served.client()
    job = served.summarize(client, media.short)
    for output in job:
        if output[0]:  # the first streamed text: the model is writing
            assert client.predict(api_name="/stop") == handlers.STOPPED
            break
    final = job.result()
    assert final[1] == handlers.STOPPED, "the handler saw the cancel and said so"
    session = served.state.jobs.get(client.session_hash).session
    assert session.turns == [], "the stopped summary turn was dropped"

    # The video stays cached: a question after Stop reads no frame again.
    _, history, stats, _ = client.predict("What is shown?", [], api_name="/chat")
    assert stats["read_video"] is False and len(session.turns) == 1

    # Cancelling the event itself (what the Stop button's cancels=[...] does) rewinds cleanly too.
    job = client.submit("Describe it again.", history, api_name="/chat")
    for output in job:
        if len(output[1]) == 4:  # the answer started streaming
            job.cancel()
            break
    _, _, stats, _ = client.predict("One more question.", history, api_name="/chat")
    assert stats["read_video"] is False
    assert len(session.turns) == 2, "the cancelled turn left nothing behind"


def test_bad_input_is_a_message_and_the_app_keeps_serving(served: Served, media, tmp_path: Path) -> None:
    """Every problem is one status line that says what happened (no failed event: Gradio would paint
    error badges over the page); the app keeps serving."""
    client = served.client()
    args = (None, PROMPT, 1.0, True, 8192, served.options.model.id, "auto", "")
    status = client.predict(*args, api_name="/summarize")[1]
    assert status.startswith("No video yet")
    status = served.summarize(client, media.broken).result()[1]
    assert status.startswith("**Error:** broken.mp4 is not a video")
    assert "/gradio/" not in status, "the server-side upload path is not shown"
    assert "no video stream" in served.summarize(client, media.audio).result()[1]
    outputs = client.predict(handle_file(str(media.broken)), 1.0, True, 8192, PROMPT, api_name="/video")
    status = outputs[2]  # facts, plan, status... (the VideoInfo state does not travel)
    assert status.startswith("**Error:**") and "is not a video" in status
    status = client.predict("What happens?", [], api_name="/chat")[3]
    assert status.startswith("**Error:** No video has been read")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(AppError, match="not in the list of choices"):  # a client cannot pick a server folder
        served.summarize(client, media.short, model=str(empty)).result()
    # Still serving, with the configured model (never unloaded by the refused switch).
    engine = served.state.engines.engine
    outputs = list(served.summarize(client, media.short))
    assert outputs[-1][1].startswith("Done") and served.state.engines.engine is engine


def test_two_clients_never_see_each_other(served: Served, media) -> None:
    alice, bob = served.client(), served.client()
    jobs = [served.summarize(alice, media.short), served.summarize(bob, media.other)]
    results = [job.result() for job in jobs]
    assert all(r[1].startswith("Done") for r in results)
    a = served.state.jobs.get(alice.session_hash)
    b = served.state.jobs.get(bob.session_hash)
    assert Path(a.info.path).name == "short.mp4" and Path(b.info.path).name == "other.mp4"
    assert a.session is not b.session
    _, history_a, _, _ = alice.predict("What is in my video?", [], api_name="/chat")
    assert len(history_a) == 2 and len(a.session.turns) == 2 and len(b.session.turns) == 1
    # Bob's Stop does not touch Alice's session; a fresh page has no video at all.
    bob.predict(api_name="/stop")
    _, _, stats, _ = alice.predict("And now?", history_a, api_name="/chat")
    assert stats["read_video"] is False and len(a.session.turns) == 3
    status = served.client().predict("Whose video is this?", [], api_name="/chat")[3]
    assert "No video has been read" in status


def test_plan_line_and_image_description(served: Served, media) -> None:
    client = served.client()
    info_line, plan, *_ = client.predict(
        handle_file(str(media.short)), 1.0, True, 8192, PROMPT, api_name="/video"
    )
    assert "128×96" in info_line and "00:03" in info_line
    assert "4 frames at" in plan
    # The plan needs no model (the sliders redraw it live; the browser test moves one).
    faster = served.options.replace(sampling={"fps": 2.0})
    assert "8 frames at" in render.plan_line(probe(media.short), faster, PROMPT, None)
    text = client.predict(
        handle_file(str(media.image)), "Describe it.", served.options.model.id, api_name="/describe_image"
    )
    # The description is the model's own answer for that image: the same text as a session asked directly.
    from qwen3vl_summarizer.engine import VideoSession

    pixels = np.asarray(Image.open(media.image).convert("RGB"))
    session = VideoSession(served.state.engines.engine, image=pixels, generation=served.options.generation)
    assert text == session.ask("Describe it.").text


def test_uploads_over_the_size_limit_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    options = tiny_options(tiny_model_dir, max_upload_mb=1)
    demo = app.build_demo(options)
    app.launch(demo, options, prevent_thread_lock=True, quiet=True)
    try:
        big = tmp_path / "big.mp4"
        big.write_bytes(b"x" * (2 * 2**20))
        client = Client(f"http://127.0.0.1:{options.server.port}/", verbose=False)
        with pytest.raises(Exception, match="exceeds the maximum file size"):
            client.predict(handle_file(str(big)), 1.0, True, 8192, PROMPT, api_name="/video")
    finally:
        demo.close()


def test_main_reads_flags_over_the_config(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    seen = {}
    monkeypatch.setattr(app, "launch", lambda demo, options: seen.update(options=options))
    app.main(["--model", str(tiny_model_dir), "--port", "7999"])
    options = seen["options"]
    assert options.model.id == str(tiny_model_dir) and options.server.port == 7999
    assert options.server.host == "127.0.0.1" and options.server.share is False


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content


def test_a_video_longer_than_the_context_is_summarised_in_parts(served: Served, tmp_path: Path) -> None:
    video = tmp_path / "long.mp4"
    write_video(video, [i / 4 for i in range(200)], size=(320, 240))  # 50 s at 4 fps
    client = served.client()
    args = (handle_file(str(video)), PROMPT, 4.0, False, 8192, served.options.model.id, "auto", "")
    outputs = list(client.submit(*args, api_name="/summarize"))
    summary, status = outputs[-1][0], outputs[-1][1]
    assert status.startswith("Done") and "parts, then a merge" in status
    assert any(str(o[1]).startswith("Part 1/") for o in outputs), "progress names the part being read"
    job = served.state.jobs.get(client.session_hash)  # the job the server made for this client
    assert len(job.parts) >= 2 and job.merged
    assert "Notes by part" in summary and "Part 2 of" in summary
    # A follow-up that names a time is answered by the part that holds it.
    last = job.parts[-1]
    answer = list(client.submit(f"What is at 00:{int(last.segment.start) + 1:02d}?", [], api_name="/chat"))
    assert answer[-1][1][-1]["role"] == "assistant"
    assert last.session is not None and len(last.session.turns) == 2


def test_a_time_range_is_planned_and_summarised_on_the_videos_clock(served: Served, tmp_path: Path) -> None:
    video = tmp_path / "walk.mp4"
    write_video(video, [i * 0.5 for i in range(24)])  # 12 s
    client = served.client()
    # The plan line follows the From/To fields.
    _, plan, *_ = client.predict(
        handle_file(str(video)), 1.0, True, 8192, PROMPT, "0:04", "8", api_name="/video"
    )
    assert "00:04–00:08: 4 frames at" in plan
    outputs = list(served.summarize(client, video, start="0:04", end="8"))
    status, timeline = outputs[-1][1], outputs[-1][-1]
    assert status.startswith("Done"), status
    job = served.state.jobs.get(client.session_hash)
    assert (job.plan.start, job.plan.end, job.plan.frames) == (4.0, 8.0, 4)
    assert job.session.timestamps == [4.0, 5.0, 6.0, 7.0], "only the range, on the video's clock"
    # The timeline of the finished summary (the tiny model's noise has no chapters: a one-line note), and
    # thumbnails of the frames read, for when it has.
    assert outputs[0][-1] == render.note_html(render.NO_SUMMARY_NOTE)
    assert timeline == render.timeline_html(job)
    assert job.thumbnails.times == [4.0, 6.0]
    # Another range reads again; a range the video cannot hold, or a time that is not one, is one message.
    served.summarize(client, video, start="6").result()
    assert served.state.jobs.get(client.session_hash).plan.frames == 6
    for start, end, words in [
        ("0:10", "0:05", "must end after it starts"),
        ("soon", "", "From: 'soon' is not a time"),
        ("", "1:00", "after the end of the video"),
    ]:
        status = served.summarize(client, video, start=start, end=end).result()[1]
        assert words in status, status
        _, plan, *_ = client.predict(
            handle_file(str(video)), 1.0, True, 8192, PROMPT, start, end, api_name="/video"
        )
        assert plan.startswith("**Cannot plan:**") and words in plan


def test_the_pages_language_is_the_browsers() -> None:
    """The handlers answer in the first language of Accept-Language that the page has (by q, then order);
    every text exists in each language with the same placeholders."""
    import string

    from web.i18n import LANGUAGES, TEXTS, browser_language

    def asking(header: str | None) -> str:
        request = None if header is None else SimpleNamespace(headers={"accept-language": header})
        return browser_language(request)

    assert asking("zh-CN,zh;q=0.9,en;q=0.8") == "zh" and asking("en-US,en;q=0.9,zh;q=0.5") == "en"
    assert asking("fr-FR,zh-TW;q=0.5,en;q=0.4") == "zh" and asking("en;q=0.2,zh;q=0.7") == "zh"
    assert asking("de") == asking("") == asking(None) == asking("zh;q=oops") == asking("zh;q=0") == "en"

    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    for lang in LANGUAGES:
        assert TEXTS[lang].keys() == TEXTS["en"].keys(), lang
        assert all(fields(TEXTS[lang][k]) == fields(TEXTS["en"][k]) for k in TEXTS["en"]), lang
