"""Tests of qwen3vl_summarizer.video on tiny videos made at test time (see tests/videos.py)."""

from __future__ import annotations

import logging
import math
import random
import re
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from qwen3vl_summarizer import video
from qwen3vl_summarizer.errors import (
    DamagedVideoError,
    NotAVideoError,
    NoVideoStreamError,
    OptionsError,
    UnsupportedCodecError,
    VideoNotFoundError,
)

from .videos import (
    ffmpeg,
    ffmpeg_can_encode,
    ffprobe_frame_times,
    have_ffmpeg,
    on_screen,
    read_index,
    write_video,
)

needs_ffmpeg = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe CLI not installed")
CFR_TIMES = [i / 10 for i in range(35)]  # 3.5 s at 10 fps
# The last frame lasts one period of the stream's nominal rate (write_video's 30 fps), as a player shows it
CFR_DURATION = CFR_TIMES[-1] + 1 / 30


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def bframes_mp4(folder) -> Path:
    path = folder / "bframes.mp4"
    write_video(path, CFR_TIMES, options={"bframes": "3", "b-pyramid": "normal", "g": "12"})
    return path


def vfr_times(count: int, seed: int) -> list[float]:
    """Frame times (s) with gaps from 20 ms to 0.7 s, as a phone or a screen recorder writes them."""
    rng = random.Random(seed)
    times, t = [], 0.0
    for _ in range(count):
        times.append(round(t, 3))
        t += rng.choice([0.02, 0.033, 0.05, 0.1, 0.3, 0.7])
    return times


@pytest.fixture(scope="module")
def vfr_mkv(folder) -> tuple[Path, list[float]]:
    times = vfr_times(60, seed=7)
    path = folder / "vfr.mkv"
    stored = write_video(path, times, options={"bframes": "2", "g": "15"})
    return path, stored


def check_exact(frames: video.FrameStream, times: list[float]) -> list[video.Frame]:
    """Every frame is the one on screen at its target, by time and by picture."""
    out = list(frames)
    assert frames.damage is None
    targets = video.target_times(frames.info.duration, frames.fps, frames.start, frames.end)
    assert [f.target for f in out] == targets
    for f in out:
        assert f.t == pytest.approx(on_screen(times, f.target), abs=1e-6), f
        assert times[read_index(f.image)] == pytest.approx(f.t, abs=1e-6), f
        assert f.image.dtype == np.uint8 and f.image.shape == (frames.size[1], frames.size[0], 3)
    return out


# --- target_times ----------------------------------------------------------------------------------------


def test_target_times_counts_the_last_partial_second():
    assert video.target_times(10.5, 1.0) == [float(k) for k in range(11)]
    assert video.target_times(10.0, 1.0) == [float(k) for k in range(10)]
    assert video.target_times(10.0, 3.0)[-1] == pytest.approx(29 / 3)
    assert len(video.target_times(10.0, 3.0)) == 30
    assert len(video.target_times(10.0, 0.3)) == 3  # 0, 3.33, 6.67; 10.0 is not inside


def test_target_times_respects_start_and_end():
    assert video.target_times(10.0, 1.0, start=2.5, end=5.0) == [3.0, 4.0]
    assert video.target_times(10.0, 1.0, start=3.0, end=5.0) == [3.0, 4.0]
    assert video.target_times(10.0, 2.0, start=9.0, end=99.0) == [9.0, 9.5]
    assert video.target_times(10.0, 1.0, start=10.0) == []
    assert video.target_times(0.0, 1.0) == []
    assert video.target_times(0.01, 30.0) == [0.0]


def test_target_times_is_float_exact_at_boundaries():
    for fps in (0.1, 0.3, 1 / 3, 7.0, 29.97, 30.0):
        duration = 12.0
        targets = video.target_times(duration, fps)
        assert targets == sorted(targets) and all(0 <= t < duration for t in targets)
        assert len(targets) == math.ceil(duration * fps - 1e-9)


# --- timing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", video.STRATEGIES)
@pytest.mark.parametrize("fps", [1.0, 3.0, 30.0])
def test_constant_rate_with_bframes_is_exact(bframes_mp4, strategy, fps):
    frames = video.sample(bframes_mp4, fps=fps, strategy=strategy)
    out = check_exact(frames, CFR_TIMES)
    assert frames.info.duration == pytest.approx(CFR_DURATION, abs=1e-3)
    assert len(out) == math.ceil(CFR_DURATION * fps - 1e-9)  # the last partial period counts


