"""The command line, run in-process (``main([...])``) and once as ``python -m qwen3vl_summarizer``."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from qwen3vl_summarizer import cli
from qwen3vl_summarizer.errors import VideoNotFoundError
from qwen3vl_summarizer.video import target_times

from .videos import on_screen, write_video

REPO = Path(__file__).resolve().parent.parent
# Variable frame rate: frame times that differ from the 2 fps targets, so `t` must be the frame on screen.
VFR_TIMES = [0.0, 0.3, 0.7, 1.2, 1.25, 2.6, 3.1, 3.9, 4.0, 4.45, 5.3]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-videos")


@pytest.fixture(scope="module")
def vfr(folder) -> tuple[Path, list[float]]:
    path = folder / "vfr.mkv"
    return path, write_video(path, VFR_TIMES, size=(160, 96), options={"bframes": "2", "g": "4"})


@pytest.fixture(scope="module")
def short(folder) -> Path:
    path = folder / "short.mp4"
    write_video(path, [i / 5 for i in range(20)])  # 4 s, 128x96
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, out: str, err: str, *words: str) -> None:
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


# --- plan ------------------------------------------------------------------------------------------------


def test_plan_prints_the_probe_and_the_plan(capsys, short):
    code, out, err = run(capsys, "plan", short)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    assert "128x96" in lines[0] and "h264" in lines[0] and "fps" in lines[0]
    assert "4 frames at 128x96" in lines[1] and "262,144" in lines[1]  # auto context = the cap


def test_plan_json_matches_the_library(capsys, short):
    from qwen3vl_summarizer.options import load_options
    from qwen3vl_summarizer.plan import plan_video
    from qwen3vl_summarizer.prompts import load_prompt
    from qwen3vl_summarizer.video import probe

    code, out, _ = run(capsys, "plan", short, "--fps", "2", "--max-context", "8192", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["video"]["width"] == 128 and data["video"]["codec"] == "h264"
    assert data["plan"]["context"] == 8192 and data["plan"]["frames"] == 8 and data["plan"]["fits"]
    options = load_options(overrides={"sampling": {"fps": 2.0}})
    expected = plan_video(probe(short), options, 8192, prompt=load_prompt(cli.DEFAULT_PROMPT).text)
    assert {k: v for k, v in data["plan"].items() if k not in ("fits", "context_share")} == json.loads(
        json.dumps(dataclasses.asdict(expected))
    )


def test_plan_lists_segments_when_the_video_does_not_fit(capsys, folder):
    path = folder / "long.mkv"
    write_video(path, [0.0, 299.0, 600.0])  # 10 minutes, three frames
    code, out, _ = run(capsys, "plan", path, "--fps", "4", "--max-context", "16384")
    assert code == 0
    assert "split into" in out and "segment 1: 00:00-" in out


def test_entry_point_runs_as_a_module(short):
    result = subprocess.run(
        [sys.executable, "-m", "qwen3vl_summarizer", "plan", str(short), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plan"]["frames"] == 4


# --- frames ----------------------------------------------------------------------------------------------


def test_frames_json_gives_the_frame_on_screen_at_each_target(capsys, vfr, tmp_path):
    path, times = vfr
    out_dir = tmp_path / "frames"
    code, out, err = run(capsys, "frames", path, "--fps", "2", "--json", "--out", out_dir)
    assert code == 0 and "warning" not in err
    data = json.loads(out)
    assert data["width"] == 160 and data["height"] == 96
    assert data["duration"] == pytest.approx(times[-1], abs=0.5)
    frames = data["frames"]
    assert [f["target"] for f in frames] == target_times(data["duration"], 2.0)
    for f in frames:
        assert isinstance(f["t"], float)
        assert f["t"] == pytest.approx(on_screen(times, f["target"]), abs=1e-3)
    # One JPEG per frame, named by time, at the planned size.
    files = sorted(out_dir.iterdir())
    assert len(files) == len(frames) == len({f["file"] for f in frames})
    assert all(p.suffix == ".jpg" for p in files)
    assert (out_dir / "000001.250.jpg").exists()  # 1.25 s is on screen at 1.5 s, 2.0 s and 2.5 s
    with Image.open(files[0]) as image:
        assert image.size == (160, 96)


def test_frames_text_lists_one_line_per_frame(capsys, vfr):
    path, _ = vfr
    code, out, _ = run(capsys, "frames", path, "--fps", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[-1].startswith(f"{len(lines) - 1} frames at 160x96")
    assert "target 1.000 s" in lines[1] and lines[1].split()[0] == "0.700"


def test_frames_warns_about_a_damaged_file(capsys, folder, tmp_path):
    source = folder / "long10.mkv"
    write_video(source, [i / 10 for i in range(100)], options={"g": "10"})
    data = source.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    code, out, err = run(capsys, "frames", cut, "--fps", "2", "--json")
    assert code == 0
    assert json.loads(out)["damage"]
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "damaged" in warnings[0]


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["plan", "frames", "summarize"])
def test_missing_file_is_one_error_line(capsys, tmp_path, command):
    assert_one_error_line(*run(capsys, command, tmp_path / "nope.mp4"), "not found")


def test_not_a_video_is_one_error_line(capsys, tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello")
    assert_one_error_line(*run(capsys, "plan", path), "notes.mp4")


@pytest.mark.parametrize("fps", ["0", "31", "-1"])
def test_bad_fps_is_one_error_line(capsys, short, fps):
    assert_one_error_line(*run(capsys, "plan", short, "--fps", fps), "fps")


def test_unknown_prompt_is_one_error_line(capsys, short, tmp_path):
    assert_one_error_line(*run(capsys, "summarize", short, "--prompt", "nope"), "unknown prompt")
    assert_one_error_line(*run(capsys, "summarize", short, "--prompt-file", tmp_path / "p.md"), "p.md")
    assert_one_error_line(*run(capsys, "summarize", short, "--prompt-text", " "), "empty")


def test_bad_config_is_one_error_line(capsys, short, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[sampling]\nfsp = 2\n")
    assert_one_error_line(*run(capsys, "--config", config, "plan", short), "sampling.fsp")
    assert_one_error_line(*run(capsys, "plan", short, "--config", tmp_path / "none.toml"), "config")


def test_usage_errors_exit_2(capsys, short):
    for argv in (
        ["plan", short, "--fps", "abc"],
        ["plan"],
        [],
        ["plan", short, "--max-context", "lots"],
        ["summarize", short, "--prompt", "general", "--prompt-text", "hi"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(a) for a in argv])
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_prefill_chunk_size_flag_takes_auto_or_a_count(short):
    parser = cli.build_parser()
    for given, wanted in (("auto", "auto"), ("AUTO", "auto"), ("4096", 4096)):
        args = parser.parse_args(["summarize", str(short), "--prefill-chunk-size", given])
        assert cli._options(args).context.prefill_chunk_size == wanted
    with pytest.raises(SystemExit):
        parser.parse_args(["summarize", str(short), "--prefill-chunk-size", "big"])


def test_debug_shows_the_exception(capsys, tmp_path):
    with pytest.raises(VideoNotFoundError):
        cli.main(["plan", str(tmp_path / "nope.mp4"), "--debug"])


def test_ctrl_c_exits_130(capsys, monkeypatch, short):
    def interrupted(args, options):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "plan", interrupted)
    code, out, err = run(capsys, "plan", short)
    assert code == 130 and err.strip() == "interrupted"


# --- summarize on the tiny model -------------------------------------------------------------------------


def summarize(capsys, model: Path, video: Path, *extra: str) -> tuple[int, str, str]:
    return run(
        capsys, "summarize", video, "--model", model, "--device", "cpu", "--dtype", "float32",
        "--max-new-tokens", "5", "--ask", "q1", "--ask", "q2", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cached_run(tiny_model_dir, short):
    """The --json output with cache reuse, computed once (capsys is per test, so redirect here)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([
            "summarize", str(short), "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32",
            "--max-new-tokens", "5", "--ask", "q1", "--ask", "q2", "--json",
        ])  # fmt: skip
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue()), err.getvalue()


