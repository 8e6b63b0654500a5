"""Run settings: frozen dataclasses read from a TOML file.

``load_options()`` reads ``configs/default.toml`` (see :func:`user_folder`) or the file given, then
``QWEN3VL_<SECTION>__<KEY>`` environment variables, then explicit overrides (the CLI's flags). Unknown
sections or keys, wrong types and out-of-range values raise :class:`OptionsError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .errors import OptionsError


def user_folder(name: str) -> Path:
    """The folder ``name`` (``configs``, ``prompts``) of the files a user edits.

    They live at the top of the checkout (so a source tree and ``pip install -e .`` read them there); a
    wheel carries them inside the package (pyproject.toml maps them), so an installed copy has them too.
    """
    installed = Path(str(resources.files(__package__) / name))
    if installed.is_dir():
        return installed
    root = Path(__file__).resolve().parent.parent
    return root / name if (root / "pyproject.toml").is_file() else installed


DEFAULT_CONFIG = user_folder("configs") / "default.toml"
ENV_PREFIX = "QWEN3VL_"
MAX_FPS = 30.0
MAX_CONTEXT = 262_144  # Qwen3-VL's trained context length, tokens
SPEECH_MODES = ("auto", "subtitles", "asr", "off")  # speech.mode; speech.py checks against these too
SPEECH_DEVICES = ("auto", "cpu", "cuda")  # speech.device: where recognition runs
KV_CACHE_DTYPES = ("auto", "bfloat16", "float8")  # context.kv_cache_dtype
QUANTIZATIONS = ("none", "nf4", "int8")  # model.quantization (bitsandbytes at load time)
BACKENDS = ("local", "vllm")  # model.backend: in this process, or a vLLM (OpenAI-compatible) server


@dataclass(frozen=True)
class ModelOptions:
    id: str = "Qwen/Qwen3-VL-2B-Instruct"  # hub id or local folder
    device: str = "auto"  # auto | cuda | cuda:N | mps | cpu
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    attn_implementation: str = "sdpa"  # sdpa | flash_attention_2 | eager
    quantization: str = "none"  # none | nf4 | int8: bitsandbytes at load time, CUDA only
    # local: the model runs in this process; vllm: a vLLM server at server_url runs it (id names what it
    # serves; only the processor and tokenizer are loaded here, for the plan and token counts)
    backend: str = "local"
    server_url: str = "http://127.0.0.1:8000"  # the vLLM server's base URL (backend = vllm)
    api_key: str = ""  # sent as a bearer token when set (vLLM's --api-key)
    # The name the server serves model.id under (vLLM's --served-model-name), sent in each request;
    # "" = model.id. The processor and tokenizer still load from model.id.
    served_name: str = ""
    server_timeout_s: float = 600.0  # longest wait for the server's next bytes, seconds


@dataclass(frozen=True)
class SamplingOptions:
    fps: float = 1.0  # frames per second sampled from the video, (0, 30]
    min_pixels: int = 256 * 256  # smallest frame area before a long video is split into parts, pixels
    max_pixels: int = 512 * 512  # largest frame area the plan may choose, pixels


@dataclass(frozen=True)
class ContextOptions:
    max_context: int | Literal["auto"] = "auto"  # tokens; auto = what fits the device, capped
    max_context_cap: int = MAX_CONTEXT  # upper bound for "auto", tokens
    reserve_tokens: int = 2048  # kept for prompt text and answer, tokens
    # Tokens per prefill forward pass; auto = as many as a memory budget allows (plan.auto_chunk_tokens)
    prefill_chunk_size: int | Literal["auto"] = "auto"
    vision_batch_groups: int = 32  # temporal groups per vision-encoder pass
    kv_cache_dtype: str = "auto"  # auto | bfloat16 (not quantized) | float8 (e4m3, half the bytes)


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.05


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_upload_mb: int = 4096
    concurrency_limit: int = 1  # GPU jobs at once
    # Jobs at once with model.backend = "vllm": the server batches them, this process only streams
    vllm_concurrency_limit: int = 16
    session_memory_gb: float = 16.0  # budget for cached browser sessions before LRU eviction
    # Models a browser may pick, besides model.id; any other hub id or server path only with allow_any_model.
    allowed_models: tuple[str, ...] = ()
    allow_any_model: bool = False  # let browsers and API clients load any hub id or server folder
    max_prompt_chars: int = 20_000  # longest prompt or question accepted, characters
    max_image_pixels: int = 40_000_000  # larger images are refused before they are decoded
    session_idle_minutes: float = 60.0  # a page's video is forgotten after this long unused
    upload_max_age_hours: float = 24.0  # uploads and downloads older than this are deleted
    auth: str = ""  # "user:password" (comma-separated for several) to require a login; "" = none


@dataclass(frozen=True)
class CacheOptions:
    enabled: bool = True  # keep vision features on disk: the same video skips decoding and encoding
    dir: str = "~/.cache/qwen3vl-summarizer/features"
    max_gb: float = 20.0  # least-recently-used entries are evicted beyond this size


@dataclass(frozen=True)
class SpeechOptions:
    mode: str = "auto"  # auto (subtitles, else recognition) | subtitles | asr | off
    model: str = "auto"  # faster-whisper size, hub id or local CTranslate2 folder; auto: by device
    language: str = ""  # a Whisper language code, or "" to detect it
    device: str = "auto"  # auto | cpu | cuda, for recognition


@dataclass(frozen=True)
class LibraryOptions:
    enabled: bool = True  # record every summary and transcript in the library (library.py)
    path: str = ""  # the SQLite file; "" = $XDG_DATA_HOME (or ~/.local/share)/qwen3vl-summarizer/library.db


@dataclass(frozen=True)
class Options:
    model: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    context: ContextOptions = field(default_factory=ContextOptions)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    server: ServerOptions = field(default_factory=ServerOptions)
    cache: CacheOptions = field(default_factory=CacheOptions)
    speech: SpeechOptions = field(default_factory=SpeechOptions)
    library: LibraryOptions = field(default_factory=LibraryOptions)

    def replace(self, **sections: Mapping[str, Any]) -> Options:
        """A copy with some keys changed, e.g. ``opts.replace(sampling={"fps": 2})``; validated."""
        return _build(_merge(dataclasses.asdict(self), sections, source="override"))


def validate(opts: Options) -> Options:
    """Check ranges that types alone cannot express; return ``opts`` or raise OptionsError."""
    s, c, g, v = opts.sampling, opts.context, opts.generation, opts.server
    checks = [
        (
            opts.model.quantization in QUANTIZATIONS,
            f"model.quantization must be one of {', '.join(QUANTIZATIONS)}, got {opts.model.quantization!r}",
        ),
        (
            opts.model.backend in BACKENDS,
            f"model.backend must be one of {', '.join(BACKENDS)}, got {opts.model.backend!r}",
        ),
        (
            opts.model.server_url.startswith(("http://", "https://")),
            f"model.server_url must start with http:// or https://, got {opts.model.server_url!r}",
        ),
        (opts.model.server_timeout_s > 0, "model.server_timeout_s must be > 0"),
        (0 < s.fps <= MAX_FPS, f"sampling.fps must be in (0, {MAX_FPS:g}], got {s.fps:g}"),
        (0 < s.min_pixels <= s.max_pixels, "sampling.min_pixels must be positive and <= max_pixels"),
        (
            c.max_context == "auto" or 1024 <= c.max_context <= c.max_context_cap,
            f"context.max_context must be 'auto' or in [1024, {c.max_context_cap}], got {c.max_context}",
        ),
        (0 < c.max_context_cap <= MAX_CONTEXT, f"context.max_context_cap must be in (0, {MAX_CONTEXT}]"),
        (c.reserve_tokens >= 0, "context.reserve_tokens must be >= 0"),
        (
            c.prefill_chunk_size == "auto" or c.prefill_chunk_size >= 1,
            f"context.prefill_chunk_size must be 'auto' or >= 1, got {c.prefill_chunk_size!r}",
        ),
        (c.vision_batch_groups >= 1, "context.vision_batch_groups must be >= 1"),
        (
            c.kv_cache_dtype in KV_CACHE_DTYPES,
            f"context.kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {c.kv_cache_dtype!r}",
        ),
        (g.max_new_tokens >= 1, "generation.max_new_tokens must be >= 1"),
        (g.temperature >= 0, "generation.temperature must be >= 0"),
        (0 < g.top_p <= 1, "generation.top_p must be in (0, 1]"),
        (g.top_k >= 0, "generation.top_k must be >= 0"),
        (g.repetition_penalty > 0, "generation.repetition_penalty must be > 0"),
        (0 < v.port < 65536, "server.port must be in 1..65535"),
        (v.max_upload_mb >= 1, "server.max_upload_mb must be >= 1"),
        (v.concurrency_limit >= 1, "server.concurrency_limit must be >= 1"),
        (v.vllm_concurrency_limit >= 1, "server.vllm_concurrency_limit must be >= 1"),
        (v.session_memory_gb > 0, "server.session_memory_gb must be > 0"),
        (v.max_prompt_chars >= 1, "server.max_prompt_chars must be >= 1"),
        (v.max_image_pixels >= 1, "server.max_image_pixels must be >= 1"),
        (v.session_idle_minutes > 0, "server.session_idle_minutes must be > 0"),
        (v.upload_max_age_hours > 0, "server.upload_max_age_hours must be > 0"),
        (
            all(":" in pair for pair in v.auth.split(",")) if v.auth else True,
            "server.auth must be user:password (comma-separated for several)",
        ),
        (opts.cache.max_gb > 0, "cache.max_gb must be > 0"),
        (
            opts.speech.mode in SPEECH_MODES,
            f"speech.mode must be one of {', '.join(SPEECH_MODES)}, got {opts.speech.mode!r}",
        ),
        (
            opts.speech.device in SPEECH_DEVICES,
            f"speech.device must be one of {', '.join(SPEECH_DEVICES)}, got {opts.speech.device!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise OptionsError(message)
    return opts


def load_options(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Options:
    """Defaults < config file < environment < ``overrides`` (values of None are ignored)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise OptionsError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise OptionsError(f"config file {path} is not valid TOML: {e}") from None
    merged = _merge(dataclasses.asdict(Options()), data, source=str(path))
    merged = _merge(merged, _from_environ(os.environ if environ is None else environ), source="environment")
    if overrides:
        clean = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
        merged = _merge(merged, clean, source="override")
    return _build(merged)


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[key] = _RawEnv(raw)
    return out