def test_fps_above_source_rate_repeats_frames(bframes_mp4):
    out = list(video.sample(bframes_mp4, fps=30.0))
    assert len({f.t for f in out}) == len(CFR_TIMES)
    assert len(out) > len(CFR_TIMES)


@pytest.mark.parametrize("strategy", video.STRATEGIES)
@pytest.mark.parametrize("fps", [1.0, 2.5, 7.0, 30.0])
def test_variable_frame_rate_is_exact(vfr_mkv, strategy, fps):
    path, times = vfr_mkv
    check_exact(video.sample(path, fps=fps, size=(64, 48), strategy=strategy), times)


def test_start_and_end_select_the_window(vfr_mkv):
    path, times = vfr_mkv
    frames = video.sample(path, fps=2.0, start=1.2, end=4.0)
    out = check_exact(frames, times)
    assert out[0].target == 1.5 and out[-1].target == 3.5


def test_last_partial_second_gets_the_last_frame(folder):
    path = folder / "partial.mp4"
    times = write_video(path, [i / 4 for i in range(14)])  # last frame at 3.25 s
    out = check_exact(video.sample(path, fps=1.0), times)
    assert [f.t for f in out] == [0.0, 1.0, 2.0, 3.0]


def test_first_frame_after_zero_answers_the_early_targets(folder):
    path = folder / "late.mkv"
    times = write_video(path, [1.5 + i / 5 for i in range(10)])
    info = video.probe(path)
    truth, start = ffprobe_frame_times(path) if have_ffmpeg() else ([t - 1.5 for t in times], 1.5)
    assert info.start_time == pytest.approx(start)
    check_exact(video.sample(path, fps=2.0), truth)


@needs_ffmpeg
@pytest.mark.parametrize(
    "name,args",
    [
        ("offset.mkv", ["-output_ts_offset", "5"]),
        ("offset.mp4", ["-output_ts_offset", "5"]),
        ("starts_at_1.4.ts", []),
    ],
)
def test_start_time_offsets_match_ffprobe(folder, bframes_mp4, name, args):
    path = folder / name
    ffmpeg("-i", str(bframes_mp4), "-c", "copy", *args, str(path))
    truth, start = ffprobe_frame_times(path)
    info = video.probe(path)
    assert info.start_time == pytest.approx(start, abs=1e-6)
    for strategy in ("auto", "decode"):
        out = list(video.sample(path, fps=3.0, strategy=strategy))
        assert len(out) == len(video.target_times(info.duration, 3.0))
        for f in out:
            assert f.t == pytest.approx(on_screen(truth, f.target), abs=1e-6)
            assert truth[read_index(f.image)] == pytest.approx(f.t, abs=1e-6)