def test_summarize_json_has_every_turn(cached_run):
    data, err = cached_run
    assert "prefill" not in err  # no progress when stderr is not a terminal
    turns = data["turns"]
    assert [t["question"] for t in turns[1:]] == ["q1", "q2"]
    for t in turns:
        assert set(t) >= {"question", "text", "tokens", "prefill_tokens", "ttft_s", "decode_tokens_per_s"}
        assert 1 <= len(t["tokens"]) <= 5 and all(isinstance(i, int) for i in t["tokens"])
        assert t["ttft_s"] > 0 and t["decode_tokens_per_s"] >= 0
    first, *follow_ups = turns
    assert first["prefill_tokens"] == data["plan"]["tokens"]  # the whole prompt, as planned
    for t in follow_ups:
        assert t["prefill_tokens"] < first["prefill_tokens"] / 4  # only the question is computed


def test_no_cache_reuse_gives_the_same_tokens_with_more_prefill(capsys, tiny_model_dir, short, cached_run):
    cached, _ = cached_run
    code, out, err = summarize(capsys, tiny_model_dir, short, "--json", "--no-cache-reuse")
    assert code == 0, err
    fresh = json.loads(out)
    assert [t["tokens"] for t in fresh["turns"]] == [t["tokens"] for t in cached["turns"]]
    assert [t["text"] for t in fresh["turns"]] == [t["text"] for t in cached["turns"]]
    assert fresh["turns"][0]["prefill_tokens"] == cached["turns"][0]["prefill_tokens"]
    for a, b in zip(fresh["turns"][1:], cached["turns"][1:], strict=True):
        assert a["prefill_tokens"] > b["prefill_tokens"] + cached["plan"]["video_tokens"]


