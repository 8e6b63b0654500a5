"""Prompt templates: Markdown files in ``prompts/`` (:data:`PROMPTS_DIR`) with a small front matter block.

A file ``prompts/lecture.zh.md`` is the template named ``lecture.zh``::

    ---
    title: Lecture notes
    language: zh
    ---
    Prompt text...

Only ``key: value`` lines are read from the front matter (no YAML library needed). A file without
front matter is still a template: its title is its name and its language ``zh`` for ``*.zh.md``, else
``en``. Merge templates contain ``{segments}``; fill it with :meth:`PromptTemplate.render`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import OptionsError
from .options import user_folder

logger = logging.getLogger(__name__)

PROMPTS_DIR = user_folder("prompts")  # the checkout's prompts/, or the installed package's copy
PROMPT_SUFFIX = ".md"
FRONT_MATTER_FENCE = "---"


@dataclass(frozen=True)
class PromptTemplate:
    name: str  # file stem: "lecture", "lecture.zh"
    title: str  # human title for menus: "Lecture notes"
    language: str  # language the answer should be in: "en", "zh"
    text: str  # the prompt sent to the model (front matter removed)

    def render(self, **values: str) -> str:
        """The text with each ``{key}`` given replaced (other braces are left alone)."""
        text = self.text
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text


def _parse(path: Path) -> PromptTemplate:
    name = path.name[: -len(PROMPT_SUFFIX)]
    raw = path.read_text(encoding="utf-8").lstrip("\ufeff")
    meta: dict[str, str] = {}
    body = raw
    lines = raw.splitlines(keepends=True)
    if lines and lines[0].strip() == FRONT_MATTER_FENCE:
        for i, line in enumerate(lines[1:], 1):
            if line.strip() == FRONT_MATTER_FENCE:
                body = "".join(lines[i + 1 :])
                break
            key, sep, value = line.partition(":")
            if sep:
                meta[key.strip().lower()] = value.strip().strip("\"'")
        else:
            logger.warning("%s: front matter is not closed by '---'; reading the file as prompt text", path)
    default_language = "zh" if name.endswith(".zh") else "en"
    return PromptTemplate(
        name=name,
        title=meta.get("title") or name,
        language=meta.get("language") or default_language,
        text=body.strip(),
    )


def _files(prompts_dir: Path | str | None) -> dict[str, Path]:
    folder = Path(prompts_dir) if prompts_dir is not None else PROMPTS_DIR
    if not folder.is_dir():
        raise OptionsError(f"prompts folder not found: {folder}")
    return {p.name[: -len(PROMPT_SUFFIX)]: p for p in sorted(folder.glob("*" + PROMPT_SUFFIX)) if p.is_file()}


def list_prompts(prompts_dir: Path | str | None = None) -> list[PromptTemplate]:
    """Every template in ``prompts_dir`` (default: the package's ``prompts/``), sorted by name.

    The merge templates (``merge``, ``merge.zh``) are included; they contain ``{segments}``.
    """
    return [_parse(path) for path in _files(prompts_dir).values()]


def load_prompt(name: str, prompts_dir: Path | str | None = None) -> PromptTemplate:
    """The template called ``name`` (a file stem such as ``lecture`` or ``lecture.zh``).

    Unknown names raise :class:`OptionsError` listing the available ones.
    """
    files = _files(prompts_dir)
    key = name.strip()
    if key.endswith(PROMPT_SUFFIX):
        key = key[: -len(PROMPT_SUFFIX)]
    if key not in files:
        raise OptionsError(f"unknown prompt {name!r}; available: {', '.join(files) or '(none)'}")
    return _parse(files[key])
