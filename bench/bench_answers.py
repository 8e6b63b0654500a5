"""How many answers of the corpus (tests/answers/) give exactly their expected chapters.

    .venv/bin/python bench/bench_answers.py                 # this tree's package
    PYTHONPATH=/path/to/other/tree .venv/bin/python bench/bench_answers.py   # another tree's reading

Each line: the answer, ``ok`` (start, end and title of every chapter as expected), ``starts ok`` (the
starts only) or ``FAIL``, and how many chapters were read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qwen3vl_summarizer.export import parse_chapters
from qwen3vl_summarizer.timestamps import parse_timestamp

ANSWERS = Path(__file__).resolve().parent.parent / "tests" / "answers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=Path, default=ANSWERS, help="folder of NAME.md + NAME.json")
    folder = parser.parse_args().answers
    names = sorted(p.stem for p in folder.glob("*.md"))
    exact = 0
    for name in names:
        expected = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        duration = parse_timestamp(expected["duration"])
        want = [(parse_timestamp(a), parse_timestamp(b), t) for a, b, t in expected["chapters"]]
        chapters, _ = parse_chapters((folder / f"{name}.md").read_text(encoding="utf-8"), duration)
        got = [(c.start, c.end, c.title) for c in chapters]
        exact += got == want
        verdict = (
            "ok" if got == want else "starts ok" if [g[0] for g in got] == [w[0] for w in want] else "FAIL"
        )
        print(f"{name:28s} {verdict} ({len(got)} chapters)")
    print(f"{exact}/{len(names)} answers give exactly their chapters")


if __name__ == "__main__":
    main()