def test_summarize_streams_markdown_then_each_answer(capsys, tiny_model_dir, short, cached_run):
    cached, _ = cached_run
    code, out, err = summarize(capsys, tiny_model_dir, short, "--verbose")
    assert code == 0, err
    expected = ""
    for i, turn in enumerate(cached["turns"]):
        if i:
            expected += cli.QUESTION_SEPARATOR.format(question=turn["question"])
        expected += turn["text"] + ("" if turn["text"].endswith("\n") else "\n")
    assert out == expected
    # --verbose shows progress on a non-terminal ("vision" only on a feature-cache miss: cached_run ran first).
    assert "frames" in err and "prefill" in err


# --- KV-cache dtype, device memory, quantization -----------------------------------------------------------


def plan_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "plan", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_plan_says_262144_tokens_fit_a_24gb_card_with_a_float8_cache(capsys, short):
    command = ("--max-context", "262144", "--device-memory", "24GB", "--kv-cache-dtype")
    data = plan_json(capsys, short, *command, "float8")
    memory = data["memory"]
    assert memory["kv_cache_dtype"] == "float8" and memory["context"] == 262_144
    assert memory["kv_bytes_per_token"] == 2 * 28 * 8 * (128 + 4)  # e4m3 plus a float32 scale per head
    assert memory["kv_bytes"] == 262_144 * 59_136
    assert memory["weights_bytes"] == 2_127_532_032 * 2 and memory["headroom_bytes"] == 3 * 2**30
    assert memory["device_bytes"] == 24 * 10**9
    assert memory["total_bytes"] == 22_978_437_120 and memory["fits"] is True
    assert data["plan"]["kv_cache_dtype"] == "float8" and data["plan"]["context"] == 262_144
    assert data["plan"]["kv_cache_bytes"] == (data["plan"]["tokens"] + 2048) * 59_136

    bf16 = plan_json(capsys, short, *command, "bfloat16")
    assert bf16["memory"]["kv_bytes"] == 28 * 2**30 and bf16["memory"]["fits"] is False


def test_plan_auto_kv_cache_dtype_and_context_follow_the_device(capsys, short):
    on_24gb = plan_json(capsys, short, "--device-memory", "24GB")  # auto and auto: bf16 would not fit
    assert on_24gb["memory"]["kv_cache_dtype"] == "float8" and on_24gb["plan"]["context"] == 262_144
    assert on_24gb["memory"]["fits"] is True
    on_80gib = plan_json(capsys, short, "--device-memory", "80GiB")
    assert on_80gib["memory"]["kv_cache_dtype"] == "bfloat16" and on_80gib["memory"]["fits"] is True
    # An auto context on a 16 GB card with bf16 forced: (16e9 - 4.26e9 - 3 GiB) / 112 KiB = 74,321 tokens,
    # rounded down to 1,024s.
    small = plan_json(capsys, short, "--kv-cache-dtype", "bfloat16", "--device-memory", "16GB")
    assert small["plan"]["context"] == small["memory"]["context"] == 73_728
    assert small["memory"]["fits"] is True
    # Without --device-memory nothing is known about memory: auto = not quantized, context = the cap.
    nothing = plan_json(capsys, short)
    assert nothing["memory"]["device_bytes"] is None and nothing["memory"]["fits"] is None
    assert nothing["memory"]["kv_cache_dtype"] == "bfloat16" and nothing["plan"]["context"] == 262_144


