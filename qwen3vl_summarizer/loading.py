"""Loading a Qwen3-VL checkpoint into an :class:`~.engine.Engine`, and the one engine a server holds.

``load_engine(options.model)`` is the one way the page and the command line load a model: a hub id or a
local folder through ``from_pretrained``, with the device and dtype picked for the machine, and every
failure turned into one :class:`~.errors.ModelLoadError` line that says what was tried and what to do.
:class:`EngineSlot` keeps a server's model: switching to another one loads it first and drops the current
one only once the new one works, so a failed switch leaves the page as it was.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .attention import use_split_attention
from .device import pick_device, pick_dtype, release_memory
from .engine import Engine
from .errors import ModelLoadError, OptionsError, first_line
from .options import ModelOptions

log = logging.getLogger(__name__)

QWEN3VL_MODEL_TYPES = ("qwen3_vl", "qwen3_vl_moe")
# Packages a quantized checkpoint needs beyond transformers, by its quant_method. transformers 5.x runs
# GPTQ through optimum's GPTQ quantizer with GPT-QModel kernels, and AWQ through GPT-QModel too
# (auto-gptq and autoawq are no longer used).
CHECKPOINT_BACKENDS = {
    "gptq": (("gptqmodel", "optimum"), "pip install 'qwen3vl-summarizer[gptq]'"),
    "awq": (("gptqmodel",), "pip install 'qwen3vl-summarizer[gptq]'"),
}
# CUDA compute capability with FP8 matmuls (RTX 4090, L4, H100). Elsewhere an FP8 checkpoint is dequantized.
FP8_MIN_CAPABILITY = (8, 9)
# model.quantization: quantized with bitsandbytes while loading. The vision tower (0.4B of the 2B model's
# parameters, run once per video, its features cached) and the output head stay in the model's dtype:
# they cost little memory, and the 4-bit error stays out of what the model sees and what it picks.
BNB_SKIP_MODULES = ["model.visual", "lm_head"]
# Before 5.24 the Qwen3-VL text model took its cache as ``past_key_values`` (ours passes ``cache=``, which
# 5.17 swallowed: every prefill chunk ran without its past, wrong tokens and no error) and returned DeepStack
# features unsplit. Measured with transformers 5.17 and 5.24 on the test suite.
MIN_TRANSFORMERS = (5, 24)


def load_model(
    model_id: str = ModelOptions.id,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    quantization: str = "none",
) -> tuple[Any, Any]:
    """(model, processor) of a Qwen3-VL checkpoint (hub id or local folder), via ``from_pretrained``.

    ``quantization`` ("none", "nf4", "int8") quantizes the weights with bitsandbytes while loading (CUDA
    only). Quantized checkpoints (FP8, GPTQ, AWQ) are read as they are.

    Raises ModelLoadError with what was tried and what to do: no network, no such model or folder, not a
    Qwen3-VL model, a quantized checkpoint whose backend package is not installed, or a quantization
    this device cannot run.
    """
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if tuple(int(part) for part in transformers.__version__.split(".")[:2]) < MIN_TRANSFORMERS:
        wanted = ".".join(map(str, MIN_TRANSFORMERS))
        raise ModelLoadError(
            f"transformers {transformers.__version__} is too old for this engine: pip install 'transformers>={wanted}'"
        )
    target = pick_device(device)
    torch_dtype = pick_dtype(dtype, target)
    where = "local folder" if Path(model_id).expanduser().is_dir() else "hub id"
    try:
        config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        if Path(model_id).expanduser().exists() or where == "local folder":
            raise ModelLoadError(f"{model_id} is not a model folder: {first_line(e)}") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        if _looks_like_path(model_id):
            raise ModelLoadError(f"model folder not found: {model_id}") from None
        raise ModelLoadError(
            f"could not load model '{model_id}' ({where}): not in the local Hugging Face cache and "
            f"{'offline mode is on' if offline else 'the hub could not be reached or has no such model'}. "
            f"Download it once with: hf download {model_id}, or give the path of a local folder that holds it"
        ) from None
    if config.model_type not in QWEN3VL_MODEL_TYPES:
        raise ModelLoadError(
            f"{model_id} is a '{config.model_type}' model; this app needs a Qwen3-VL model "
            "(e.g. Qwen/Qwen3-VL-2B-Instruct)"
        )
    _check_quantization_backend(config, model_id, target)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": attn_implementation}
    if quantization != "none":
        kwargs["quantization_config"] = bnb_config(quantization, torch_dtype, target, config, model_id)
    elif quantization_method(config) == "fp8" and not runs_fp8(target):
        kwargs["quantization_config"] = _fp8_dequantized(config, model_id, target)
    if target.type == "cuda":
        kwargs["device_map"] = str(target) if target.index is not None else "cuda"
    t0 = time.perf_counter()
    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs)
    except ImportError as e:
        raise ModelLoadError(
            f"loading {model_id} needs a package that is not installed: {first_line(e)}"
        ) from None
    except (OSError, ValueError) as e:
        if "flash_attn" in str(e) or "FlashAttention" in str(e):
            raise ModelLoadError(
                "FlashAttention is not installed: pip install flash-attn, or use attn_implementation=sdpa"
            ) from None
        raise ModelLoadError(f"could not load {model_id}: {first_line(e)}") from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise ModelLoadError(
            f"could not load {model_id}: a weights file is damaged or incomplete ({first_line(e)}); "
            "download it again"
        ) from None
    if target.type != "cuda":
        model = model.to(target)
    if use_split_attention(model):
        log.info("CPU: chunked prefill attends to the past without a mask (attention.py)")
    log.info("loaded %s on %s as %s in %.1f s", model_id, target, torch_dtype, time.perf_counter() - t0)
    return model, processor


def load_engine(options: ModelOptions, model_id: str | None = None) -> Engine:
    """The engine for ``options`` (device, dtype, attention), on ``model_id`` or ``options.id``; with
    ``backend = "vllm"``, a :class:`~.remote.RemoteEngine` on the server that serves it (the processor is
    loaded here, the weights are not)."""
    if options.backend == "vllm":
        from .remote import RemoteEngine

        return RemoteEngine.connect(options, model_id)
    model_id = (model_id if model_id is not None else options.id).strip()
    if not model_id:
        raise ModelLoadError("no model given: pass a hub id such as Qwen/Qwen3-VL-2B-Instruct or a folder")
    model, processor = load_model(
        model_id, options.device, options.dtype, options.attn_implementation, options.quantization
    )
    return Engine(model, processor, model_id)


class EngineSlot:
    """The one model of a server process. ``get(model_id)`` loads it on first use; another id replaces
    it, but only once the new model has loaded: a model that fails to load leaves the current one (and
    the videos opened with it) as they were. ``on_switch(old)`` is called after a replacement."""

    def __init__(self, options: ModelOptions, on_switch: Callable[[Engine], None] | None = None):
        self.options = options
        self.engine: Engine | None = None
        self._lock = threading.Lock()
        self._on_switch = on_switch

    def get(self, model_id: str | None = None) -> Engine:
        model_id = (model_id or "").strip() or self.options.id
        with self._lock:
            if self.engine is not None and self.engine.model_id == model_id:
                return self.engine
            engine = load_engine(self.options, model_id)
            old, self.engine = self.engine, engine
        if old is not None:
            log.info("replaced model %s with %s", old.model_id, model_id)
            if self._on_switch is not None:
                self._on_switch(old)
            del old
            release_memory()
        return engine


def _looks_like_path(model_id: str) -> bool:
    """A hub id is ``org/name``; a name that starts like a path, or has more parts, is a folder."""
    return model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1


def quantization_method(config: Any) -> str | None:
    """A quantized checkpoint's ``quant_method`` ("fp8", "gptq", "awq"...) in lower case; None if none."""
    quant = getattr(config, "quantization_config", None)
    if not quant:
        return None
    method = (
        quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    ) or ""
    return str(getattr(method, "value", method)).lower() or None


