"""Write a tiny, randomly initialised Qwen3-VL model folder (offline) for tests and benchmarks.

    .venv/bin/python scripts/make_tiny_model.py DIR [--seed N]

The folder loads like Qwen/Qwen3-VL-2B-Instruct: pass DIR wherever a model id or folder is accepted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# The tiny model is a test fixture (tests/tiny_model.py), so this runs from a checkout: put its top on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tiny_model import build_tiny_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="output folder (created if missing; files are overwritten)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    args = parser.parse_args(argv)
    if args.dir.exists() and not args.dir.is_dir():
        parser.error(f"{args.dir} exists and is not a folder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(build_tiny_model(args.dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