def test_plan_prints_the_memory_line_for_a_device(capsys, short):
    code, out, err = run(capsys, "plan", short, "--max-context", "262144", "--device-memory", "24GB")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3 and "KV cache" in lines[1] and "in float8" in lines[1]
    assert lines[2] == (
        "memory: weights 3.96 GiB + KV cache 14.44 GiB (float8, 262,144 tokens) + headroom 3.00 GiB "
        "= 21.40 GiB of 22.35 GiB: fits"
    )


@pytest.mark.parametrize("argv", [("--device-memory", "24XB"), ("--kv-cache-dtype", "int4")])
def test_bad_memory_or_kv_cache_dtype_is_a_usage_error(capsys, short, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", str(short), *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_summarize_with_a_float8_cache(capsys, tiny_model_dir, short):
    code, out, err = summarize(capsys, tiny_model_dir, short, "--json", "--kv-cache-dtype", "float8")
    assert code == 0, err
    data = json.loads(out)
    assert data["plan"]["kv_cache_dtype"] == "float8"
    assert all(1 <= len(t["tokens"]) <= 5 for t in data["turns"])


def test_bitsandbytes_on_the_cpu_is_one_error_line(capsys, tiny_model_dir, short):
    code, out, err = summarize(capsys, tiny_model_dir, short, "--quantization", "nf4")
    assert_one_error_line(code, out, err, "model.quantization = nf4", "CUDA", "model.quantization = none")


# --- a time range ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [("1", "3"), ("0:01", "0:03"), ("00:00:01", "00:00:03"), ("1s", "3.0"), ("第1秒", "三秒")],
)
def test_plan_reads_start_and_end_in_any_time_style(capsys, short, start, end):
    code, out, err = run(capsys, "plan", short, "--start", start, "--end", end, "--json")
    assert code == 0, err
    plan = json.loads(out)["plan"]
    assert (plan["start"], plan["end"], plan["frames"]) == (1.0, 3.0, 2)  # targets 1 s and 2 s at 1 fps
    code, out, _ = run(capsys, "plan", short, "--start", start, "--end", end)
    assert "plan at 1 fps: 00:01–00:03: 2 frames at 128x96" in out


def test_frames_lists_only_the_range_on_the_videos_clock(capsys, short):
    code, out, err = run(capsys, "frames", short, "--fps", "2", "--start", "1", "--end", "0:03", "--json")
    assert code == 0, err
    frames = json.loads(out)["frames"]
    assert [f["target"] for f in frames] == [1.0, 1.5, 2.0, 2.5]
    times = [i / 5 for i in range(20)]  # as `short` was written
    assert [f["t"] for f in frames] == pytest.approx(
        [on_screen(times, f["target"]) for f in frames], abs=1e-3
    )


def test_summarize_a_range(capsys, tiny_model_dir, short):
    code, out, err = summarize(capsys, tiny_model_dir, short, "--json", "--start", "2")
    assert code == 0, err
    data = json.loads(out)
    assert (data["plan"]["start"], data["plan"]["end"], data["plan"]["frames"]) == (2.0, None, 2)
    assert data["turns"][0]["prefill_tokens"] == data["plan"]["tokens"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["--start", "3", "--end", "2"], ["must end after it starts"]),
     (["--start", "0:10"], ["starts at 00:10", "at or after the end of the video (00:03)"]),
     (["--end", "1:00"], ["ends at 01:00", "after the end of the video"])],
)  # fmt: skip
def test_a_range_the_video_cannot_hold_is_one_error_line(capsys, tiny_model_dir, short, argv, words):
    assert_one_error_line(*run(capsys, "plan", short, *argv), *words)
    assert_one_error_line(*run(capsys, "frames", short, *argv), *words)
    code, out, err = summarize(capsys, tiny_model_dir, short, "--verbose", *argv)
    assert "loading" not in err, "refused before the model is loaded"
    assert_one_error_line(code, out, err, *words)


def test_a_time_that_is_not_a_time_is_a_usage_error(capsys, short):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", str(short), "--start", "soon"])
    assert exit_info.value.code == 2
    assert "argument --start: 'soon' is not a time; write seconds (90)" in capsys.readouterr().err


def test_a_folder_without_videos_is_an_error_not_a_usage_error(capsys, tmp_path):
    folder = tmp_path / "lecture.mp4"  # a folder that is named like a video
    folder.mkdir()
    code, out, err = run(capsys, "summarize", folder)
    assert_one_error_line(code, out, err, "no video files to summarize", "lecture.mp4")