class _RawEnv(str):
    """A string from the environment, converted to the field's type when merged."""


def _merge(base: dict, updates: Mapping, source: str) -> dict:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in updates.items():
        if section not in merged:
            raise OptionsError(f"unknown config section [{section}] in {source}; known: {', '.join(merged)}")
        if not isinstance(values, Mapping):
            raise OptionsError(f"[{section}] in {source} must be a table of keys")
        fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}
        for key, value in values.items():
            if key not in fields:
                raise OptionsError(f"unknown key {section}.{key} in {source}; known: {', '.join(fields)}")
            merged[section][key] = _coerce(f"{section}.{key}", fields[key], value, source)
    return merged


def _coerce(name: str, f: dataclasses.Field, value: Any, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if isinstance(value, _RawEnv):
            if kind == "bool":
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            if kind.startswith("int | Literal") and value.strip().lower() == "auto":
                return "auto"
            if kind.startswith("tuple[str"):
                return tuple(item.strip() for item in value.split(",") if item.strip())
            value = {"int": int, "float": float, "str": str}.get(kind.split(" ")[0], str)(value)
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind.startswith("int | Literal"):
            if value == "auto":
                return "auto"
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif kind == "str" and isinstance(value, str):
            return value
        elif (
            kind.startswith("tuple[str")
            and isinstance(value, (list, tuple))
            and all(isinstance(item, str) for item in value)
        ):
            return tuple(value)
    except ValueError:
        pass
    raise OptionsError(f"{name} in {source} has the wrong type: {value!r} (expected {kind})")


_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Options)}


def _build(merged: dict) -> Options:
    return validate(Options(**{name: cls(**merged[name]) for name, cls in _SECTIONS.items()}))