def runs_fp8(device: torch.device) -> bool:
    """Whether transformers runs an FP8 checkpoint's matmuls in FP8 on ``device`` (else it dequantizes)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY


def _check_quantization_backend(config: Any, model_id: str, device: torch.device | None = None) -> None:
    """Name the packages a quantized checkpoint needs on ``device`` before transformers fails deep inside
    (or, for FP8 kernels, at the first forward pass)."""
    import importlib.util

    method = quantization_method(config)
    if method in CHECKPOINT_BACKENDS:
        packages, command = CHECKPOINT_BACKENDS[method]
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            names = " and ".join(f"'{p}'" for p in missing)
            raise ModelLoadError(f"{model_id} is a {method.upper()} checkpoint and needs {names}: {command}")
    if method == "fp8" and device is not None and runs_fp8(device):
        from transformers.utils.import_utils import (
            KERNELS_MAX_VERSION,
            KERNELS_MIN_VERSION,
            is_kernels_available,
        )

        if not is_kernels_available():
            raise ModelLoadError(
                f"{model_id} is an FP8 checkpoint, and on this GPU transformers runs its matmuls with the "
                f"'kernels' package, missing or of another version: "
                f"pip install 'kernels>={KERNELS_MIN_VERSION},<{KERNELS_MAX_VERSION}' "
                "(it fetches kernels-community/finegrained-fp8 from the Hugging Face Hub on first use)"
            )


def _fp8_dequantized(config: Any, model_id: str, device: torch.device) -> Any:
    """The quantization config that loads an FP8 checkpoint dequantized to the model's dtype, for a device
    without FP8 matmuls (the CPU, MPS, GPUs before compute capability 8.9). transformers does this by itself
    only when no CUDA device exists at all; asking for it also covers ``device=cpu`` on a GPU machine."""
    from transformers import FineGrainedFP8Config

    log.warning(
        "%s is an FP8 checkpoint and %s has no FP8 matmuls: its weights are dequantized while loading and "
        "take their full size in memory",
        model_id,
        device,
    )
    quant = config.quantization_config
    skip = quant.get("modules_to_not_convert") if isinstance(quant, dict) else quant.modules_to_not_convert
    return FineGrainedFP8Config(dequantize=True, modules_to_not_convert=skip)


def bnb_config(
    quantization: str, dtype: torch.dtype, device: torch.device, config: Any, model_id: str
) -> Any:
    """The BitsAndBytesConfig for ``model.quantization`` ("nf4": 4-bit NormalFloat with double
    quantization, computing in ``dtype``; "int8": LLM.int8()). Raises ModelLoadError off CUDA, without
    bitsandbytes, or for a checkpoint that is already quantized."""
    import importlib.util

    from transformers import BitsAndBytesConfig
    from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION

    setting = f"model.quantization = {quantization}"
    if quantization not in ("nf4", "int8"):
        raise OptionsError(f"model.quantization must be none, nf4 or int8, got {quantization!r}")
    method = quantization_method(config)
    if method is not None:
        raise ModelLoadError(
            f"{model_id} is already a quantized ({method}) checkpoint: set model.quantization = none"
        )
    if device.type != "cuda":
        raise ModelLoadError(
            f"{setting} quantizes with bitsandbytes on a CUDA GPU, and this model runs on {device}: "
            "set model.quantization = none, or load a quantized checkpoint"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"{setting} needs bitsandbytes: pip install 'bitsandbytes>={BITSANDBYTES_MIN_VERSION}'"
        )
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=BNB_SKIP_MODULES,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=BNB_SKIP_MODULES)
