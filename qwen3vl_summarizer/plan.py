"""Fit a video into a token budget: frame size, frame count, exact token count, KV memory, segments.

Pure arithmetic (no model, no decoding), so the web app can redraw the plan while a slider moves.
The token arithmetic mirrors Qwen3-VL's processor: two consecutive frames form one temporal group; a
group resized to W x H (multiples of ``patch_size * merge_size`` = 32 px) costs (W/32)*(H/32) visual
tokens, plus ``<|vision_start|>``, ``<|vision_end|>`` and its ``<t seconds>`` timestamp text.
The memory arithmetic (:func:`memory_plan`) says whether weights plus a KV cache as long as the context,
unquantized or in float8, fit a device of a given size; :func:`context_length` and :func:`auto_chunk_tokens`
size the context and the prefill chunks from the bytes a device has free (``Engine`` passes them in).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ContextTooSmallError, OptionsError
from .options import MAX_CONTEXT, ContextOptions, Options, SamplingOptions
from .timestamps import DURATION_TOLERANCE, format_timestamp, parse_timestamp
from .video import MAX_FPS, VideoInfo, target_times

# Bytes of one cached key or value element in each dtype a KV cache can hold. "float8" is e4m3 plus
# FLOAT8_SCALE_BYTES per head and token (kv_cache.py); the others are unquantized, in the model's dtype.
KV_ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1}
FLOAT8_SCALE_BYTES = 4  # one float32 scale per head and token, for keys and again for values


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, kv_cache_dtype: str) -> int:
    """Bytes one token adds to the KV cache: keys and values of every layer and KV head, scales included."""
    scale = FLOAT8_SCALE_BYTES if kv_cache_dtype == "float8" else 0
    return 2 * layers * kv_heads * (head_dim * KV_ELEMENT_BYTES[kv_cache_dtype] + scale)


# Qwen3-VL-2B-Instruct, used when no model is loaded (the engine reads the real values from it).
# Geometry.kv_cache_dtype of a model served elsewhere (model.backend = "vllm"): its KV cache is the server's.
SERVER_KV_CACHE = "server"
QWEN3VL_2B_KV_SHAPE = (28, 8, 128)  # text layers, KV heads, head_dim
QWEN3VL_2B_KV_BYTES_PER_TOKEN = kv_bytes_per_token(*QWEN3VL_2B_KV_SHAPE, "bfloat16")  # 112 KiB
QWEN3VL_2B_PARAMETERS = 2_127_532_032  # its config built on the meta device (tied embeddings, vision too)
QWEN3VL_2B_WEIGHTS_BYTES = QWEN3VL_2B_PARAMETERS * 2  # bfloat16: 4.26 GB (3.96 GiB)
# Device memory kept free beyond weights and KV cache: prefill activations of one chunk (sdpa's chunk x
# context mask on GPUs: 0.5 GiB at 2,048 x 262,144), a vision batch, the CUDA context and allocator slack.
ACTIVATION_HEADROOM_BYTES = 3 * 2**30
AUTO_CONTEXT_MIN = 8192  # tokens: "auto" never plans below this, even when memory is short
AUTO_CONTEXT_STEP = 1024  # tokens: "auto" rounds down to a multiple of this
# Units of --device-memory. A bare G or GB is 10**9 bytes: a card sold as "24 GB" has 24 GiB, so reading
# its label in SI units errs on the safe side.
SIZE_UNITS = {
    "": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
    "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
# Tokens of "<0.0 seconds>" with Qwen's tokenizer: "<", "0", ".", "0", " seconds", ">" (digits split singly).
QWEN_TIMESTAMP_BASE_TOKENS = 6
# "<|im_start|>user\n" before the video and "<|im_end|>\n<|im_start|>assistant\n" after the prompt.
QWEN_TEMPLATE_TOKENS = 8
CHARS_PER_TOKEN_ESTIMATE = 3.5  # for prompt text when no tokenizer is at hand
MAX_SEGMENTS = 500  # beyond this a long video is refused: each segment is a model pass and a merge input
# Speech not yet transcribed is planned with an upper bound of its transcript's length, so the frames can
# be read while recognition runs. The bound is in characters of the transcript as the model reads it
# ("[MM:SS] words" lines) per second of audio, because characters do not depend on the tokenizer; tiny.en
# on espeak-ng English read back to back (0.3 s between sentences; bench/RESULTS_speech.md) gave 20.2
# characters a second at 177 words a minute and 26.1 at 229, faster than lecturers and most talk (120 to
# 190 words a minute). Faster speech overflows the bound: summarize then drops lines to fit, and says so.
SPEECH_CHARS_PER_SECOND = 26.0
# Transcript lines as the model reads them: what a character of speech costs with a given tokenizer.
SPEECH_SAMPLE = (
    "[00:02] Welcome to the weather report for today.\n"
    "[00:09] The children are playing football in the park.\n"
    "[00:17] Turn off the lights before you leave the house.\n"
    "[01:24] My favourite season is the autumn, when the leaves turn red.\n"
    "[12:41] We will meet again next week to finish the project.\n"
)


@dataclass(frozen=True)
class Geometry:
    """The model's token arithmetic. ``Engine.geometry(context)`` reads it from a loaded processor, config
    and tokenizer; the defaults are Qwen3-VL-2B's, for planning without a model."""

    patch_size: int = 16  # pixels per vision patch side
    merge_size: int = 2  # patches merged per side into one language token
    temporal_patch_size: int = 2  # frames per temporal group
    kv_bytes_per_token: int = QWEN3VL_2B_KV_BYTES_PER_TOKEN  # in kv_cache_dtype, scales included
    kv_cache_dtype: str = "bfloat16"  # what the KV cache is stored in: float8, or the model's dtype
    timestamp_base_tokens: int = QWEN_TIMESTAMP_BASE_TOKENS  # tokens of "<0.0 seconds>"
    template_tokens: int = QWEN_TEMPLATE_TOKENS  # chat-template tokens around video and prompt
    count_text_tokens: Callable[[str], int] | None = field(default=None, compare=False, repr=False)

    @property
    def factor(self) -> int:
        """Pixels per language token side (32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size

    def timestamp_tokens(self, t: float) -> int:
        """Tokens of the text ``<{t:.1f} seconds>``: one per digit, as Qwen's tokenizer splits digits."""
        integer_digits = len(f"{t:.1f}") - 2
        return self.timestamp_base_tokens + integer_digits - 1

    def text_tokens(self, text: str) -> int:
        if self.count_text_tokens is not None:
            return self.count_text_tokens(text)
        return math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)


