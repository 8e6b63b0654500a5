"""The package as a user installs it: a wheel built from this checkout, installed into a fresh virtualenv
outside it, and run from another folder. It must bring its own defaults and prompts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.videos import write_video

ROOT = Path(__file__).resolve().parent.parent
BUILD_LEFTOVERS = (
    ".git",
    ".venv",
    ".whl",
    "build",
    "dist",
    "artifacts",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a virtualenv holding the wheel (its dependencies come from this interpreter)."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build/ folder left from an earlier build could supply missing files.
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    dist = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, source],
        check=True,
        cwd=work,
    )
    (wheel,) = dist.glob("qwen3vl_summarizer-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    bin_dir = venv / "bin"
    site = Path(
        subprocess.check_output([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                text=True).strip()
    )  # fmt: skip
    # torch, transformers, av...: this interpreter's, appended after the venv's own site-packages. A path
    # line does not run the .pth files of that folder, so the checkout's editable install stays out.
    (site / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True
    )
    return bin_dir


def test_the_wheel_runs_from_another_folder_with_its_defaults_and_prompts(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    video = elsewhere / "clip.mp4"
    write_video(video, [i * 0.5 for i in range(8)])

    # A user's environment: a PYTHONPATH naming the checkout (as when the suite runs from it) would test
    # the checkout instead of the wheel.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([*args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)

    where = run(installed / "python", "-c",
                "import qwen3vl_summarizer.prompts as p, qwen3vl_summarizer.options as o; "
                "print(p.__file__, p.PROMPTS_DIR, o.DEFAULT_CONFIG, len(p.list_prompts()))")  # fmt: skip
    assert where.returncode == 0, where.stderr
    *paths, count = where.stdout.split()
    # The top-level configs/ and prompts/ travel inside the package (pyproject.toml maps them there).
    package = installed.parent / "lib"
    assert all(
        Path(path).is_relative_to(package) and "qwen3vl_summarizer" in Path(path).parts for path in paths
    ), f"the installed copy, not the checkout: {paths}"
    assert int(count) >= 10

    usage = run(installed / "qwen3vl-summarize", "--help")
    assert usage.returncode == 0 and "summarize" in usage.stdout

    plan = run(installed / "qwen3vl-summarize", "plan", video, "--json")
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert data["plan"]["frames"] == 4 and data["plan"]["tokens"] > 0  # defaults: 1 fps, the general prompt