# --- rotation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_comes_out_upright(folder, rotation):
    path = folder / f"rot{rotation}.mp4"
    upright = (64, 96)  # portrait, as a phone shows it
    times = write_video(path, [i / 5 for i in range(10)], size=upright, rotation=rotation)
    info = video.probe(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == upright
    out = check_exact(video.sample(path, fps=2.0), times)
    assert out[0].image.shape == (96, 64, 3)
    scaled = check_exact(video.sample(path, fps=1.0, size=(32, 48)), times)
    assert scaled[0].image.shape == (48, 32, 3)


@needs_ffmpeg
def test_rotation_matches_ffmpeg_autorotate(folder):
    landscape = folder / "landscape.mp4"
    times = write_video(landscape, [i / 5 for i in range(10)], size=(96, 64))
    tagged = folder / "tagged.mp4"
    ffmpeg("-i", str(landscape), "-c", "copy", "-metadata:s:v", "rotate=90", str(tagged))
    # ffmpeg 5.1 stores rotate=90 as a counter-clockwise display matrix: players turn it 270 clockwise
    info = video.probe(tagged)
    assert (info.rotation, info.width, info.height) == (270, 64, 96)
    out = list(video.sample(tagged, fps=1.0))
    oracle = folder / "tagged.rgb"
    ffmpeg(
        "-i",
        str(tagged),
        "-vf",
        "select=eq(n\\,5)",
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        str(oracle),
    )
    expected = np.frombuffer(oracle.read_bytes(), np.uint8).reshape(96, 64, 3)  # ffmpeg's upright frame
    assert np.abs(out[1].image.astype(int) - expected).mean() < 8
    drawn = np.ascontiguousarray(np.rot90(out[1].image, k=-1))  # back to the drawn landscape picture
    assert times[read_index(drawn)] == out[1].t


# --- containers and codecs -------------------------------------------------------------------------------

CASES = [
    ("mp4", "libx264", {"bframes": "2"}),
    ("mkv", "libx264", {"bframes": "2"}),
    ("mov", "libx264", {}),
    ("ts", "libx264", {"bframes": "2"}),
    ("avi", "mpeg4", {}),
    ("mp4", "libx265", {"x265-params": "log-level=error:bframes=2"}),
    ("mkv", "libx265", {"x265-params": "log-level=error"}),
    ("webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
    ("mkv", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
    ("mp4", "libsvtav1", {"preset": "10", "crf": "20", "g": "8"}),
    ("webm", "libsvtav1", {"preset": "10", "crf": "20", "g": "8"}),
    ("mkv", "libaom-av1", {"cpu-used": "8"}),
]


@pytest.mark.parametrize("ext,codec,options", CASES, ids=[f"{c}.{e}" for e, c, _ in CASES])
def test_containers_and_codecs(folder, ext, codec, options):
    if codec not in av.codecs_available:
        if not ffmpeg_can_encode(codec):
            pytest.skip(f"neither PyAV's FFmpeg nor the ffmpeg CLI can encode {codec}")
        source = folder / f"src_{codec}.mkv"
        write_video(source, [i / 8 for i in range(20)], size=(128, 96))
        path = folder / f"cli_{codec}.{ext}"
        ffmpeg(
            "-i",
            str(source),
            "-c:v",
            codec,
            *[x for k, v in options.items() for x in (f"-{k}", v)],
            str(path),
        )
        truth, _ = ffprobe_frame_times(path)
    else:
        path = folder / f"{codec}.{ext}"
        write_video(path, [i / 8 for i in range(20)], codec=codec, options=options, size=(128, 96))
        truth = ffprobe_frame_times(path)[0] if have_ffmpeg() else [i / 8 for i in range(20)]
    info = video.probe(path)
    assert (info.width, info.height) == (128, 96)
    out = list(video.sample(path, fps=2.0, size=(64, 48)))
    assert len(out) == len(video.target_times(info.duration, 2.0)) >= 4
    for f in out:
        assert f.t == pytest.approx(on_screen(truth, f.target), abs=2e-3)
        assert truth[read_index(f.image)] == pytest.approx(f.t, abs=2e-3)


def test_probe_describes_the_file(folder):
    path = folder / "with_audio.mp4"
    write_video(path, [i / 10 for i in range(20)], audio_seconds=2.0)
    info = video.probe(path)
    assert info.container.startswith("mov,mp4")
    assert info.codec == "h264"
    assert info.has_audio and info.frame_count == 20 and info.rotation == 0
    assert info.duration == pytest.approx(2.0, abs=0.15)
    assert info.path == str(path)


# --- bad input -------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(VideoNotFoundError, match="not found"):
        video.sample(tmp_path / "nope.mp4")


def test_folder(tmp_path):
    with pytest.raises(VideoNotFoundError, match="folder"):
        video.probe(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(NotAVideoError, match="empty"):
        video.sample(tmp_path / "empty.mp4")


def test_text_file_with_video_extension(tmp_path):
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 50)
    with pytest.raises(NotAVideoError, match="not a video"):
        video.sample(tmp_path / "notes.mp4")


def test_audio_only(tmp_path):
    path = tmp_path / "song.mka"
    with av.open(str(path), "w") as out:
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        samples = np.zeros((1, 1024), np.float32)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        video.sample(path)


def test_unsupported_codec(folder, tmp_path):
    source = folder / "mpeg4.avi"
    write_video(source, [i / 8 for i in range(8)], codec="mpeg4")
    path = tmp_path / "unknown.avi"
    path.write_bytes(source.read_bytes().replace(b"FMP4", b"QZQZ"))  # a fourcc no decoder knows
    with pytest.raises(UnsupportedCodecError, match="codec"):
        video.sample(path)


def test_one_line_messages(tmp_path):
    (tmp_path / "notes.mkv").write_text("hello")
    for call in (lambda: video.probe(tmp_path / "x.mp4"), lambda: video.probe(tmp_path / "notes.mkv")):
        with pytest.raises(video.DamagedVideoError.__mro__[1]) as err:
            call()
        assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_truncated_file_keeps_the_frames_before_the_damage(folder, tmp_path, caplog):
    source = folder / "long.mkv"
    times = write_video(source, [i / 10 for i in range(100)], options={"g": "10"})
    data = source.read_bytes()
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="qwen3vl_summarizer.video"):
        frames = video.sample(path, fps=2.0)
        out = list(frames)
    assert frames.damage is not None and "damaged" in frames.damage and "\n" not in frames.damage
    assert 2 <= len(out) < len(video.target_times(frames.info.duration, 2.0))
    reached = float(re.search(r"frames stop at ([0-9.]+) s", frames.damage).group(1))
    assert out[-1].t <= reached < out[-1].target + 1.0
    for f in out:
        assert times[read_index(f.image)] == pytest.approx(f.t)
    assert any("damaged" in r.message for r in caplog.records)


def test_truncated_mp4_without_index(folder, tmp_path):
    source = folder / "plain.mp4"
    write_video(source, CFR_TIMES)
    data = source.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")  # the index is written last, so a cut loses it
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedVideoError, match="truncated"):
        video.sample(path)


def test_no_frame_decodable_raises(folder, tmp_path):
    source = folder / "long.mkv"
    if not source.exists():
        write_video(source, [i / 10 for i in range(100)], options={"g": "10"})
    data = bytearray(source.read_bytes())
    cluster = data.find(b"\x1f\x43\xb6\x75")  # first Matroska cluster: keep the header, garble the rest
    path = tmp_path / "garbled.mkv"
    path.write_bytes(bytes(data[: cluster + 64]))
    with pytest.raises(DamagedVideoError):
        video.sample(path)


@pytest.mark.parametrize("fps", [0, -1, 30.5, float("nan"), float("inf"), "1", True])
def test_fps_out_of_range(bframes_mp4, fps):
    with pytest.raises(OptionsError, match="fps"):
        video.sample(bframes_mp4, fps=fps)


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"size": (0, 10)}, "size"),
        ({"size": (10,)}, "size"),
        ({"start": -1.0}, "start"),
        ({"start": 2.0, "end": 1.0}, "end"),
        ({"strategy": "fastest"}, "strategy"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
    ],
)
def test_other_options_are_checked(bframes_mp4, kwargs, word):
    with pytest.raises(OptionsError, match=word):
        video.sample(bframes_mp4, **kwargs)