def speech_token_bound(seconds: float, geometry: Geometry | None = None) -> int:
    """Tokens that the transcript of ``seconds`` of speech should not exceed (its lines only, not the
    heading): SPEECH_CHARS_PER_SECOND characters a second, at what SPEECH_SAMPLE costs a character with
    ``geometry``'s tokenizer."""
    g = geometry or Geometry()
    per_char = g.text_tokens(SPEECH_SAMPLE) / len(SPEECH_SAMPLE)
    return math.ceil(max(0.0, seconds) * SPEECH_CHARS_PER_SECOND * per_char)


@dataclass(frozen=True)
class Segment:
    """A stretch of the video summarised on its own when the whole does not fit."""

    index: int
    start: float  # seconds
    end: float  # seconds, exclusive
    frames: int
    tokens: int  # video tokens of this segment plus template and prompt


@dataclass(frozen=True)
class Plan:
    fps: float
    width: int  # frame width fed to the model, pixels (multiple of 32)
    height: int
    frames: int  # frames sampled from the whole video
    groups: int  # temporal groups (frames / 2, rounded up) of the whole video
    tokens_per_group: int  # visual tokens per group, without timestamp and start/end markers
    video_tokens: int  # every token of the video span (timestamps and markers included), whole video
    prompt_tokens: int  # chat template plus prompt text (and the transcript's tokens or their bound)
    tokens: int  # video_tokens + prompt_tokens: the prompt length of one pass over the whole video
    context: int  # context length planned for, tokens
    reserve: int  # tokens kept free for the answer
    kv_cache_bytes: int  # KV cache for the largest pass plus the reserve
    segments: tuple[Segment, ...]  # one segment when the whole video fits
    kv_cache_dtype: str = "bfloat16"  # what the KV cache is stored in (Geometry.kv_cache_dtype)
    # The time range read, seconds on the whole video's clock: frames, groups and tokens above count only
    # this range ("the video" in their comments). end None: to the end of the video.
    start: float = 0.0
    end: float | None = None

    @property
    def is_range(self) -> bool:
        """Whether only part of the video is read (a start or an end was given)."""
        return self.start > 0 or self.end is not None

    @property
    def fits(self) -> bool:
        return len(self.segments) == 1

    @property
    def context_share(self) -> float:
        """Share of the context used by the largest pass (0..1)."""
        return max(s.tokens for s in self.segments) / self.context

    def summary(self) -> str:
        """One line for people: what the model will see and what it costs."""
        line = f"{describe_range(self.start, self.end)}: " if self.is_range else ""
        gib = f"{self.kv_cache_bytes / 2**30:.2f} GiB"
        if self.kv_cache_dtype == SERVER_KV_CACHE:
            line += (
                f"{self.frames} frames at {self.width}x{self.height}, {self.tokens:,} tokens "
                f"({self.context_share:.0%} of the server's {self.context:,}); KV cache and prefix cache "
                "on the server, no feature cache"
            )
            return line if self.fits else line + f"; needs {len(self.segments)} parts"
        if self.fits:
            line += (
                f"{self.frames} frames at {self.width}x{self.height}, {self.tokens:,} tokens "
                f"({self.context_share:.0%} of {self.context:,}), KV cache {gib} in {self.kv_cache_dtype}"
            )
        else:  # totals first, then what one part costs: a part's share is not the whole's
            largest = max(s.tokens for s in self.segments)
            line += (
                f"{self.frames} frames at {self.width}x{self.height}, {self.tokens:,} tokens in all; "
                f"split into {len(self.segments)} segments of up to {largest:,} tokens each "
                f"({self.context_share:.0%} of {self.context:,}), KV cache {gib} per segment in "
                f"{self.kv_cache_dtype}"
            )
        return line


