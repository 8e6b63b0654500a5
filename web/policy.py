"""What a request may do, as the operator set it (``[server]`` in the config): read only files uploaded
through this server, load only the models offered, send text and images within limits. Also the server's
download folders, which outlive no process."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from gradio.utils import get_upload_folder as gradio_upload_folder

from qwen3vl_summarizer.errors import OptionsError, SummarizerError
from qwen3vl_summarizer.options import Options

DOWNLOADS_PREFIX = "qwen3vl-app-"  # + pid: a folder per server process, removed once that process is gone
MAX_IMAGE_SIDE = 2048  # pixels; an image is shrunk to this before the model's processor sees it


class ModelNotOffered(SummarizerError):
    """A request named a model that the operator does not offer."""


class NotAnUpload(SummarizerError):
    """A request named a file on the server that was not uploaded through it."""


def offered_models(options: Options) -> list[str]:
    """What the model menu offers: the configured model, then the allowed ones."""
    return list(dict.fromkeys([options.model.id, *options.server.allowed_models]))


def model_for(options: Options, model_id: str | None) -> str:
    """The model a request may load: one the operator offers, or any with server.allow_any_model."""
    model_id = (model_id or "").strip() or options.model.id
    models = offered_models(options)
    if model_id not in models and not options.server.allow_any_model:
        raise ModelNotOffered(
            f"this server offers these models: {', '.join(models)} (its operator can allow others "
            "with server.allow_any_model)"
        )
    return model_id


def check_text(options: Options, text: str, what: str) -> str | None:
    """Why ``text`` (a prompt or a question) cannot be accepted, or None."""
    limit = options.server.max_prompt_chars
    if len(text) > limit:
        return f"The {what} is {len(text):,} characters long; this server accepts up to {limit:,}."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"The {what} holds characters that are not valid text (lone surrogates): type or paste it again."
        )
    return None


def uploaded(path: str) -> str:
    """``path`` if it is a file uploaded through this server (in Gradio's upload folder), else refuse:
    a client must not make the server read, or learn about, any other file."""
    folder = Path(gradio_upload_folder()).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(folder) or not resolved.is_file():
        raise NotAnUpload("only files uploaded through this page can be read: upload the file again")
    return str(resolved)


def read_image(path: str, max_pixels: int) -> np.ndarray:
    """An uploaded image as RGB [H, W, 3], refused before decoding when its header says it is larger than
    ``max_pixels``, and shrunk to at most MAX_IMAGE_SIDE pixels a side (the model reads less than that)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise OptionsError(
                    f"the image is {width}×{height} ({width * height / 1e6:.0f} megapixels); this server reads "
                    f"images up to {max_pixels / 1e6:.0f} megapixels"
                )
            image.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # JPEG: decode at a reduced scale
            image = image.convert("RGB")
            image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
            return np.asarray(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
        raise OptionsError(
            f"{Path(path).name} is not an image this server can read ({e.__class__.__name__})"
        ) from None


def new_downloads_folder() -> Path:
    """This process's download folder (the folders of dead processes are removed first)."""
    remove_leftover_downloads()
    return Path(tempfile.mkdtemp(prefix=f"{DOWNLOADS_PREFIX}{os.getpid()}-"))


def remove_leftover_downloads() -> None:
    """Download folders of app processes that are no longer running (a crash, a kill) are deleted."""
    for folder in Path(tempfile.gettempdir()).glob(f"{DOWNLOADS_PREFIX}*"):
        pid = folder.name.removeprefix(DOWNLOADS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
