"""Long videos: segment, summarise each part with absolute times, merge, route follow-ups (tiny model)."""

from __future__ import annotations

import re

import pytest

from qwen3vl_summarizer.engine import Engine, Progress, TextDelta, TurnStats
from qwen3vl_summarizer.jobs import open_job
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import ModelOptions, load_options
from qwen3vl_summarizer.summarize import PARTS_HEADING
from tests.videos import write_video

PROMPT = "Summarize the video."


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return load_engine(ModelOptions(str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_video(path, [i * 0.5 for i in range(80)], size=(128, 96))  # 40 s
    return path


def options(context: int):
    return load_options(
        overrides={
            "sampling": {"fps": 2.0, "min_pixels": 128 * 96, "max_pixels": 128 * 96},
            "context": {"max_context": context, "reserve_tokens": 400, "prefill_chunk_size": 256},
            "generation": {"max_new_tokens": 6, "temperature": 0.0, "repetition_penalty": 1.0},
        }
    )


def stamps(engine, session) -> list[float]:
    return [float(x) for x in re.findall(r"<([\d.]+) seconds>", engine.tokenizer.decode(session.ids))]


def test_video_that_fits_is_one_session(engine, long_video):
    job = open_job(engine, long_video, options(8192), PROMPT)
    assert job.plan.fits and len(job.parts) == 1
    events = list(job.ask(PROMPT).events())
    assert isinstance(events[-1], TurnStats)
    assert job.session.media_tokens + len(job.session.turns[0].prompt_ids) == job.plan.tokens


def test_long_video_is_split_summarised_and_merged(engine, long_video):
    job = open_job(engine, long_video, options(1024), PROMPT)
    n = len(job.parts)
    assert n >= 2
    # Segments cover the video contiguously.
    segs = [p.segment for p in job.parts]
    assert segs[0].start == 0 and all(a.end == b.start for a, b in zip(segs, segs[1:], strict=False))
    response = job.ask(PROMPT)
    events = list(response.events())
    progress = [e for e in events if isinstance(e, Progress) and e.stage == "segment"]
    assert [(e.done, e.total) for e in progress] == [(i, n) for i in range(n + 1)]
    stats = events[-1]
    assert isinstance(stats, TurnStats)
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert f"### Part 1 of {n} (00:00–" in streamed
    # The answer's text is what streamed: the parts' notes, then the merged summary.
    assert response.text == stats.text == streamed == "".join(response)
    assert stats.text.endswith(job.merged) and job.merged
    # The exported document puts the merged summary first, then the notes it was made from.
    assert job.summary_text.startswith(job.merged) and PARTS_HEADING in job.summary_text
    assert job.summary().markdown == job.summary_text
    # Each part reads absolute times from inside its own segment; the live one shows them in its prompt.
    for part in job.parts:
        times = [f.t for f in part.frames]
        assert times and part.segment.start <= times[0] and times[-1] < part.segment.end
        assert "part" in part.turns[0].question.lower()
    live = job.parts[-1].session
    got = stamps(engine, live)
    assert got and job.parts[-1].segment.start <= got[0] < got[-1] < job.parts[-1].segment.end
    # Only one segment holds a KV cache at a time.
    assert sum(p.session is not None for p in job.parts) == 1


def test_follow_up_that_names_a_time_goes_to_its_segment(engine, long_video):
    job = open_job(engine, long_video, options(1024), PROMPT)
    list(job.ask(PROMPT).events())
    last = job.parts[-1]
    t = (last.segment.start + last.segment.end) / 2
    question = f"What is on screen at 00:{int(t):02d}?"
    assert job.part_at(t) is last
    events = list(job.ask(question).events())
    assert isinstance(events[-1], TurnStats)
    session = last.session
    assert session is not None and session.turns[-1].question == question
    # The rebuilt session kept the segment's own summary turn before the follow-up.
    assert len(session.turns) == 2 and session.turns[0].answer_ids == last.turns[0].answer_ids


def test_general_follow_up_carries_the_merged_summary(engine, long_video):
    job = open_job(engine, long_video, options(1024), PROMPT)
    list(job.ask(PROMPT).events())
    events = list(job.ask("Who is speaking?").events())
    assert isinstance(events[-1], TurnStats)
    live = [p for p in job.parts if p.session is not None]
    assert len(live) == 1
    assert "Summary of the whole video" in live[0].session.turns[-1].question


def test_feature_cache_skips_decoding_and_vision_for_the_same_video(engine, long_video, tmp_path):
    from qwen3vl_summarizer import engine as engine_module

    opts = options(8192).replace(cache={"dir": str(tmp_path / "features")})
    first = open_job(engine, long_video, opts, PROMPT)
    cold = list(first.ask(PROMPT).events())[-1]
    assert not first.session.features_from_cache

    encoded = []
    real = engine_module.Engine.encode_frames
    engine_module.Engine.encode_frames = lambda self, frames: (
        encoded.append(len(frames)) or real(self, frames)
    )
    try:
        second = open_job(engine, long_video, opts, "List the highlights.")  # another prompt, another session
        list(second.ask(PROMPT).events())
        warm = list(open_job(engine, long_video, opts, PROMPT).ask(PROMPT).events())[-1]
    finally:
        engine_module.Engine.encode_frames = real
    assert encoded == []  # no frame was encoded again
    assert second.session.features_from_cache and second.session.frames_read == first.session.frames_read
    assert second.session.ids == first.session.ids[: len(second.session.ids)]
    assert warm.tokens == cold.tokens
    assert warm.timings["frames"] < cold.timings["frames"]

    # A corrupted entry is detected and rebuilt, never used.
    for tensors in (tmp_path / "features").rglob("tensors.safetensors"):
        data = bytearray(tensors.read_bytes())
        data[-100:] = bytes(100)
        tensors.write_bytes(bytes(data))
    rebuilt = open_job(engine, long_video, opts, PROMPT)
    assert list(rebuilt.ask(PROMPT).events())[-1].tokens == cold.tokens
    assert not rebuilt.session.features_from_cache


def test_feature_cache_key_follows_sampling_settings(engine, long_video, tmp_path):
    opts = options(8192).replace(cache={"dir": str(tmp_path / "features")})
    a = open_job(engine, long_video, opts, PROMPT).parts[0].feature_key
    b = open_job(engine, long_video, opts.replace(sampling={"fps": 1.0}), PROMPT).parts[0].feature_key
    c = open_job(engine, long_video, opts.replace(cache={"enabled": False}), PROMPT).parts[0].feature_key
    assert a != b and c is None


def test_a_released_job_rebuilds_its_conversation_from_the_feature_cache(engine, long_video, tmp_path):
    from qwen3vl_summarizer import engine as engine_module

    opts = options(8192).replace(cache={"dir": str(tmp_path / "features")})
    job = open_job(engine, long_video, opts, PROMPT)
    list(job.ask(PROMPT).events())
    reference = open_job(engine, long_video, opts, PROMPT)
    list(reference.ask(PROMPT).events())
    follow = list(reference.ask("And then?").events())[-1]

    job.release()
    assert job.parts[0].session is None and len(job.parts[0].turns) == 1
    encoded = []
    real = engine_module.Engine.encode_frames
    engine_module.Engine.encode_frames = lambda self, frames: (
        encoded.append(len(frames)) or real(self, frames)
    )
    try:
        again = list(job.ask("And then?").events())[-1]
    finally:
        engine_module.Engine.encode_frames = real
    assert encoded == [] and job.session.features_from_cache
    assert again.tokens == follow.tokens and len(job.session.turns) == 2


def test_a_cancelled_read_from_the_feature_cache_resumes_without_decoding(engine, long_video, tmp_path):
    import threading

    from qwen3vl_summarizer.errors import Cancelled

    opts = options(8192).replace(
        cache={"dir": str(tmp_path / "features")}, context={"prefill_chunk_size": 64}
    )
    cold = list(open_job(engine, long_video, opts, PROMPT).ask(PROMPT).events())[-1]
    job = open_job(engine, long_video, opts, PROMPT)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        for event in job.ask(PROMPT, cancel=cancel).events():
            if isinstance(event, Progress) and event.stage == "prefill":
                cancel.set()
    assert job.session.features_from_cache and job.session.media_tokens == 0
    frames = job.session.frames_read
    cancel.clear()
    resumed = list(job.ask(PROMPT, cancel=cancel).events())[-1]
    assert job.session.frames_read == frames
    assert resumed.tokens == cold.tokens


# --- a time range ----------------------------------------------------------------------------------------


def test_a_range_reads_only_its_frames_and_the_prompt_keeps_the_videos_clock(engine, long_video):
    opts = options(8192).replace(cache={"enabled": False})  # decode, so thumbnails are kept
    job = open_job(engine, long_video, opts, PROMPT, start=12.0, end=20.0)
    assert job.plan.fits and (job.plan.start, job.plan.end, job.plan.frames) == (12.0, 20.0, 16)
    stats = job.ask(PROMPT).stats
    assert stats.prefill_tokens == job.plan.tokens, "the range was planned exactly"
    assert job.session.timestamps == [12.0 + i * 0.5 for i in range(16)]
    got = stamps(engine, job.session)  # the <t seconds> the model read
    # Each group's mean time, written to one decimal: 12.25 -> "12.2", ..., 19.75 -> "19.8".
    assert got == [float(f"{12.25 + i:.1f}") for i in range(8)] and len(got) == job.plan.groups
    assert all(12.0 <= t < 20.0 for t in got)
    assert job.summary().stats["range"] == {"start": 12.0, "end": 20.0}
    # Thumbnails of the frames read, at most one per MIN_THUMBNAIL_INTERVAL_S (2 s), inside the range.
    assert job.thumbnails.times == [12.0, 14.0, 16.0, 18.0]


def test_a_range_longer_than_the_context_is_split_inside_it(engine, long_video):
    opts = options(1024).replace(context={"reserve_tokens": 700})  # ~250 tokens a pass
    job = open_job(engine, long_video, opts, PROMPT, start=10.0, end=30.0)
    assert len(job.parts) >= 2
    assert job.parts[0].segment.start == 10.0 and job.parts[-1].segment.end == 30.0
    times = [f.t for part in job.parts for f in part.frames]
    assert times == [10.0 + i * 0.5 for i in range(40)]


def test_a_range_gets_only_the_speech_said_inside_it(engine, long_video, tmp_path):
    from qwen3vl_summarizer.errors import OptionsError

    lines = [(2.0, 4.0, "before the range"), (11.0, 13.0, "across the start"), (15.0, 16.0, "inside it"),
             (21.0, 22.0, "after the range")]  # fmt: skip
    subtitles = tmp_path / "talk.srt"
    subtitles.write_text("".join(
        f"{i}\n00:00:{a:06.3f} --> 00:00:{b:06.3f}\n{text}\n\n".replace(".", ",")
        for i, (a, b, text) in enumerate(lines, 1)
    ), encoding="utf-8")  # fmt: skip
    job = open_job(engine, long_video, options(8192), PROMPT, subtitle_file=subtitles, start=12.0, end=20.0)
    assert "across the start" in job.speech and "inside it" in job.speech
    assert "before the range" not in job.speech and "after the range" not in job.speech
    assert job.speech_tokens == engine.geometry().text_tokens(job.speech)
    whole = open_job(engine, long_video, options(8192), PROMPT, subtitle_file=subtitles)
    assert job.plan.prompt_tokens < whole.plan.prompt_tokens, "the plan counts the range's lines only"
    with pytest.raises(OptionsError, match="after the end of the video"):
        open_job(engine, long_video, options(8192), PROMPT, start=30.0, end=90.0)