def test_validation_is_eager_and_iteration_is_lazy(bframes_mp4, tmp_path):
    with pytest.raises(VideoNotFoundError):
        video.sample(tmp_path / "missing.mkv")  # not iterated
    frames = video.sample(bframes_mp4, fps=MAX_FPS_HALF)
    first = next(iter(frames))
    assert first.t == 0.0
    assert len(list(frames)) == len(list(frames))  # each iteration decodes again


MAX_FPS_HALF = video.MAX_FPS / 2


def test_strategies_agree_on_sparse_and_dense_keyframes(folder):
    times = [i / 30 for i in range(150)]
    for keyint in ("5", "250"):
        path = folder / f"g{keyint}.mp4"
        write_video(path, times, options={"g": keyint, "bframes": "3"}, time_base=Fraction(1, 15360))
        results = {}
        for strategy in video.STRATEGIES:
            out = check_exact(video.sample(path, fps=0.7, size=(64, 48), strategy=strategy), times)
            results[strategy] = [(f.t, read_index(f.image)) for f in out]
        assert len({tuple(r) for r in results.values()}) == 1


# --- parallel chunks (auto) ------------------------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch) -> list[list[range]]:
    """Cut even these few-second videos into chunks; returns the chunk lists of the parallel passes run."""
    monkeypatch.setattr(video, "CHUNK_S", 0.3)
    passes: list[list[range]] = []
    parallel = video._parallel

    def spy(out, chunks, workers):
        passes.append(chunks)
        yield from parallel(out, chunks, workers)

    monkeypatch.setattr(video, "_parallel", spy)
    return passes


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("video-sampler-")]


def single_and_parallel(path: Path, passes: list, **kwargs) -> tuple[list, video.FrameStream]:
    """Sample on one pass and on three workers; asserts both give the same frames, returns the latter."""
    single = list(video.sample(path, workers=1, **kwargs))
    assert passes == []
    stream = video.sample(path, workers=3, **kwargs)
    parallel = list(stream)
    assert len(passes) == 1 and len(passes[0]) > 1, passes
    ks = [k for chunk in passes[0] for k in chunk]
    assert ks == list(range(ks[0], ks[0] + len(ks)))  # the targets, each once, in order
    assert [(f.t, f.target) for f in parallel] == [(f.t, f.target) for f in single]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(parallel, single, strict=True))
    assert sampler_threads() == []
    return parallel, stream


