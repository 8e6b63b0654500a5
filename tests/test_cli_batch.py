"""``summarize`` with several videos, folders, ``--out`` and ``--format`` (the tiny model's text is noise:
these check the mechanics, not the wording)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qwen3vl_summarizer import cli

from .videos import write_video

SRT_CUE = re.compile(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n[^\n]+\n")
SCRIPTED = "### [00:00–00:01] Opening\n\nA red block.\n\n### [00:01–00:02] Closing\n\nBars.\n"


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def model_flags(model: Path) -> list[str]:
    return ["--model", str(model), "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4"]


def assert_srt(text: str) -> None:
    """Numbered cues ``n / start --> end / title``, separated by one blank line (or no cue at all)."""
    blocks = text.split("\n\n") if text else []
    for i, block in enumerate(blocks, 1):
        block = block if block.endswith("\n") else block + "\n"
        assert SRT_CUE.fullmatch(block), block
        assert block.startswith(f"{i}\n")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """a.mp4 on its own; a folder with b.mkv, a broken a-broken.mp4 and a text file that is not a video."""
    root = tmp_path_factory.mktemp("batch")
    folder = root / "folder"
    folder.mkdir()
    write_video(root / "a.mp4", [i / 2 for i in range(6)])  # 2.5 s
    write_video(folder / "b.mkv", [i / 2 for i in range(4)])  # 1.5 s
    (folder / "a-broken.mp4").write_bytes(b"not a video")
    (folder / "notes.txt").write_text("not a video either")
    return {"a": root / "a.mp4", "folder": folder, "broken": folder / "a-broken.mp4"}


def test_batch_writes_every_format_and_goes_on_past_a_broken_file(capsys, tiny_model_dir, videos, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys, "summarize", videos["a"], videos["folder"], "--out", out_dir, "--ask", "q1",
        "--format", "md,json", "--format", "srt", "-f", "vtt,chapters", *model_flags(tiny_model_dir),
    )  # fmt: skip
    assert code == 1, err
    assert out == ""  # summaries go to files only
    assert "Traceback" not in err
    lines = err.splitlines()
    # Progress per file, in order: the file, then the folder's videos sorted (notes.txt is not one).
    assert [line for line in lines if line.startswith("[")] == [
        "[1/3] a.mp4",
        "[2/3] a-broken.mp4",
        "[3/3] b.mkv",
    ]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {videos['broken']}: ")

    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        f"{stem}.{ext}" for stem in ("a", "b") for ext in ("md", "json", "srt", "vtt", "txt")
    )
    for stem, duration in (("a", 2.5), ("b", 1.5)):
        data = json.loads((out_dir / f"{stem}.json").read_text(encoding="utf-8"))
        assert {"chapters", "stats", "markdown"} <= set(data)
        assert data["video"] == f"{stem}.{'mp4' if stem == 'a' else 'mkv'}"
        assert data["duration"] == pytest.approx(duration, abs=0.6)
        turns = data["stats"]["turns"]
        assert [t["question"] for t in turns][1:] == ["q1"]
        assert all(1 <= t["generated_tokens"] <= 4 and t["prefill_tokens"] > 0 for t in turns)
        assert "**Q: q1**" in data["markdown"]  # the follow-up is a section of the exported Markdown
        markdown = (out_dir / f"{stem}.md").read_text(encoding="utf-8")
        assert markdown == data["markdown"]
        assert (out_dir / f"{stem}.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
        assert_srt((out_dir / f"{stem}.srt").read_text(encoding="utf-8"))

    # The table lists every video with its status; numbers only for those that ran.
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["file", "status"])
    assert lines[header].split() == ["file", "status", "duration", "frames", "tokens", "time"]
    rows = {line.split()[0]: line.split() for line in lines[header + 1 : header + 4]}
    assert set(rows) == {str(videos["a"]), str(videos["broken"]), str(videos["folder"] / "b.mkv")}
    assert rows[str(videos["a"])][1:3] == ["ok", "00:02"] and int(rows[str(videos["a"])][3]) > 0
    assert rows[str(videos["broken"])][1:5] == ["failed", "-", "-", "-"]
    assert lines[header + 4] == "2 of 3 videos summarized, 1 failed"


def test_batch_of_good_videos_exits_0(capsys, tiny_model_dir, videos, tmp_path):
    code, out, err = run(
        capsys, "summarize", videos["a"], videos["folder"] / "b.mkv", "--out", tmp_path,
        "--format", "json", *model_flags(tiny_model_dir),
    )  # fmt: skip
    assert code == 0, err
    assert out == "" and "error" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_one_format_without_out_is_printed_after_the_run(capsys, scripted, tiny_model_dir, videos):
    """A scripted answer with chapters, so the SRT on stdout has cues to check."""
    scripted.enqueue(SCRIPTED)
    code, out, err = run(capsys, "summarize", videos["a"], "--format", "srt", *model_flags(tiny_model_dir))
    assert code == 0, err
    assert len(scripted.asked) == 1 and scripted.asked[0].frames == 3  # 2.5 s at 1 fps, read as usual
    assert out == "1\n00:00:00,000 --> 00:00:01,000\nOpening\n\n2\n00:00:01,000 --> 00:00:02,000\nClosing\n"
    assert_srt(out)
    assert "[1/1]" not in err  # no batch progress or table for one video printed to stdout


@pytest.mark.parametrize(
    "argv, words",
    [
        (["A", "B"], "--out"),
        (["FOLDER"], "--out"),
        (["A", "--format", "md,srt"], "--out"),
        (["A", "--format", "docx"], "docx"),
        (["A", "--json", "--format", "srt"], "--json"),
        (["A", "B", "--out", "OUT", "--json"], "--json"),
        (["A", "FOLDER/b.mkv", "B", "--out", "OUT"], "same files"),
    ],
)
def test_usage_errors_exit_2(capsys, videos, tmp_path, argv, words):
    b = tmp_path / "b.mp4"  # same stem as FOLDER/b.mkv
    names = {"A": videos["a"], "B": b, "FOLDER": videos["folder"], "OUT": tmp_path / "out"}
    argv = [str(names.get(a, a)).replace("FOLDER", str(videos["folder"])) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["summarize", *argv])
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
