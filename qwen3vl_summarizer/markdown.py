"""Where Markdown holds code: fenced blocks (``` or ~~~, three or more, as CommonMark reads them) and inline
code spans. What is inside is shown exactly as written, so the page and the timestamp linker leave it alone."""

from __future__ import annotations

import re
from collections.abc import Iterator

FENCE_RE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")  # an opening or closing fence line
_CODE_SPAN_RE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def fenced_ranges(text: str) -> list[tuple[int, int]]:
    """Character ranges ``[start, end)`` of fenced code blocks, fences included. A block closes on a fence of
    the same character, at least as long, with nothing after it; an unclosed fence runs to the end."""
    ranges: list[tuple[int, int]] = []
    offset, block_start = 0, 0
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        m = FENCE_RE.match(line)
        if fence is None and m:
            fence, block_start = m[1], offset
        elif (
            fence is not None
            and m
            and m[1][0] == fence[0]
            and len(m[1]) >= len(fence)
            and not line.strip().strip(fence[0])  # a closing fence has nothing after it
        ):
            ranges.append((block_start, offset + len(line)))
            fence = None
        offset += len(line)
    if fence is not None:
        ranges.append((block_start, len(text)))
    return ranges


def code_ranges(text: str) -> list[tuple[int, int]]:
    """Sorted, non-overlapping character ranges of all code in ``text``: fenced blocks and, outside them,
    inline code spans (a run of backticks closed by a run of the same length)."""
    fenced = fenced_ranges(text)
    masked = list(text)
    for a, b in fenced:  # a fence's backticks pair with nothing outside its block
        masked[a:b] = " " * (b - a)
    spans = [m.span() for m in _CODE_SPAN_RE.finditer("".join(masked))]
    return sorted(fenced + spans)


def lines_outside_fences(text: str) -> Iterator[str]:
    """The lines of ``text`` (as ``str.splitlines`` gives them) that are not in a fenced code block; the
    fence lines themselves are left out too."""
    fenced = iter(fenced_ranges(text))
    block = next(fenced, None)
    offset = 0
    for line in text.splitlines(keepends=True):
        while block is not None and offset >= block[1]:
            block = next(fenced, None)
        if block is None or offset < block[0]:
            yield line.splitlines()[0]
        offset += len(line)