def frame_size(width: int, height: int, max_area: int, factor: int = 32) -> tuple[int, int]:
    """The largest size with sides multiple of ``factor``, aspect ratio kept, area <= ``max_area``.

    Never upscales past the source (rounded to ``factor``); never smaller than one token per side.
    """
    area = min(max_area, max(width * height, factor * factor))
    scale = math.sqrt(area / (width * height))
    w = max(factor, math.floor(width * scale / factor) * factor)
    h = max(factor, math.floor(height * scale / factor) * factor)
    return w, h


def smallest_frame_size(width: int, height: int, min_area: int, factor: int = 32) -> tuple[int, int]:
    """The smallest size with sides multiple of ``factor``, aspect ratio kept, area >= ``min_area``
    (or the source area, when the source is smaller)."""
    scale = math.sqrt(min(min_area, width * height) / (width * height))
    return (
        max(factor, math.ceil(width * scale / factor) * factor),
        max(factor, math.ceil(height * scale / factor) * factor),
    )


def make_plan(
    info: VideoInfo,
    fps: float = 1.0,
    context: int = MAX_CONTEXT,
    *,
    reserve: int = 2048,
    prompt: str = "",
    min_pixels: int = SamplingOptions.min_pixels,
    max_pixels: int = SamplingOptions.max_pixels,
    geometry: Geometry | None = None,
    start: float = 0.0,
    end: float | None = None,
    speech_tokens: int = 0,
) -> Plan:
    """Plan how ``info``'s video, or its range ``[start, end)`` seconds, is fed to the model at ``fps``
    within ``context`` tokens (:func:`check_range` says which ranges are refused). ``speech_tokens``: the
    transcript's tokens, counted with the prompt (exact, or :func:`speech_token_bound` while it is made).

    The frame size is the largest (up to ``max_pixels``) at which the whole video plus ``prompt`` and
    ``reserve`` fits. If even ``min_pixels`` frames do not fit, the video is split into the fewest
    equal segments that fit at that size, and the size is then chosen for the longest segment.
    """
    g = geometry or Geometry()
    if not 0 < fps <= MAX_FPS:
        raise OptionsError(f"fps must be in (0, {MAX_FPS:g}], got {fps:g}")
    if min_pixels > max_pixels:
        raise OptionsError("min_pixels must be <= max_pixels")
    start, end = check_range(start, end, info.duration)
    stop = info.duration if end is None else end  # seconds: where reading stops
    prompt_tokens = g.template_tokens + g.text_tokens(prompt) + speech_tokens
    budget = context - reserve - prompt_tokens  # tokens available to the video span of one pass
    times = target_times(info.duration, fps, start, end)
    if not times and (start, end) != (0.0, None):
        raise OptionsError(
            f"the range {describe_range(start, end)} holds no frame at {fps:g} fps; widen it or raise the fps"
        )
    if not times:
        raise OptionsError(f"the video is too short ({info.duration:.3f} s) to sample at {fps:g} fps")
    stamps = [g.timestamp_tokens(t) for t in group_times(times, g.temporal_patch_size)]
    stamp_sums = [0, *itertools.accumulate(stamps)]  # prefix sums over groups

    def span_tokens(a: int, b: int, w: int, h: int) -> int:  # video span of groups [a, b)
        return (b - a) * ((w // g.factor) * (h // g.factor) + 2) + stamp_sums[b] - stamp_sums[a]

    n_groups = len(stamps)
    min_size = smallest_frame_size(info.width, info.height, min_pixels, g.factor)
    if max(span_tokens(i, i + 1, *min_size) for i in range(n_groups)) > budget:
        raise ContextTooSmallError(
            f"a context of {context:,} tokens cannot hold even one frame group at "
            f"{min_size[0]}x{min_size[1]} plus the prompt and a {reserve:,}-token reserve; "
            "raise the context length"
        )
    # The fewest equal parts that fit. Fewer than total / budget parts cannot fit, so start there
    # (counting up from 1 costs O(parts^2) on long videos); n_groups parts always fit (checked above).
    first = max(1, math.ceil(span_tokens(0, n_groups, *min_size) / budget))
    if first > MAX_SEGMENTS:
        raise ContextTooSmallError(
            f"at {fps:g} fps this video would need over {MAX_SEGMENTS} segments of {context:,} tokens; "
            "raise the context length or lower the fps"
        )
    for parts in range(first, n_groups + 1):
        spans = [(round(n_groups * i / parts), round(n_groups * (i + 1) / parts)) for i in range(parts)]
        if max(span_tokens(a, b, *min_size) for a, b in spans) <= budget:
            break

    # The largest size that fits every span, tried from max_pixels down in steps of one token.
    size = min_size
    for area_tokens in range(max_pixels // g.factor**2, 0, -1):
        candidate = frame_size(info.width, info.height, area_tokens * g.factor**2, g.factor)
        if candidate[0] * candidate[1] <= min_size[0] * min_size[1]:
            break
        if all(span_tokens(a, b, *candidate) <= budget for a, b in spans):
            size = candidate
            break

    w, h = size
    k = g.temporal_patch_size
    segments = tuple(
        Segment(
            index=i,
            start=times[a * k],
            end=times[b * k] if b * k < len(times) else stop,
            frames=min(b * k, len(times)) - a * k,
            tokens=span_tokens(a, b, w, h) + prompt_tokens,
        )
        for i, (a, b) in enumerate(spans)
    )
    video_tokens = span_tokens(0, n_groups, w, h)
    largest = max(s.tokens for s in segments)
    return Plan(
        fps=fps,
        width=w,
        height=h,
        frames=len(times),
        groups=n_groups,
        tokens_per_group=(w // g.factor) * (h // g.factor),
        video_tokens=video_tokens,
        prompt_tokens=prompt_tokens,
        tokens=video_tokens + prompt_tokens,
        context=context,
        reserve=reserve,
        kv_cache_bytes=(largest + reserve) * g.kv_bytes_per_token,
        segments=segments,
        kv_cache_dtype=g.kv_cache_dtype,
        start=start,
        end=end,
    )


def plan_video(
    info: VideoInfo,
    options: Options,
    context: int,
    prompt: str = "",
    geometry: Geometry | None = None,
    *,
    start: float = 0.0,
    end: float | None = None,
    speech_tokens: int = 0,
) -> Plan:
    """``make_plan`` with the sampling and context settings of ``options``, for the range ``[start, end)``
    seconds of the video (the whole video by default), ``speech_tokens`` of transcript beside the prompt."""
    return make_plan(
        info,
        options.sampling.fps,
        context,
        reserve=options.context.reserve_tokens,
        prompt=prompt,
        min_pixels=options.sampling.min_pixels,
        max_pixels=options.sampling.max_pixels,
        geometry=geometry,
        start=start,
        end=end,
        speech_tokens=speech_tokens,
    )


# --- time range -------------------------------------------------------------------------------------------

TIME_EXAMPLES = "seconds (90), minutes:seconds (1:30) or hours:minutes:seconds (01:00:00)"


def parse_time(text: str, name: str = "time") -> float:
    """Seconds of a time a person typed (``90``, ``1:30``, ``01:00:00``, ``1m30s``...); ``name`` says
    which field in the error (OptionsError)."""
    try:
        seconds = parse_timestamp(text)
    except ValueError:
        raise OptionsError(f"{name}: {text.strip()!r} is not a time; write {TIME_EXAMPLES}") from None
    if not math.isfinite(seconds):
        raise OptionsError(f"{name}: {text.strip()!r} is not a time; write {TIME_EXAMPLES}")
    return seconds


def parse_range(
    start: str | None, end: str | None, names: tuple[str, str] = ("start", "end")
) -> tuple[float, float | None]:
    """(start, end) seconds from two typed times; an empty start is 0, an empty end the video's end
    (None). Whether they fit a video is :func:`check_range`'s part."""
    first = parse_time(start, names[0]) if start and start.strip() else 0.0
    last = parse_time(end, names[1]) if end and end.strip() else None
    return first, last


def check_range(start: float, end: float | None, duration: float) -> tuple[float, float | None]:
    """``(start, end)`` checked against a video of ``duration`` seconds: start inside the video, end after
    start and not past the end (by more than DURATION_TOLERANCE, the rounding of a shown duration). An end
    at or past the video's end is returned as None (to the end), so the same range always reads the same.
    Raises OptionsError with what is wrong."""
    start = float(start)
    if not (math.isfinite(start) and start >= 0):
        raise OptionsError(f"the range must start at a time >= 0, got {start!r}")
    shown = format_timestamp(duration)
    if start > 0 and start >= duration:  # (at 0: the whole video, however short; make_plan says if too short)
        raise OptionsError(
            f"the range starts at {format_timestamp(start)}, at or after the end of the video ({shown})"
        )
    if end is None:
        return start, None
    end = float(end)
    if not (math.isfinite(end) and end > start):
        raise OptionsError(
            f"the range must end after it starts: {_clock(end)} is not after {format_timestamp(start)}"
        )
    if end > duration + DURATION_TOLERANCE:
        raise OptionsError(
            f"the range ends at {format_timestamp(end)}, after the end of the video ({shown}); "
            "leave the end empty to read to the end"
        )
    return start, None if end >= duration else end


def describe_range(start: float, end: float | None) -> str:
    """``01:00:00–01:10:00``, or ``from 01:00:00`` when it runs to the end."""
    hours = max(start, end or 0.0) >= 3600
    if end is None:
        return f"from {format_timestamp(start, hours)}"
    return f"{format_timestamp(start, hours)}–{format_timestamp(end, hours)}"


def _clock(seconds: float) -> str:
    return format_timestamp(seconds) if math.isfinite(seconds) and seconds >= 0 else f"{seconds:g}"


def group_times(times: list[float], group: int = 2) -> list[float]:
    """The timestamp the processor writes for each group: the mean of its first and last frame time.

    Mirrors ``Qwen3VLProcessor._calculate_timestamps`` with frame times rounded to milliseconds (we pass
    ``fps=1000`` and ``frames_indices = round(t * 1000)``); a short last group repeats its last frame.
    """
    ms = [round(t * 1000) for t in times]
    if len(ms) % group:
        ms += [ms[-1]] * (group - len(ms) % group)
    return [(ms[i] / 1000 + ms[i + group - 1] / 1000) / 2 for i in range(0, len(ms), group)]


# --- device memory ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """Device memory (bytes) for the weights, a KV cache as long as the whole context, and headroom.

    The cache is counted at the full context, not at the video's length: a conversation grows into it.
    """

    kv_cache_dtype: str
    context: int  # tokens the KV cache is counted for
    kv_bytes_per_token: int
    weights_bytes: int
    kv_bytes: int  # context * kv_bytes_per_token
    headroom_bytes: int  # ACTIVATION_HEADROOM_BYTES
    device_bytes: int | None  # the device planned for; None: no particular device

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.headroom_bytes

    @property
    def fits(self) -> bool | None:
        """Whether weights, KV cache and headroom fit the device; None without a device."""
        return None if self.device_bytes is None else self.total_bytes <= self.device_bytes

    def summary(self) -> str:
        """One line: the sum, and against the device's memory whether it fits."""
        gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
        line = (
            f"weights {gib(self.weights_bytes)} + KV cache {gib(self.kv_bytes)} ({self.kv_cache_dtype}, "
            f"{self.context:,} tokens) + headroom {gib(self.headroom_bytes)} = {gib(self.total_bytes)}"
        )
        if self.device_bytes is None:
            return line
        return f"{line} of {gib(self.device_bytes)}: {'fits' if self.fits else 'does not fit'}"


def memory_plan(
    context: int,
    geometry: Geometry | None = None,
    device_bytes: int | None = None,
    *,
    weights_bytes: int = QWEN3VL_2B_WEIGHTS_BYTES,
    headroom_bytes: int = ACTIVATION_HEADROOM_BYTES,
) -> MemoryPlan:
    """The memory of a ``context``-token KV cache in ``geometry``'s dtype beside the weights, on a device of
    ``device_bytes``. Defaults: Qwen3-VL-2B in bfloat16."""
    g = geometry or Geometry()
    return MemoryPlan(
        kv_cache_dtype=g.kv_cache_dtype,
        context=context,
        kv_bytes_per_token=g.kv_bytes_per_token,
        weights_bytes=weights_bytes,
        kv_bytes=context * g.kv_bytes_per_token,
        headroom_bytes=headroom_bytes,
        device_bytes=device_bytes,
    )


def kv_budget_bytes(
    device_bytes: int,
    weights_bytes: int = QWEN3VL_2B_WEIGHTS_BYTES,
    headroom_bytes: int = ACTIVATION_HEADROOM_BYTES,
) -> int:
    """Device memory left for the KV cache once the weights and the headroom are counted."""
    return device_bytes - weights_bytes - headroom_bytes


def context_that_fits(budget_bytes: int, kv_bytes_per_token: int, cap: int) -> int:
    """The largest context whose KV cache fits ``budget_bytes``: a multiple of AUTO_CONTEXT_STEP, at least
    AUTO_CONTEXT_MIN, at most ``cap`` tokens."""
    tokens = max(0, budget_bytes) // kv_bytes_per_token
    return int(max(AUTO_CONTEXT_MIN, min(cap, tokens // AUTO_CONTEXT_STEP * AUTO_CONTEXT_STEP)))


def context_cap(options: ContextOptions, max_positions: int | None = None) -> int:
    """The longest context ``options`` plan for: ``max_context``, or its cap when that is "auto", never past
    ``max_positions`` (the loaded model's ``max_position_embeddings``; None: no model, the options' cap)."""
    planned = options.max_context_cap if options.max_context == "auto" else int(options.max_context)
    return planned if max_positions is None else min(planned, int(max_positions))


def context_length(
    options: ContextOptions, kv_bytes_per_token: int, free_bytes: int, max_positions: int | None = None
) -> int:
    """The context length for ``options``: ``max_context`` as given, or for "auto" the largest whose KV
    cache (``kv_bytes_per_token``, in the dtype the cache will use) fits ``free_bytes`` less
    ACTIVATION_HEADROOM_BYTES; both at most :func:`context_cap`."""
    cap = context_cap(options, max_positions)
    if options.max_context != "auto":
        return cap
    return context_that_fits(free_bytes - ACTIVATION_HEADROOM_BYTES, kv_bytes_per_token, cap)


def choose_kv_cache_dtype(
    requested: str,
    unquantized: str,
    context: int,
    kv_shape: tuple[int, int, int],
    budget_bytes: int | None,
) -> str:
    """What the KV cache is stored in for ``context.kv_cache_dtype = requested``: "float8" or ``unquantized``.

    ``unquantized`` is the model's dtype (bfloat16 on GPUs, float32 on the CPU): the option's "bfloat16"
    means "not quantized". "auto" quantizes only when the unquantized cache at ``context`` tokens would not
    fit ``budget_bytes`` (None: no limit known, so not quantized). ``kv_shape``: layers, KV heads, head_dim.
    """
    if requested == "float8":
        return "float8"
    unquantized_bytes = context * kv_bytes_per_token(*kv_shape, unquantized)
    if requested == "auto" and budget_bytes is not None and unquantized_bytes > budget_bytes:
        return "float8"
    return unquantized


def parse_size(text: str) -> int:
    """Bytes of a size such as "24GB", "24GiB", "80G" or "1.5TB" (SIZE_UNITS), or of a plain number."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if unit not in SIZE_UNITS or float(match.group(1)) <= 0:
        raise OptionsError(f"expected a memory size such as 24GB, 24GiB or 80G, got {text!r}")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


# --- prefill chunks ---------------------------------------------------------------------------------------

# context.prefill_chunk_size = "auto": the largest multiple of AUTO_CHUNK_STEP tokens whose transient memory
# (chunk_bytes_per_token) fits the memory left beside the weights and the KV cache, capped at
# AUTO_CHUNK_BUDGET_BYTES, within [AUTO_CHUNK_MIN, AUTO_CHUNK_MAX]. Fewer, larger chunks are faster: on the
# 2-core CPU a 36.6K-token prefill in 2,048-token chunks took 6 % longer than in 16,384-token ones when
# quiet and about 30 % more CPU time when loaded, and 8,192 or 16,384 the same as one pass
# (bench/RESULTS_engine.md).
AUTO_CHUNK_MIN = 2048  # tokens: the former fixed size, within ACTIVATION_HEADROOM_BYTES
AUTO_CHUNK_MAX = 16384  # tokens: beyond this no faster, and a Stop waits for one chunk at most
AUTO_CHUNK_STEP = 1024  # tokens
AUTO_CHUNK_BUDGET_BYTES = 2 * 2**30  # one chunk's activations, queued features and attention mask, at most
CHUNK_SLACK = 2  # chunk_bytes_per_token's count of live tensors times this: temporaries, allocator slack


def chunk_bytes_per_token(config: Any, element_bytes: int, masked: bool, keys: int) -> int:
    """Transient bytes one token of a prefill chunk costs beyond the KV cache, times CHUNK_SLACK.

    A layer's live activations (residual, norm, queries, keys and values with their rotated copies,
    attention output, the MLP's gate, up and product), the split attention's float32 merge on the CPU, the
    token's queued vision features (main and DeepStack rows), and where the attention takes an explicit
    mask (sdpa or eager on a GPU, chunks after the first), its row over ``keys`` keys: a boolean and the
    additive bias made from it (eager also its scores and their float32 softmax).
    """
    text_config = config.text_config
    hidden = text_config.hidden_size
    head_dim = getattr(text_config, "head_dim", None) or hidden // text_config.num_attention_heads
    queries = text_config.num_attention_heads * head_dim
    kv = text_config.num_key_value_heads * head_dim
    intermediate = getattr(text_config, "intermediate_size", None) or 4 * hidden
    layer = element_bytes * (4 * hidden + 2 * (queries + 2 * kv) + 3 * intermediate)
    merge = 4 * 3 * queries
    deepstack = len(getattr(config.vision_config, "deepstack_visual_indexes", ()))
    media = element_bytes * hidden * (1 + deepstack)
    mask = 0
    if masked:
        mask = keys * (1 + element_bytes)
        if text_config._attn_implementation == "eager":
            mask += keys * text_config.num_attention_heads * (element_bytes + 4)
    return CHUNK_SLACK * (layer + merge + media + mask)


def auto_chunk_tokens(bytes_per_token: int, free_bytes: int) -> int:
    """``context.prefill_chunk_size = "auto"``: the most tokens whose ``bytes_per_token`` fit ``free_bytes``
    (capped at AUTO_CHUNK_BUDGET_BYTES), a multiple of AUTO_CHUNK_STEP in [AUTO_CHUNK_MIN, AUTO_CHUNK_MAX]."""
    budget = min(AUTO_CHUNK_BUDGET_BYTES, max(0, free_bytes))
    tokens = budget // max(1, bytes_per_token) // AUTO_CHUNK_STEP * AUTO_CHUNK_STEP
    return int(min(AUTO_CHUNK_MAX, max(AUTO_CHUNK_MIN, tokens)))