PARALLEL_CASES = [
    ("g12_bframes.mp4", "libx264", {"bframes": "3", "b-pyramid": "normal", "g": "12"}),
    ("g25_bframes.mp4", "libx264", {"bframes": "3", "g": "25", "sc_threshold": "0"}),
    ("g8.mkv", "libx264", {"bframes": "2", "g": "8"}),
    ("g8.avi", "mpeg4", {"g": "8"}),
    ("hevc_g8.mp4", "libx265", {"x265-params": "log-level=error:keyint=8:bframes=3"}),
    ("vp9_g8.webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "g": "8"}),
]


@pytest.mark.parametrize("name,codec,options", PARALLEL_CASES, ids=[c[0] for c in PARALLEL_CASES])
def test_parallel_chunks_equal_one_pass(folder, small_chunks, name, codec, options):
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV's FFmpeg cannot encode {codec}")
    path = folder / f"par_{name}"
    times = [i / 10 for i in range(62)]
    if not path.exists():
        times = write_video(path, times, codec=codec, options=options, size=(64, 48))
    for fps in (1.0, 3.0, 10.0):
        parallel, stream = single_and_parallel(path, small_chunks, fps=fps)
        small_chunks.clear()
        assert [f.target for f in parallel] == video.target_times(stream.info.duration, fps)
        for f in parallel:
            assert f.t == pytest.approx(on_screen(times, f.target), abs=1e-3), f
            assert times[read_index(f.image)] == pytest.approx(f.t, abs=1e-3), f


def test_parallel_chunks_with_variable_frame_rate_and_a_window(folder, small_chunks):
    path = folder / "par_vfr.mp4"
    times = write_video(path, vfr_times(90, seed=11), options={"bframes": "2", "g": "15"}, size=(64, 48))
    end = times[-1] - 2.0
    parallel, stream = single_and_parallel(path, small_chunks, fps=2.0, start=1.3, end=end)
    assert [f.target for f in parallel] == video.target_times(stream.info.duration, 2.0, 1.3, end)
    for f in parallel:
        assert f.t == pytest.approx(on_screen(times, f.target), abs=1e-6), f
        assert times[read_index(f.image)] == pytest.approx(f.t, abs=1e-6), f


@needs_ffmpeg
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_parallel_chunks_with_open_gops(folder, small_chunks, ext):
    """Leading B-frames of an open GOP reference the GOP before; a chunk must not start among them."""
    source = folder / "par_source.mkv"
    times = write_video(source, [i / 10 for i in range(80)], size=(64, 48))
    path = folder / f"par_open_gop.{ext}"
    ffmpeg(
        "-i", str(source), "-c:v", "libx264", "-x264-params", "open-gop=1:keyint=9:min-keyint=9:bframes=3",
        "-an", str(path),
    )  # fmt: skip
    truth, _ = ffprobe_frame_times(path)
    parallel, _ = single_and_parallel(path, small_chunks, fps=10.0)
    for f in parallel:
        assert f.t == pytest.approx(on_screen(truth, f.target), abs=1e-3), f
        assert times[read_index(f.image)] == pytest.approx(f.t, abs=1e-3), f


@pytest.mark.parametrize("ahead_frames", [0, 20])
def test_parallel_read_ahead_is_bounded_for_a_slow_reader(folder, small_chunks, monkeypatch, ahead_frames):
    """The workers begin chunks ahead of a reader that dawdles only up to READ_AHEAD_BYTES of frames, and
    never fewer than two chunks a worker (0: that floor; 20 frames: the byte bound, above the floor)."""
    path = folder / "par_ahead.mp4"
    write_video(path, [i / 10 for i in range(100)], options={"g": "5"}, size=(64, 48))
    monkeypatch.setattr(video, "READ_AHEAD_BYTES", ahead_frames * 64 * 48 * 3)
    begun = []
    sampler = video._Sampler
    workers = 3
    refused: set[str] = set()  # the sampler threads the read-ahead bound turned away
    all_refused = threading.Event()

    def counted(out, ks, stop=None):
        begun.append(ks)
        return sampler(out, ks, stop)

    class Bound(threading.Semaphore):
        """The read-ahead bound, as it is, noting each sampler thread it turns away."""

        def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
            got = super().acquire(blocking, timeout)
            name = threading.current_thread().name
            if not got and name.startswith("video-sampler-"):
                refused.add(name)
                if len(refused) == workers:
                    all_refused.set()
            return got

    monkeypatch.setattr(video, "_Sampler", counted)
    monkeypatch.setattr(video.threading, "Semaphore", Bound)
    frames = iter(video.sample(path, fps=2.0, workers=workers))
    next(frames)  # the reader takes one frame, then dawdles while the workers run on
    # Nothing is released while the reader dawdles, so a thread turned away has begun all it will begin,
    # and once every worker has been turned away the count of chunks begun is final. (Without a bound
    # no worker is ever turned away: the wait times out.)
    assert all_refused.wait(timeout=30), f"the workers never met the read-ahead bound: {len(begun)} begun"
    assert len(small_chunks) == 1 and len(small_chunks[0]) > 10
    longest = max(len(chunk) for chunk in small_chunks[0])  # frames a begun chunk holds at most
    assert len(begun) == max(2 * 3, ahead_frames // longest)  # chunks begun ahead, not all of them
    rest = list(frames)
    assert len(begun) == len(small_chunks[0]) and 1 + len(rest) == 20


@needs_ffmpeg
def test_without_a_keyframe_index_one_pass_is_used(folder, small_chunks):
    path = folder / "par_noindex.ts"
    write_video(path, [i / 10 for i in range(40)], options={"g": "5"}, size=(64, 48))
    with av.open(str(path)) as container:
        assert len(container.streams.video[0].index_entries) == 0
    truth, _ = ffprobe_frame_times(path)
    check_exact(video.sample(path, fps=2.0, workers=3), truth)
    assert small_chunks == []


@needs_ffmpeg
def test_parallel_pass_keeps_the_frames_before_the_damage(folder, tmp_path, small_chunks):
    source = folder / "par_long.mp4"
    times = write_video(source, [i / 10 for i in range(100)], options={"g": "10"}, size=(64, 48))
    indexed = tmp_path / "faststart.mp4"
    ffmpeg("-i", str(source), "-c", "copy", "-movflags", "+faststart", str(indexed))
    data = indexed.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])  # the index survives and lists the frames past the cut

    single = video.sample(path, fps=2.0, workers=1)
    expected = list(single)
    assert single.damage is not None and 2 <= len(expected) < len(
        video.target_times(single.info.duration, 2.0)
    )
    stream = video.sample(path, fps=2.0, workers=3)
    out = list(stream)
    assert len(small_chunks) == 1 and len(small_chunks[0]) > 1
    assert stream.damage is not None and "frames stop at" in stream.damage
    # Where a truncated packet ends the frames depends on the decoder's threads, by a frame or so
    assert abs(len(out) - len(expected)) <= 1
    n = min(len(out), len(expected))
    assert [(f.t, f.target) for f in out[:n]] == [(f.t, f.target) for f in expected[:n]]
    for f in out:
        assert times[read_index(f.image)] == pytest.approx(f.t)
    assert sampler_threads() == []


