"""The plan: frame size, token arithmetic, segments, and its token count against the real engine."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from qwen3vl_summarizer.errors import ContextTooSmallError, OptionsError
from qwen3vl_summarizer.plan import Geometry, frame_size, group_times, make_plan
from qwen3vl_summarizer.video import VideoInfo, target_times

from .videos import write_video

FACTOR = 32  # pixels per language token side on Qwen3-VL (patch 16 x merge 2)
MIN_PIXELS, MAX_PIXELS = 256 * 256, 512 * 512  # make_plan's defaults


def info(width: int = 1920, height: int = 1080, duration: float = 60.0, fps: float = 30.0) -> VideoInfo:
    return VideoInfo(
        path="video.mp4",
        container="mov,mp4,m4a,3gp,3g2,mj2",
        codec="h264",
        width=width,
        height=height,
        rotation=0,
        fps=fps,
        duration=duration,
        start_time=0.0,
        frame_count=round(duration * fps),
        has_audio=False,
    )


# --- frame size ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [(1920, 1080), (1080, 1920), (640, 480), (3840, 2160), (720, 1280), (4000, 600), (1000, 1000)]
)
def test_frame_size_is_a_multiple_of_32_keeps_aspect_and_stays_within_pixels(size):
    width, height = size
    plan = make_plan(info(width, height, duration=30.0))
    w, h = plan.width, plan.height
    assert w % FACTOR == 0 and h % FACTOR == 0
    assert MIN_PIXELS <= w * h <= MAX_PIXELS
    # Each side is floored to 32 px from the same scale, so the aspect is kept to within one token.
    scale = w / width
    assert h == pytest.approx(height * scale, abs=FACTOR)
    assert w == pytest.approx(width * (h / height), abs=FACTOR)
    assert plan.fits and plan.tokens_per_group == (w // FACTOR) * (h // FACTOR)


@pytest.mark.parametrize("size", [(320, 240), (640, 360), (1280, 720), (128, 96), (100, 60), (240, 180)])
def test_frame_size_never_upscales_past_the_source(size):
    width, height = size
    plan = make_plan(info(width, height, duration=10.0), max_pixels=4096 * 4096)
    # At most the source with each side rounded up to whole 32-px tokens: only a source smaller than
    # min_pixels is rounded up (smallest_frame_size rounds up), by less than one token per side.
    assert (
        plan.width <= math.ceil(width / FACTOR) * FACTOR
        and plan.height <= math.ceil(height / FACTOR) * FACTOR
    )
    if width * height >= MIN_PIXELS:
        assert plan.width <= width and plan.height <= height
    assert make_plan(info(320, 240), max_pixels=1024 * 1024).width == 320
    assert frame_size(20, 20, MAX_PIXELS) == (32, 32)  # at least one token per side


def test_frame_size_shrinks_towards_min_pixels_to_fit_a_long_video():
    short = make_plan(info(duration=60.0), context=32_768)
    long = make_plan(info(duration=600.0), context=32_768)
    assert long.fits and long.width * long.height < short.width * short.height
    assert long.width * long.height >= MIN_PIXELS
    assert long.tokens + long.reserve <= long.context


# --- token arithmetic ------------------------------------------------------------------------------------


def test_token_count_by_hand():
    # 64x64 source -> 64x64 frames = 2x2 = 4 tokens per group. 12.0 s at 1 fps: targets 0..11, groups
    # at 0.5, 2.5, 4.5, 6.5, 8.5 ("<0.5 seconds>" = 6 tokens) and 10.5 (one more digit: 7 tokens).
    # Each group: 4 + <|vision_start|> + <|vision_end|> + timestamp.
    plan = make_plan(info(64, 64, duration=12.0), prompt="1234567")
    assert (plan.width, plan.height, plan.frames, plan.groups) == (64, 64, 12, 6)
    assert plan.tokens_per_group == 4
    assert plan.video_tokens == 6 * (4 + 2) + 5 * 6 + 7 == 73
    assert plan.prompt_tokens == 8 + math.ceil(7 / 3.5) == 10  # chat template + estimated prompt text
    assert plan.tokens == 83
    assert plan.kv_cache_bytes == (83 + 2048) * Geometry().kv_bytes_per_token
    assert plan.segments[0].tokens == plan.tokens


def test_odd_frame_count_repeats_the_last_frame_in_its_group():
    plan = make_plan(info(64, 64, duration=5.0))  # targets 0..4: groups (0,1) (2,3) (4,4)
    assert (plan.frames, plan.groups) == (5, 3)
    assert group_times(target_times(5.0, 1.0)) == [0.5, 2.5, 4.0]
    assert plan.video_tokens == 3 * (4 + 2 + 6)


def test_timestamp_tokens_gain_a_token_per_digit():
    g = Geometry()
    assert [g.timestamp_tokens(t) for t in (0.5, 9.9, 10.0, 99.5, 100.0, 3600.0)] == [6, 6, 7, 7, 8, 9]


# --- segments --------------------------------------------------------------------------------------------


def test_a_short_video_fits_in_one_segment():
    plan = make_plan(info(duration=600.0), fps=1.0, context=262_144)
    assert plan.fits and len(plan.segments) == 1
    seg = plan.segments[0]
    assert (seg.start, seg.end, seg.frames) == (0.0, 600.0, 600)
    assert "split" not in plan.summary()


def test_a_long_video_is_split_into_contiguous_segments_within_budget():
    duration = 3 * 3600.0
    plan = make_plan(info(1920, 1080, duration=duration), fps=1.0, context=262_144)
    assert not plan.fits and len(plan.segments) >= 2
    assert f"split into {len(plan.segments)} segments" in plan.summary()
    assert plan.segments[0].start == 0.0 and plan.segments[-1].end == duration
    for a, b in zip(plan.segments, plan.segments[1:], strict=False):
        assert a.end == b.start and b.index == a.index + 1
    assert sum(s.frames for s in plan.segments) == plan.frames == 10_800
    for s in plan.segments:
        assert s.tokens + plan.reserve <= plan.context
        assert s.frames % 2 == 0  # whole temporal groups
    assert max(s.frames for s in plan.segments) - min(s.frames for s in plan.segments) <= 2  # equal parts
    assert plan.width * plan.height >= MIN_PIXELS
    assert plan.context_share <= 1.0


def test_a_context_too_small_for_one_frame_group_is_an_error():
    with pytest.raises(ContextTooSmallError, match="raise the context length"):
        make_plan(info(duration=10 * 3600.0), context=2100)
    with pytest.raises(ContextTooSmallError):
        make_plan(info(duration=60.0), context=1024)  # less than the reserve


@pytest.mark.parametrize("fps", [0, -1, 30.5, 1000])
def test_fps_out_of_range_is_an_options_error(fps):
    with pytest.raises(OptionsError, match="fps"):
        make_plan(info(), fps=fps)


def test_too_short_to_sample_and_bad_pixels_are_options_errors():
    with pytest.raises(OptionsError, match="too short"):
        make_plan(info(duration=0.0))
    with pytest.raises(OptionsError, match="min_pixels"):
        make_plan(info(), min_pixels=MAX_PIXELS * 2)


def test_plans_a_ten_hour_video_quickly():
    # Pure arithmetic: a 10-hour video plans instantly, split or not. The page redraws the plan line on
    # every slider move, so planning must stay interactive: 0.15-0.2 s measured on a busy 2-core machine;
    # the bound leaves room for a slow CI run and still catches work that grows with frames times segments.
    for context in (262_144, 32_768):
        t0 = time.perf_counter()
        plan = make_plan(info(duration=10 * 3600.0), fps=1.0, context=context)
        elapsed = time.perf_counter() - t0
        assert plan.frames == 36_000 and sum(s.frames for s in plan.segments) == 36_000
        assert elapsed < 2.0, f"planning a 10-hour video took {elapsed:.2f} s"


# --- against the engine ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from qwen3vl_summarizer.loading import load_engine
    from qwen3vl_summarizer.options import ModelOptions

    return load_engine(ModelOptions(str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plan-videos")


PROMPT = "Summarize the video in Markdown, citing times as [MM:SS]. 用中文回答。"


@pytest.mark.parametrize(
    "name, size, times, fps",
    [
        # 12.4 s at 1 fps: 13 frames (odd), the last group's timestamps reach 10+ s (one more digit)
        ("cfr.mp4", (128, 96), [i / 10 for i in range(125)], 1.0),
        # portrait, variable frame rate, 2 fps: 5 frames (odd), frame times differ from the targets
        ("portrait.mkv", (96, 160), [0.0, 0.3, 0.7, 1.2, 1.25, 1.9, 2.3, 2.45], 2.0),
        # wide, 4 frames
        ("wide.mkv", (224, 64), [i / 5 for i in range(20)], 1.0),
    ],
)
def test_plan_tokens_equal_the_prompt_the_engine_builds(engine, folder, name, size, times, fps):
    from qwen3vl_summarizer.jobs import open_job
    from qwen3vl_summarizer.options import load_options

    path = folder / name
    write_video(path, times, size=size)
    options = load_options(
        overrides={
            "sampling": {"fps": fps},
            "context": {"max_context": 32_768},
            "generation": {"max_new_tokens": 1},
        }
    )
    job = open_job(engine, path, options, PROMPT)
    plan = make_plan(
        job.info,
        fps,
        32_768,
        reserve=options.context.reserve_tokens,
        prompt=PROMPT,
        min_pixels=options.sampling.min_pixels,
        max_pixels=options.sampling.max_pixels,
        geometry=engine.geometry(options.context),
    )
    assert plan == job.plan
    session = job.session
    assert job.ask(PROMPT).stats.prefill_tokens == plan.tokens
    built = session.media_tokens + len(session.turns[0].prompt_ids)
    assert len(session.ids) == built  # with max_new_tokens=1 no answer token is fed back
    assert plan.tokens == built
    assert plan.frames == session.frames_read
    assert plan.fits and plan.segments[0].frames == plan.frames


def test_a_video_needing_absurdly_many_segments_is_refused():
    # 10 hours at 30 fps in 16K contexts: thousands of passes; say so instead of planning them.
    with pytest.raises(ContextTooSmallError, match="segments"):
        make_plan(info(duration=10 * 3600.0), fps=30.0, context=16384)


# --- KV-cache dtype and device memory --------------------------------------------------------------------

GB, GIB = 10**9, 2**30


def test_kv_bytes_per_token_by_hand():
    from qwen3vl_summarizer.plan import QWEN3VL_2B_KV_BYTES_PER_TOKEN, QWEN3VL_2B_KV_SHAPE, kv_bytes_per_token

    # Qwen3-VL-2B: K and V x 28 layers x 8 KV heads x 128, at 2 bytes; float8: 1 byte + a 4-byte scale per
    # head and token.
    assert QWEN3VL_2B_KV_BYTES_PER_TOKEN == 2 * 28 * 8 * 128 * 2 == 112 * 1024
    assert kv_bytes_per_token(*QWEN3VL_2B_KV_SHAPE, "float8") == 2 * 28 * 8 * (128 + 4) == 59_136
    assert kv_bytes_per_token(*QWEN3VL_2B_KV_SHAPE, "float32") == 2 * QWEN3VL_2B_KV_BYTES_PER_TOKEN
    assert kv_bytes_per_token(4, 2, 16, "float8") == 320  # the tiny test model


def test_256k_tokens_fit_a_24gb_card_in_float8_but_not_in_bfloat16():
    from qwen3vl_summarizer.plan import QWEN3VL_2B_KV_SHAPE, kv_bytes_per_token, memory_plan

    def geometry(dtype):
        return Geometry(
            kv_bytes_per_token=kv_bytes_per_token(*QWEN3VL_2B_KV_SHAPE, dtype), kv_cache_dtype=dtype
        )

    weights = 2_127_532_032 * 2  # 4.26 GB
    headroom = 3 * GIB
    bf16 = memory_plan(262_144, geometry("bfloat16"), 24 * GB)
    assert bf16.kv_bytes == 262_144 * 114_688 == 28 * GIB
    assert bf16.total_bytes == weights + 28 * GIB + headroom == 37_541_060_608  # 34.96 GiB
    assert bf16.fits is False
    fp8 = memory_plan(262_144, geometry("float8"), 24 * GB)
    assert fp8.kv_bytes == 262_144 * 59_136 == 15_502_147_584  # 14.44 GiB
    assert fp8.total_bytes == weights + 15_502_147_584 + headroom == 22_978_437_120  # 21.40 GiB
    assert fp8.fits is True and fp8.total_bytes < 22 * GIB
    assert "21.40 GiB of 22.35 GiB: fits" in fp8.summary() and "does not fit" in bf16.summary()
    assert memory_plan(262_144, geometry("float8")).fits is None  # no device, no verdict
    assert "GiB:" not in memory_plan(262_144).summary()


def test_auto_kv_cache_dtype_quantizes_only_what_does_not_fit():
    from qwen3vl_summarizer.plan import QWEN3VL_2B_KV_SHAPE, choose_kv_cache_dtype, kv_budget_bytes

    shape = QWEN3VL_2B_KV_SHAPE
    card_24, card_80 = kv_budget_bytes(24 * GB), kv_budget_bytes(80 * GIB)
    assert choose_kv_cache_dtype("auto", "bfloat16", 262_144, shape, card_24) == "float8"
    assert choose_kv_cache_dtype("auto", "bfloat16", 131_072, shape, card_24) == "bfloat16"  # 14 GiB fits
    assert choose_kv_cache_dtype("auto", "bfloat16", 262_144, shape, card_80) == "bfloat16"
    assert choose_kv_cache_dtype("auto", "float32", 262_144, shape, None) == "float32"  # CPU: no limit known
    assert choose_kv_cache_dtype("bfloat16", "bfloat16", 262_144, shape, card_24) == "bfloat16"  # as asked
    assert choose_kv_cache_dtype("bfloat16", "float32", 8192, shape, None) == "float32"  # = not quantized
    assert choose_kv_cache_dtype("float8", "bfloat16", 8192, shape, card_80) == "float8"


def test_context_that_fits_rounds_down_and_stays_within_bounds():
    from qwen3vl_summarizer.plan import context_that_fits

    assert context_that_fits(100_000 * 1000 + 999, 1000, 262_144) == 99_328  # 100,000 rounded to 1,024s
    assert context_that_fits(10**12, 1000, 262_144) == 262_144
    assert context_that_fits(-5, 1000, 262_144) == 8192  # never below the minimum


@pytest.mark.parametrize(
    ("text", "size"),
    [("24GB", 24 * GB), ("24GiB", 24 * GIB), ("80G", 80 * GB), ("80 gib", 80 * GIB), ("1.5TB", 15 * 10**11),
     ("512MiB", 512 * 2**20), ("1000", 1000)],
)  # fmt: skip
def test_parse_size(text, size):
    from qwen3vl_summarizer.plan import parse_size

    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "24XB", "-1GB", "0", "24 G B"])
def test_parse_size_refuses_what_is_not_a_size(text):
    from qwen3vl_summarizer.plan import parse_size

    with pytest.raises(OptionsError, match="memory size"):
        parse_size(text)


def test_plan_counts_and_names_the_kv_cache_dtype():
    g = Geometry(kv_bytes_per_token=59_136, kv_cache_dtype="float8")
    plan = make_plan(info(duration=60.0), geometry=g)
    assert plan.kv_cache_dtype == "float8" and plan.kv_cache_bytes == (plan.tokens + 2048) * 59_136
    assert "in float8" in plan.summary()
    assert make_plan(info(duration=60.0)).kv_cache_dtype == "bfloat16"


# --- a time range ----------------------------------------------------------------------------------------


def test_a_range_plans_its_own_frames_and_tokens_on_the_videos_clock():
    # 1:00:00-1:10:00 of a 2-hour video at 1 fps: targets 3600..4199, 300 groups at 3600.5, 3602.5, ...
    plan = make_plan(info(64, 64, duration=7200.0), fps=1.0, start=3600, end=4200)
    assert (plan.start, plan.end, plan.frames, plan.groups) == (3600.0, 4200.0, 600, 300)
    stamps = group_times(target_times(7200.0, 1.0, 3600, 4200))
    assert stamps[0] == 3600.5 and stamps[-1] == 4198.5
    # Each group: 4 tokens + start/end markers + "<3600.5 seconds>" (9 tokens: one per digit).
    assert plan.video_tokens == 300 * (4 + 2 + 9)
    assert plan.tokens == plan.video_tokens + plan.prompt_tokens
    (segment,) = plan.segments
    assert (segment.start, segment.end, segment.frames) == (3600.0, 4200.0, 600)
    assert plan.summary().startswith("01:00:00–01:10:00: 600 frames")
    whole = make_plan(info(64, 64, duration=7200.0), fps=1.0)
    assert whole.frames == 7200 and not whole.is_range and plan.is_range


def test_a_range_too_long_for_the_context_is_split_inside_the_range():
    plan = make_plan(info(duration=7200.0), fps=1.0, context=32_768, start=1800.0, end=5400.0)
    assert not plan.fits and plan.frames == 3600
    assert plan.segments[0].start == 1800.0 and plan.segments[-1].end == 5400.0
    for a, b in zip(plan.segments, plan.segments[1:], strict=False):
        assert a.end == b.start
    assert sum(s.frames for s in plan.segments) == 3600
    assert all(s.tokens + plan.reserve <= plan.context for s in plan.segments)


def test_a_range_to_the_end_of_the_video_is_the_video_from_its_start():
    plan = make_plan(info(64, 64, duration=60.0), fps=1.0, start=30.0, end=60.4)  # within the rounding
    assert (plan.start, plan.end, plan.frames) == (30.0, None, 30)
    assert plan.segments[0].end == 60.0 and plan.summary().startswith("from 00:30: 30 frames")
    assert make_plan(info(64, 64, duration=60.0), start=0, end=None) == make_plan(info(64, 64, duration=60.0))


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (20.0, 10.0, "must end after it starts: 00:10 is not after 00:20"),
        (20.0, 20.0, "must end after it starts"),
        (60.0, None, "starts at 01:00, at or after the end of the video"),
        (0.0, 75.0, "ends at 01:15, after the end of the video \\(01:00\\)"),
        (-1.0, None, "start at a time >= 0"),
        (10.2, 10.6, "10–00:10 holds no frame at 1 fps"),
    ],
)
def test_a_range_the_video_cannot_hold_is_one_clear_error(start, end, message):
    with pytest.raises(OptionsError, match=message):
        make_plan(info(duration=60.0), fps=1.0, start=start, end=end)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [("90", "", (90.0, None)), ("1:30", "2:00", (90.0, 120.0)), ("01:00:00", "1:10:00", (3600.0, 4200.0)),
     ("", "  ", (0.0, None)), (None, "45.5", (0.0, 45.5)), ("1m30s", "100s", (90.0, 100.0)),
     ("1小时", "1小时10分", (3600.0, 4200.0)), ("第25分钟", "二十六分钟", (1500.0, 1560.0))],
)  # fmt: skip
def test_parse_range_reads_the_ways_people_write_times(start, end, expected):
    from qwen3vl_summarizer.plan import parse_range

    assert parse_range(start, end) == expected


def test_parse_range_names_the_field_that_is_not_a_time():
    from qwen3vl_summarizer.plan import parse_range

    with pytest.raises(OptionsError, match=r"^To: 'soon' is not a time; write seconds \(90\)"):
        parse_range("1:00", "soon", names=("From", "To"))
    with pytest.raises(OptionsError, match="^start: '1:75' is not a time"):
        parse_range("1:75", None)
