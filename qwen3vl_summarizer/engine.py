"""A loaded Qwen3-VL and its video sessions: bounded vision batches, chunked prefill, streaming, cache reuse.

A :class:`VideoSession` holds one video in a KV cache. Its first ``ask()`` decodes frames, encodes them
in batches of temporal groups, and prefills the language model chunk by chunk as features arrive, so
peak memory is weights + KV cache + O(chunk) whatever the video's length. Later ``ask()`` calls only
prefill the new tokens: the conversation so far stays in the cache.

Prompt layout (one user turn, video first so its KV prefix survives a change of prompt)::

    <|im_start|>user\\n<0.5 seconds><|vision_start|><|video_pad|>*n<|vision_end|><2.5 seconds>...PROMPT
    <|im_end|>\\n<|im_start|>assistant\\n

Each temporal group gets its own ``<|vision_start|>…<|vision_end|>`` after its timestamp, and there is
no outer ``<|vision_start|>``/``<|vision_end|>`` pair around the whole video. That is what Qwen's own
processor (transformers 4.57) feeds the model; transformers 5.x's chat template + processor, and vLLM
0.32 (checked with its ``/tokenize``), add an outer pair (two extra tokens) around it: the vLLM backend
(``remote.py``) counts what vLLM builds, and ``tests/test_vllm.py`` checks it against the server. The span is made
by the real processor: we hand it only the ``<|video_pad|>`` token to expand, never the template's
triple. ``tests/test_engine.py`` pins the exact token sequence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import attention, device
from .attention import float8_kv_attention
from .chat_template import ChatTemplate
from .errors import (
    Cancelled,
    DamagedVideoError,
    OptionsError,
    OutOfMemoryError,
    SessionBrokenError,
    VideoGoneError,
    first_line,
)
from .events import Event, Progress, Response, TextDelta, TurnStats
from .feature_cache import CachedFeatures, FeatureCache
from .kv_cache import growing_cache
from .options import ContextOptions, GenerationOptions
from .plan import (
    Geometry,
    auto_chunk_tokens,
    choose_kv_cache_dtype,
    chunk_bytes_per_token,
    context_cap,
    kv_budget_bytes,
    kv_bytes_per_token,
)
from .plan import context_length as plan_context_length
from .video import Frame

log = logging.getLogger(__name__)

DECODER_THREAD_PREFIX = "video-sampler"  # video.py's decoding threads are named so (_vision_threads)


# ----------------------------------------------------------------------------------------------------
# The model


class Engine:
    """One loaded model and its processor; makes sessions. One per process."""

    def __init__(self, model: Any, processor: Any, model_id: str):
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.config = model.config
        self.device = model.device
        self.dtype = model.dtype
        self.tokenizer = processor.tokenizer
        self.media_token_ids = {
            "video": self.config.video_token_id,
            "image": self.config.image_token_id,
        }
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) or self.tokenizer.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, list) else [eos])
        self.eos_token_ids.add(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self._template = ChatTemplate.from_processor(processor)
        self.lock = threading.Lock()  # one forward pass at a time on this model
        self._pixels: torch.Tensor | None = None  # float32 patches of a vision batch, reused (encode_frames)
        # Keys and values come out of the layers in the activations' dtype, which follows the embeddings
        # (model.dtype can name a quantized checkpoint's float8 weights instead).
        self.unquantized_kv_dtype = str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")
        # The positions the model was trained for: no context is planned longer (options keep a cap too).
        self.max_positions = int(self.config.text_config.max_position_embeddings)

    # -- geometry and memory: pure functions of the options asked about -----------------------------

    def geometry(self, context: ContextOptions | None = None) -> Geometry:
        """The token arithmetic of this model (read from its processor, config and tokenizer) and its KV
        bytes per token in the dtype a cache under ``context`` uses (:meth:`kv_cache_dtype_for`; default
        options when None)."""
        kv_cache_dtype = self.kv_cache_dtype_for(context or ContextOptions())
        return dataclasses.replace(
            self._token_geometry,
            kv_bytes_per_token=kv_bytes_per_token(*self.kv_shape, kv_cache_dtype),
            kv_cache_dtype=kv_cache_dtype,
        )

    @functools.cached_property
    def _token_geometry(self) -> Geometry:
        vp = self.processor.video_processor
        template = len(self._template.tokens_before_video(self.tokenizer)) + self._count(
            self._template.after_video + self._template.after_prompt
        )
        return Geometry(
            patch_size=vp.patch_size,
            merge_size=vp.merge_size,
            temporal_patch_size=vp.temporal_patch_size,
            timestamp_base_tokens=self._count("<0.0 seconds>"),
            template_tokens=template,
            count_text_tokens=self._count,
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """What makes this model's vision features what they are: id, revision, dtype, configs."""
        parts = [
            self.model_id,
            str(getattr(self.config, "_commit_hash", None)),
            str(self.dtype),
            self.config.to_json_string(use_diff=False),
            self.processor.video_processor.to_json_string(),
        ]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def kv_shape(self) -> tuple[int, int, int]:
        """Text layers, KV heads and head_dim: what one token's KV cache holds per layer."""
        text = self.config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return text.num_hidden_layers, text.num_key_value_heads, head_dim

    @functools.cached_property
    def weights_bytes(self) -> int:
        """Bytes of the loaded weights and buffers (quantized ones at their stored size)."""
        return int(self.model.get_memory_footprint())

    def kv_cache_dtype_for(self, context: ContextOptions) -> str:
        """What a KV cache under ``context`` is stored in: "float8", or the model's dtype (not quantized).

        "auto" quantizes only on a GPU whose memory, less the weights and ACTIVATION_HEADROOM_BYTES, cannot
        hold the unquantized cache at the planned context (:func:`.plan.context_cap`). It reads the
        device's total memory, not its free memory, so the plan and every session made under the same
        options agree.
        """
        requested = context.kv_cache_dtype
        if requested == "float8" and self.device.type not in ("cpu", "cuda"):
            raise OptionsError(
                f"context.kv_cache_dtype = float8 is not supported on {self.device.type}; use auto or bfloat16"
            )
        total = device.total_bytes(self.device) if requested == "auto" else None
        budget = None if total is None else kv_budget_bytes(total, self.weights_bytes)
        planned = context_cap(context, self.max_positions)
        return choose_kv_cache_dtype(requested, self.unquantized_kv_dtype, planned, self.kv_shape, budget)

    def context_length(self, context: ContextOptions) -> int:
        """The context length for ``context`` ("auto": what the device's free memory holds in the KV-cache
        dtype :meth:`kv_cache_dtype_for` picks), never past :attr:`max_positions`. Reads, changes nothing."""
        per_token = kv_bytes_per_token(*self.kv_shape, self.kv_cache_dtype_for(context))
        return plan_context_length(context, per_token, device.free_bytes(self.device), self.max_positions)

    # -- vision -------------------------------------------------------------------------------------

    def encode_frames(self, frames: list[Frame]) -> _Rows:
        """Token ids, MRoPE positions (from 0) and vision features of a run of whole temporal groups."""
        from transformers.video_utils import VideoMetadata

        video = np.stack([f.image for f in frames])  # [T, H, W, 3] uint8
        metadata = VideoMetadata(
            total_num_frames=len(frames),
            fps=1000.0,  # frames_indices in milliseconds: the processor writes each frame's real time
            frames_indices=[round(f.t * 1000) for f in frames],
            width=video.shape[2],
            height=video.shape[1],
        )
        with self.lock:
            if self._patchify_here(video):
                inputs = self._video_inputs(video, metadata)
            else:
                inputs = self.processor(
                    text=[self.processor.video_token],
                    videos=[video],
                    video_metadata=[metadata],
                    do_sample_frames=False,  # we sampled the frames
                    do_resize=False,  # the plan chose the size; the sampler produced exactly it
                    cap_pixels_per_frame=False,  # nor cap its pixels (and do not warn that we do not)
                    return_tensors="pt",
                )
            del video
            return self._encode_media(inputs, "video", threads=_vision_threads(self.device))

    def _patchify_here(self, video: np.ndarray) -> bool:
        """Whether :meth:`_video_inputs` can stand in for the processor on ``video`` [T, H, W, 3]: a processor
        that writes a video's text with ``replace_video_token`` and marks its tokens with
        ``create_mm_token_type_ids`` (transformers 5.x), rescales and normalises, and frames whose sides are
        whole merged patches (the plan's sizes are)."""
        vp = self.processor.video_processor
        side = vp.patch_size * vp.merge_size
        return (
            all(hasattr(self.processor, f) for f in ("replace_video_token", "create_mm_token_type_ids"))
            and bool(vp.do_rescale and vp.do_normalize)
            and video.shape[1] % side == 0
            and video.shape[2] % side == 0
        )

    def _video_inputs(self, video: np.ndarray, metadata: Any) -> dict[str, torch.Tensor]:
        """What ``processor(text=[video token], videos=[video], video_metadata=[metadata])`` returns, the
        frames patchified here straight into the kept float32 buffer (callers hold the lock).

        The processor still writes the text (``replace_video_token``: each temporal group's timestamp and
        placeholders), its tokenizer reads it and it marks the video's tokens; the pixels are its patch
        layout, its padding of the last group and its fused rescale and normalisation, equal bit for bit
        (tests/test_engine.py). One copy of the frames instead of the processor's four and a conversion:
        42 against 53-70 ms of CPU time per 32-group batch on the 2-core CPU.
        """
        vp = self.processor.video_processor
        t, h, w, c = video.shape
        tp, p, m = vp.temporal_patch_size, vp.patch_size, vp.merge_size
        if pad := -t % tp:  # the processor repeats the last frame to fill the last temporal group
            video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
            t += pad
        grid = torch.tensor([[t // tp, h // p, w // p]])
        text = self.processor.replace_video_token({"video_grid_thw": grid, "video_metadata": [metadata]}, 0)
        ids = self.processor.tokenizer([text], return_tensors="pt")["input_ids"]  # [1, n]
        inputs = {
            "input_ids": ids,
            "mm_token_type_ids": torch.tensor(self.processor.create_mm_token_type_ids(ids)),
        }
        patches = torch.from_numpy(video).view(t // tp, tp, h // p // m, m, p, w // p // m, m, p, c)
        patches = patches.permute(0, 2, 5, 3, 6, 8, 1, 4, 7)  # [T/tp, H/P/m, W/P/m, m, m, C, tp, P, P]
        pixels = self._pixels_buffer(patches.shape).copy_(patches).view(-1, c * tp * p * p)  # [N, C*tp*P*P]
        inputs["pixel_values_videos"] = _normalize_in_place(pixels, vp)
        inputs["video_grid_thw"] = grid
        return inputs

    def release_scratch(self) -> None:
        """Free the vision batches' float32 buffer (a video's frames are all encoded)."""
        with self.lock:
            self._pixels = None

    def _pixels_buffer(self, shape: torch.Size) -> torch.Tensor:
        """A float32 tensor of ``shape`` in the buffer kept from the last vision batch (callers hold the
        lock). A fresh one per batch (88 MB for 32 groups at 448x256) pays its page faults every time:
        about 30 ms of CPU time per batch on the 2-core CPU, where filling a kept one takes 5 ms."""
        n = shape.numel()
        if self._pixels is None or self._pixels.numel() < n:
            self._pixels = torch.empty(n, dtype=torch.float32)
        return self._pixels[:n].view(shape)

    def encode_image(self, image: np.ndarray) -> _Rows:
        """Token ids, positions and vision features of one image (the processor picks its size)."""
        inputs = self.processor(text=[self.processor.image_token], images=[image], return_tensors="pt")
        with self.lock:
            return self._encode_media(inputs, "image")

    @torch.inference_mode()
    def _encode_media(self, inputs: Any, kind: str, threads: int | None = None) -> _Rows:
        """``threads``: CPU threads for the vision tower (None: as set). Callers hold the lock."""
        ids = inputs["input_ids"][0]  # [n]
        grid_key, pixel_key = (
            ("video_grid_thw", "pixel_values_videos")
            if kind == "video"
            else (
                "image_grid_thw",
                "pixel_values",
            )
        )
        grid = inputs[grid_key]
        inner = self.model.model
        positions, _ = inner.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            **{grid_key: grid},
        )  # [3, 1, n], starting at 0
        with (
            _torch_threads(threads),
            attention.batched_vision_attention(self.model),
            attention.linear_patch_embed(self.model),
        ):
            out = (inner.get_video_features if kind == "video" else inner.get_image_features)(
                inputs[pixel_key].to(self.device), grid.to(self.device), return_dict=True
            )
        embeds = torch.cat(out.pooler_output)  # [m, D]
        deepstack = [torch.cat(f) for f in out.deepstack_features]  # layers x [m, D]
        return _Rows(ids=ids, positions=positions[:, 0], embeds=embeds, deepstack=deepstack)

    def session(
        self, frames: Iterable[Frame] | None, total_frames: int | None = None, **kwargs: Any
    ) -> VideoSession:
        return VideoSession(self, frames, total_frames=total_frames, **kwargs)


# ----------------------------------------------------------------------------------------------------
# Sessions


@dataclass
class _Rows:
    """Tokens waiting to be prefilled: ids [n], positions [3, n], features of their media tokens [m, D]."""

    ids: torch.Tensor
    positions: torch.Tensor
    embeds: torch.Tensor | None = None
    deepstack: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def shifted(self, offset: int) -> _Rows:
        return _Rows(self.ids, self.positions + offset, self.embeds, self.deepstack)

    def split(self, n: int, media_mask: torch.Tensor) -> tuple[_Rows, _Rows]:
        """The first ``n`` tokens and the rest; ``media_mask`` marks media tokens of all rows."""
        m = int(media_mask[:n].sum())
        head = _Rows(self.ids[:n], self.positions[:, :n])
        tail = _Rows(self.ids[n:], self.positions[:, n:])
        if self.embeds is not None:
            head.embeds, tail.embeds = self.embeds[:m], self.embeds[m:]
            head.deepstack = [d[:m] for d in self.deepstack]
            tail.deepstack = [d[m:] for d in self.deepstack]
        return head, tail

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]  # no copy: a whole video read from the feature cache is one part
        with_media = [p for p in parts if p.embeds is not None and len(p.embeds)]
        rows = _Rows(torch.cat([p.ids for p in parts]), torch.cat([p.positions for p in parts], dim=1))
        if with_media:
            rows.embeds = torch.cat([p.embeds for p in with_media])
            rows.deepstack = [
                torch.cat(layer) for layer in zip(*(p.deepstack for p in with_media), strict=True)
            ]
        return rows


@dataclass
class Turn:
    question: str
    prompt_ids: list[int]  # the turn's own tokens: opener, question, generation prompt
    answer_ids: list[int] = field(default_factory=list)  # generated tokens, end-of-turn excluded
    text: str = ""


def kept_turns(turns: list[Turn], branch: int | None, broken: str | None) -> list[Turn]:
    """The turns a new question follows: all of them, or the first ``branch`` (asking again from there).
    Raises ValueError for a branch past the conversation, SessionBrokenError once ``broken`` says why the
    session can no longer be used."""
    if branch is not None and not 0 <= branch <= len(turns):
        raise ValueError(f"branch must be in 0..{len(turns)}, got {branch}")
    if broken:
        raise SessionBrokenError(f"this session can no longer be used ({broken}); open the video again")
    return turns if branch is None else turns[:branch]


class VideoSession:
    """One video (or one image, or none: a text chat) in a KV cache, and a conversation about it.

    ``ask(question)`` yields :class:`Progress`, :class:`TextDelta` and finally :class:`TurnStats`.
    The first call reads and prefills the video; later calls only prefill their own tokens. ``branch=k``
    replaces turn ``k`` and drops the later ones (``branch=0`` changes the prompt), reusing the cached
    prefix they share. A ``cancel`` event stops work within one chunk or token: the turn is dropped and
    the session stays usable (an interrupted video read resumes where it stopped).

    Without ``frames`` but with a ``feature_key``, the video is the feature cache's entry alone (a video
    reopened from the library whose file is gone): the same path a released session rebuilds by, and
    :class:`~.errors.VideoGoneError` when the entry has gone too.
    """

    def __init__(
        self,
        engine: Engine,
        frames: Iterable[Frame] | None = None,
        *,
        total_frames: int | None = None,
        image: np.ndarray | None = None,
        context: ContextOptions | None = None,
        generation: GenerationOptions | None = None,
        max_context: int | None = None,
        expected_tokens: int | None = None,
        cache_reuse: bool = True,
        feature_cache: FeatureCache | None = None,
        feature_key: str | None = None,
        speech: str | Callable[[threading.Event | None], Iterator[Event]] | None = None,
    ):
        if frames is not None and image is not None:
            raise ValueError("a session holds frames or an image (or neither, for text), not both")
        self.engine = engine
        self.context = context or ContextOptions()
        self.generation = generation or GenerationOptions()
        self.max_context = max_context
        self.cache_reuse = cache_reuse
        self.total_frames = total_frames
        self.turns: list[Turn] = []
        self.frames_read = 0
        self._source = frames  # kept to read its ``damage`` once read
        self._frames = iter(frames) if frames is not None else None
        self.damage: str | None = None  # set when the video was damaged and read only up to the damage
        self.feature_cache = feature_cache if feature_key is not None else None
        self.feature_key = feature_key
        # No frames but a feature key: the media is the cached features alone (a video reopened from the
        # library whose file is gone); their loss is a VideoGoneError, not a session without a video.
        self.features_only = frames is None and image is None and feature_key is not None
        self.features_from_cache = False
        self._image = image
        layers = engine.config.text_config.num_hidden_layers
        capacity = min(max_context or 32_768, expected_tokens or 32_768)
        self._capacity = capacity  # tokens the KV cache is first allocated for
        self.kv_cache_dtype = engine.kv_cache_dtype_for(self.context)  # "float8" or the model's dtype
        self._new_cache = lambda: growing_cache(layers, capacity, self.kv_cache_dtype)
        self.cache = self._new_cache()
        # What the cache holds: token ids, their MRoPE positions [3, L], and the next free position.
        self.ids: list[int] = []
        self._positions = torch.zeros(3, 1024, dtype=torch.long)  # grows by doubling; [:, :len(ids)] used
        self.next_position = 0
        self.timestamps: list[float] = []  # times (s) of the frames read, in order
        self._pending: list[_Rows] = []  # tokens read but not yet prefilled
        self._batch: list[Frame] = []  # frames read but not yet encoded
        self._started = False
        self._media_done = False
        self._broken: str | None = None
        # Media rows kept on the CPU: to recompute turns without cache reuse, and for the feature cache.
        self._media_rows: list[_Rows] | None = [] if not cache_reuse or self.feature_cache else None
        self._features_unstored = False  # read afresh and not yet in the feature cache
        self._media_len = 0  # tokens of the prefix through the media, once read
        # What is said in the video, as text right after it (summarize.speech_block): part of the reusable
        # prefix, so a new prompt or a follow-up keeps it. Tokenized as plain text: a transcript that
        # contains "<|im_start|>" must not open a chat turn. Or a generator function of the cancel event
        # that returns the text, yielding Progress while it waits: called after the last frame, so speech
        # recognition can run while the frames are read (summarize.PendingTranscript).
        self._speech_later = speech if callable(speech) else None
        self._speech_ids: list[int] = self._speech_tokens(speech) if isinstance(speech, str) else []
        self._speech_rows: _Rows | None = None  # once queued, kept to recompute without cache reuse

    # -- public -------------------------------------------------------------------------------------

    @property
    def positions(self) -> torch.Tensor:
        """MRoPE positions [3, L] of the cached tokens."""
        return self._positions[:, : len(self.ids)]

    @property
    def media_tokens(self) -> int:
        """Tokens of the chat prefix and the video (or image), once read."""
        return self._media_len

    def ask(
        self, question: str, *, branch: int | None = None, cancel: threading.Event | None = None
    ) -> Response:
        """The answer to ``question`` (a prompt or a follow-up): iterate it to stream its events."""
        kept = kept_turns(self.turns, branch, self._broken)
        turn = Turn(question, self.engine._template.turn_ids(self.engine.tokenizer, question, first=not kept))
        if self.max_context is not None and self._media_done:  # refuse now, not after minutes of prefill
            history = sum(len(t.prompt_ids) + len(t.answer_ids) for t in kept)
            needed = self._media_len + history + len(turn.prompt_ids) + 1  # + at least one answer token
            if needed > self.max_context:
                raise OptionsError(
                    f"the conversation would exceed the context length ({needed:,} > {self.max_context:,} "
                    "tokens); ask a shorter question, start a new conversation or raise the context length"
                )
        return Response(self._run_turn(kept, turn, cancel))

    # -- the turn -----------------------------------------------------------------------------------

    def _run_turn(self, kept: list[Turn], turn: Turn, cancel: threading.Event | None) -> Iterator[Event]:
        t_start = time.perf_counter()
        timings = {"frames": 0.0, "vision": 0.0, "prefill": 0.0}
        before = (list(self.turns), len(self.ids))
        computed = 0
        fresh = not self._media_done
        try:
            if not self._media_done:
                computed += yield from self._read_media(cancel, timings)
            history = [t for k in kept for t in (*k.prompt_ids, *k.answer_ids)]
            wanted = self.ids[: self._media_len] + history + turn.prompt_ids
            if not self.cache_reuse and not fresh:
                self._rewind(0)
                computed += yield from self._prefill_media_again(cancel)
            # Keep the longest cached prefix; at least one token is recomputed to get fresh logits.
            shared = _common_prefix(self.ids, wanted, limit=len(wanted) - 1)
            self._rewind(max(shared, self._media_len))
            new = wanted[len(self.ids) :]
            self.turns = [*kept, turn]
            t0 = time.perf_counter()
            self._pending.append(self._text_rows(new))
            logits = None
            total = sum(len(p) for p in self._pending)
            done = 0
            for n, out in self._prefill(cancel, final=True):
                done += n
                logits = out if out is not None else logits
                yield Progress("prefill", done, total)
            computed += total
            timings["prefill"] += time.perf_counter() - t0
            stats = yield from self._decode(turn, logits, cancel, t_start, computed, timings)
            stats = dataclasses.replace(stats, read_video=fresh and not self.features_from_cache)
        except BaseException as e:
            # Cancelled, failed or abandoned (GeneratorExit): drop this turn, keep the session usable.
            # An interrupted video read keeps what it read and resumes on the next ask.
            self.turns = before[0]
            if self._media_done:
                self._store_features()  # the video was read whole: its features stand
                self._pending = []
                self._rewind(max(before[1], self._media_len))
            elif not isinstance(e, (Cancelled, GeneratorExit, VideoGoneError)):  # nothing read: intact
                self._broken = f"reading the video failed: {first_line(e)}"
            if device.is_out_of_memory(e):
                device.empty_cache(self.engine.device)
                raise OutOfMemoryError(
                    "out of memory: lower the fps or the context length, or use a quantized model"
                ) from None
            raise
        # Outside the try: a consumer that stops reading at the stats must not roll the turn back.
        yield stats

    def _decode(
        self,
        turn: Turn,
        logits: torch.Tensor,
        cancel: threading.Event | None,
        t_start: float,
        computed: int,
        timings: dict[str, float],
    ) -> Iterator[Event]:
        """Sample the answer, yielding TextDelta; returns the TurnStats."""
        g = self.generation
        tok = self.engine.tokenizer
        processors = _logits_processors(g)
        context_ids = torch.tensor([self.ids], dtype=torch.long)  # the repetition penalty looks at all of it
        ttft = None
        t_first = time.perf_counter()
        limit = g.max_new_tokens
        if self.max_context is not None:
            limit = max(1, min(limit, self.max_context - len(self.ids)))
        shown = ""
        for step in range(limit):
            _check(cancel)
            scores = processors(context_ids, logits.float())
            if g.temperature > 0:
                next_id = int(torch.multinomial(torch.softmax(scores, dim=-1), 1)[0, 0])
            else:
                next_id = int(scores.argmax(-1)[0])
            if ttft is None:
                ttft = time.perf_counter() - t_start
                t_first = time.perf_counter()
            if next_id in self.engine.eos_token_ids:
                break
            turn.answer_ids.append(next_id)
            text = tok.decode(turn.answer_ids, skip_special_tokens=True)
            delta = ""
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                delta, shown = text[len(shown) :], text
            yield TextDelta(delta, next_id)
            self._store_features()  # after the first token (0.3-0.5 s for 10 minutes on the 2-core CPU)
            if step == limit - 1:
                break
            context_ids = torch.cat([context_ids, torch.tensor([[next_id]])], dim=1)
            logits = self._step(next_id)
        elapsed = time.perf_counter() - t_first
        self._store_features()  # an answer without a token
        turn.text = tok.decode(turn.answer_ids, skip_special_tokens=True)
        if turn.text != shown:  # an incomplete character at the very end
            yield TextDelta(turn.text[len(shown) :], None)
        n = len(turn.answer_ids)
        return TurnStats(
            question=turn.question,
            text=turn.text,
            tokens=list(turn.answer_ids),
            prefill_tokens=computed,
            ttft_s=ttft if ttft is not None else time.perf_counter() - t_start,
            decode_tokens_per_s=(n - 1) / elapsed if n > 1 and elapsed > 0 else 0.0,
            timings=timings,
        )

    # -- reading the media --------------------------------------------------------------------------

    def _read_media(self, cancel: threading.Event | None, timings: dict[str, float]) -> Iterator[Event]:
        """Decode, encode and prefill the video (resumable after a cancel). Returns tokens computed."""
        engine = self.engine
        if not self._started:
            self._pending.append(self._text_rows(engine._template.tokens_before_video(engine.tokenizer)))
            self._started = True
        computed = 0
        if self._image is not None:
            self._queue_media(engine.encode_image(self._image))
            self._image = None
        group = engine.processor.video_processor.temporal_patch_size
        batch_frames = self.context.vision_batch_groups * group
        frames = self._frames or iter(())
        if self.feature_cache is not None and self.frames_read == 0 and self._load_features():
            frames = self._frames = iter(())  # a resumed read (after a cancel) must not decode either
            yield Progress("frames", self.frames_read, self.frames_read)
        elif self.features_only and self.frames_read == 0:
            raise VideoGoneError(
                "the cached vision features of this video are gone and its file is not at hand: "
                "upload (open) the video again"
            )
        while True:
            _check(cancel)
            t0 = time.perf_counter()
            frame = next(frames, None)
            timings["frames"] += time.perf_counter() - t0
            if frame is not None:
                self._batch.append(frame)
                self.frames_read += 1
                self.timestamps.append(frame.t)
                if self.frames_read % group == 0:
                    yield Progress("frames", self.frames_read, self.total_frames or self.frames_read)
                if len(self._batch) < batch_frames:
                    continue
            if self._batch:
                t0 = time.perf_counter()
                self._queue_media(engine.encode_frames(self._batch))
                timings["vision"] += time.perf_counter() - t0
                yield Progress("vision", self.frames_read, self.total_frames or self.frames_read)
                self._batch = []
            if frame is None and self._speech_later is not None:
                t0 = time.perf_counter()
                # the whole video first, then wait for the text
                for n, _ in self._prefill(cancel, final=True):
                    computed += n
                    yield Progress("prefill", len(self.ids), self._expected_media_tokens())
                timings["prefill"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                self._speech_ids = self._speech_tokens((yield from self._speech_later(cancel)))
                self._speech_later = None
                timings["speech_wait"] = timings.get("speech_wait", 0.0) + time.perf_counter() - t0
            if frame is None and self._speech_ids and self._speech_rows is None:
                self._speech_rows = self._text_rows(self._speech_ids)
                self._pending.append(self._speech_rows)
            t0 = time.perf_counter()
            for n, _ in self._prefill(cancel, final=frame is None):
                computed += n
                yield Progress("prefill", len(self.ids), self._expected_media_tokens())
            timings["prefill"] += time.perf_counter() - t0
            if frame is None:
                break
        if self.frames_read == 0 and self._frames is not None:
            raise DamagedVideoError("no frame could be read from the video")
        if not self.features_from_cache:
            self.damage = getattr(self._source, "damage", None)
            self._features_unstored = True  # written once the first token is out: not in its wait
        self._media_done = True
        self._media_len = len(self.ids)
        engine.release_scratch()
        return computed

    def _load_features(self) -> bool:
        """Queue the video's tokens and features from the feature cache; False on a miss."""
        cached = self.feature_cache.load(self.feature_key)
        if cached is None:
            return False
        target = self.engine.device
        self._queue_media(
            _Rows(
                cached.ids,
                cached.positions,
                cached.embeds.to(target),
                [d.to(target) for d in cached.deepstack],
            )
        )
        self.timestamps = list(cached.times)
        self.frames_read = len(cached.times)
        self.damage = cached.damage
        self.features_from_cache = True
        log.info("read %d frames' vision features from the cache", self.frames_read)
        return True

    def _store_features(self) -> None:
        """Write the video's features to the feature cache, once (a no-op without one, or once written)."""
        if not self._features_unstored:
            return
        self._features_unstored = False
        if self.feature_cache is None or not self._media_rows:
            return
        rows = _Rows.concat(self._media_rows)
        start = int(rows.positions[:, 0].min())  # positions are stored relative to the video's start
        self.feature_cache.store(
            self.feature_key,
            CachedFeatures(
                ids=rows.ids,
                positions=rows.positions - start,
                embeds=rows.embeds,
                deepstack=rows.deepstack,
                times=list(self.timestamps),
                damage=self.damage,
            ),
        )

    def _speech_tokens(self, text: str | None) -> list[int]:
        if not text:
            return []
        return self.engine.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _expected_media_tokens(self) -> int:
        speech = len(self._speech_ids) if self._speech_rows is None else 0  # still to come after the frames
        if not self.total_frames or not self.frames_read:
            return len(self.ids) + sum(len(p) for p in self._pending) + speech
        per_frame = (len(self.ids) + sum(len(p) for p in self._pending)) / self.frames_read
        return int(per_frame * self.total_frames) + speech

    def _queue_media(self, rows: _Rows) -> None:
        rows = rows.shifted(self._next_pending_position())
        if self._media_rows is not None:
            self._media_rows.append(
                _Rows(rows.ids, rows.positions, rows.embeds.cpu(), [d.cpu() for d in rows.deepstack])
            )
        self._pending.append(rows)

    def _prefill_media_again(self, cancel: threading.Event | None) -> Iterator[Event]:
        """Without cache reuse: recompute the prefix and the stored media features from scratch."""
        prefix = self.engine._template.tokens_before_video(self.engine.tokenizer)
        speech = [self._speech_rows] if self._speech_rows is not None else []
        self._pending = [self._text_rows(prefix, start=0), *self._media_rows, *speech]
        total = sum(len(p) for p in self._pending)
        done = 0
        for n, _ in self._prefill(cancel, final=True):
            done += n
            yield Progress("prefill", done, total)
        return total

    # -- the language model -------------------------------------------------------------------------

    def _next_pending_position(self) -> int:
        if self._pending:
            return int(self._pending[-1].positions.max()) + 1
        return self.next_position

    def _text_rows(self, ids: list[int], start: int | None = None) -> _Rows:
        start = self._next_pending_position() if start is None else start
        positions = torch.arange(start, start + len(ids)).expand(3, -1)
        return _Rows(torch.tensor(ids, dtype=torch.long), positions)

    @functools.cached_property
    def prefill_chunk_tokens(self) -> int:
        """Tokens per prefill pass: ``context.prefill_chunk_size``, or for "auto" what the memory allows
        (:func:`auto_chunk_tokens`), settled at the first prefill, before the KV cache is allocated."""
        if self.context.prefill_chunk_size != "auto":
            return int(self.context.prefill_chunk_size)
        engine = self.engine
        per_token = chunk_bytes_per_token(
            engine.config,
            element_bytes=engine.model.get_input_embeddings().weight.element_size(),
            masked=attention.needs_mask(engine.model, self.kv_cache_dtype),
            keys=self._capacity,
        )
        kv_to_come = self._capacity * kv_bytes_per_token(*engine.kv_shape, self.kv_cache_dtype)
        free = device.free_bytes(engine.device) - (0 if self.ids else kv_to_come)
        chunk = auto_chunk_tokens(per_token, free)
        log.debug("prefill chunks of %d tokens (%d bytes per token, %d bytes free)", chunk, per_token, free)
        return chunk

    def _prefill(
        self, cancel: threading.Event | None, final: bool
    ) -> Iterator[tuple[int, torch.Tensor | None]]:
        """Prefill pending tokens in chunks; yields (tokens done, logits of the last one or None)."""
        chunk = self.prefill_chunk_tokens
        while (pending := sum(len(p) for p in self._pending)) > 0:
            if pending < chunk and not final:
                return  # wait for more: the queue is joined only when a chunk is due, not per vision batch
            _check(cancel)
            rows = _Rows.concat(self._pending)
            head, tail = rows.split(min(chunk, len(rows)), self._media_mask(rows.ids))
            last = not len(tail) and final
            logits = self._forward(head, start_pos=len(self.ids), logits=last)
            self._pending = [tail] if len(tail) else []
            yield len(head), logits

    def _media_mask(self, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for token_id in self.engine.media_token_ids.values():
            mask |= ids == token_id
        return mask

    @torch.inference_mode()
    def _forward(self, rows: _Rows, start_pos: int, logits: bool) -> torch.Tensor | None:
        """Run ``rows`` through the language model into cache slots ``start_pos:start_pos + len(rows)``;
        logits [1, V] of the last token if asked. Prefill and decode both come through here: prefill
        with a chunk of the prompt, decode with one sampled token. ``start_pos`` may be any position up
        to the cache's length: what the cache held from there on is dropped first."""
        if start_pos > len(self.ids):
            raise ValueError(f"the cache holds {len(self.ids)} tokens; cannot write at {start_pos}")
        self._rewind(start_pos)
        engine = self.engine
        inner = engine.model.model
        target = engine.device
        ids = rows.ids.to(target)  # [n]
        n, start = len(rows), start_pos
        if self.max_context is not None and start + n > self.max_context:
            raise OptionsError(
                f"the conversation would exceed the context length ({start + n:,} > {self.max_context:,} "
                "tokens); start a new conversation or raise the context length"
            )
        mask = self._media_mask(rows.ids).to(target)
        float8 = self.kv_cache_dtype == "float8"
        deepstack = len(getattr(engine.config.vision_config, "deepstack_visual_indexes", ()))
        with (
            engine.lock,
            attention.cpu_attention_backends(target),
            float8_kv_attention(engine.model) if float8 else contextlib.nullcontext(),
            # a prefill chunk: the last layer only for the last token (decode steps are that already)
            attention.last_layer_for_last_token(engine.model, logits, deepstack)
            if n > 1
            else contextlib.nullcontext(),
        ):
            embeds = inner.get_input_embeddings()(ids[None])  # [1, n, D]
            kwargs: dict[str, Any] = {}
            if rows.embeds is not None and len(rows.embeds):
                embeds[0, mask] = rows.embeds.to(target, embeds.dtype)
                kwargs["visual_pos_masks"] = mask[None]
                kwargs["deepstack_visual_embeds"] = [d.to(target, embeds.dtype) for d in rows.deepstack]
            cache_positions = torch.arange(start, start + n, device=target)
            position_ids = torch.cat([cache_positions[None], rows.positions.to(target)])[
                :, None, :
            ]  # [4, 1, n]
            out = inner.language_model(
                inputs_embeds=embeds, position_ids=position_ids, cache=self.cache, use_cache=True, **kwargs
            )
            result = engine.model.lm_head(out.last_hidden_state[:, -1]) if logits else None  # [1, V]
        self.ids.extend(rows.ids.tolist())
        end = len(self.ids)
        if end > self._positions.shape[1]:
            grown = torch.zeros(3, max(end, 2 * self._positions.shape[1]), dtype=torch.long)
            grown[:, :start] = self._positions[:, :start]
            self._positions = grown
        self._positions[:, start:end] = rows.positions
        self.next_position = max(self.next_position, int(rows.positions.max()) + 1)
        return result

    def _step(self, token_id: int) -> torch.Tensor:
        return self._forward(self._text_rows([token_id]), start_pos=len(self.ids), logits=True)

    def _rewind(self, length: int) -> None:
        """Crop the cache and its bookkeeping back to the first ``length`` tokens."""
        if length >= len(self.ids):
            return
        if length == 0:
            self.cache = self._new_cache()
        else:
            self.cache.crop(length - len(self.ids))  # a negative count removes that many tokens
        self.ids = self.ids[:length]
        self.next_position = int(self._positions[:, :length].max()) + 1 if length else 0


# ----------------------------------------------------------------------------------------------------
# Helpers


def _logits_processors(g: GenerationOptions) -> Any:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if g.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(g.repetition_penalty))
    if g.temperature > 0:  # the same order as transformers' generate()
        procs.append(TemperatureLogitsWarper(g.temperature))
        if g.top_k > 0:
            procs.append(TopKLogitsWarper(g.top_k))
        if g.top_p < 1.0:
            procs.append(TopPLogitsWarper(g.top_p))
    return procs


def _normalize_in_place(pixels: torch.Tensor, vp: Any) -> torch.Tensor:
    """float32 patches [N, C*T*P*P] of 0..255 values (channel outermost, as the processor's patchify lays
    them out) as the processor's pixels: ``(x - mean / rescale) / (std / rescale)`` per channel, its fused
    rescale and normalisation, the same operations in the same order, so the values are identical."""
    mean = torch.as_tensor(vp.image_mean, dtype=torch.float32).reshape(-1) * (1.0 / vp.rescale_factor)
    std = torch.as_tensor(vp.image_std, dtype=torch.float32).reshape(-1) * (1.0 / vp.rescale_factor)
    pixels.view(len(pixels), len(mean), -1).sub_(mean[:, None]).div_(std[:, None])  # [N, C, T*P*P]
    return pixels


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), max(limit, 0))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _vision_threads(device: torch.device) -> int | None:
    """CPU threads for a vision batch: half of torch's while the video's decoding threads still run, else
    None (torch's own count).

    The sampler's threads decode ahead of the reader, so the first vision batches of a video share the
    cores with them. The vision tower is many small operations (attention within each temporal group),
    and each waits for its slowest thread: on the 2-core CPU, one thread for those batches and a core
    left to the decoder made the 10-minute first turn 1-2 s faster (bench/RESULTS_engine.md). Prefill's
    large operations keep every thread.
    """
    if device.type != "cpu" or not any(
        t.name.startswith(DECODER_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate()
    ):
        return None
    return max(1, torch.get_num_threads() // 2)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` while inside (None: unchanged). Callers hold the engine's
    lock, so no other forward pass runs meanwhile."""
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("stopped")