def test_closing_a_parallel_pass_early_stops_its_workers(folder, small_chunks):
    path = folder / "par_close.mp4"
    write_video(path, [i / 10 for i in range(60)], options={"g": "5"}, size=(64, 48))
    frames = iter(video.sample(path, fps=10.0, workers=2))
    next(frames)
    next(frames)
    assert len(sampler_threads()) == 2
    frames.close()
    assert sampler_threads() == []


def test_an_error_in_a_worker_reaches_the_reader_in_order(folder, small_chunks, monkeypatch):
    path = folder / "par_error.mp4"
    times = write_video(path, [i / 10 for i in range(60)], options={"g": "5"}, size=(64, 48))
    image = video._Sampler._image

    def broken(self, frame):
        if self.ks.start > 0:
            raise RuntimeError("boom")
        return image(self, frame)

    monkeypatch.setattr(video._Sampler, "_image", broken)
    got = []
    with pytest.raises(RuntimeError, match="boom"):
        for f in video.sample(path, fps=2.0, workers=2):
            got.append(f)
    first_chunk = small_chunks[0][0]
    assert [f.target for f in got] == [k / 2.0 for k in first_chunk]
    assert all(times[read_index(f.image)] == f.t for f in got)
    assert sampler_threads() == []


def test_video_extensions_cover_what_pyav_reads_and_not_sound():
    extensions = video.video_extensions()
    assert {".mp4", ".mkv", ".webm", ".mov", ".avi", ".ts", ".m2ts", ".mts", ".flv", ".wmv"} <= set(
        extensions
    )
    assert not {".m4a", ".mka", ".wma", ".txt", ".srt"} & set(extensions)
