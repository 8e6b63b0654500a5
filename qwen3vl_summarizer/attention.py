"""Attention for chunked prefill on the CPU: the past without a mask, the chunk causal, merged exactly.

A prefill chunk after the first attends to every cached token and causally to itself. Written as one
sdpa call that needs an explicit mask (chunk x (past + chunk)), and PyTorch's CPU kernels are about 2.5x
slower with a mask than without (a 32K-token prefill in 2K chunks: 5.5 s of attention against 2.1 s for
one causal pass, tiny model shapes). So each such chunk is computed as two unmasked calls of the CPU
flash kernel, which also returns each row's log-sum-exp:

- the chunk's queries over the past keys, no mask (the queries of one key head share one call, so the
  past keys are not repeated for grouped-query attention);
- the chunk's queries over its own keys, ``is_causal=True`` (square, so causal alignment is right);

and the two softmax halves are merged with their log-sum-exps, which is exactly softmax over the union.
No attention mask is built at all. Everything else (the first chunk, decoding one token, the vision
tower, any padded batch) goes to transformers' own sdpa path unchanged.

``use_split_attention(model)`` turns it on for the text model of a Qwen3-VL model on the CPU.

The same merge serves a float8 KV cache on any device (:func:`float8_attention`): the cached keys and
values are dequantized one block at a time and each block's softmax is merged in, so the whole cache is
never materialised in bf16. ``float8_kv_attention(model)`` switches the text model to it for the forward
passes of a session whose cache is float8.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

NAME = "sdpa_split_prefill"  # the name registered with transformers' attention and mask interfaces


def use_split_attention(model: Any) -> bool:
    """Make ``model``'s text layers use the split attention; False (nothing changed) if not applicable."""
    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return False
    if model.config.text_config._attn_implementation != "sdpa" or model.device.type != "cpu":
        return False
    try:
        _register()
        model.set_attn_implementation({"text_config": NAME})
    except (ImportError, AttributeError, TypeError, ValueError, KeyError) as e:  # another transformers
        log.warning("chunked prefill keeps sdpa with masks: %s", e)
    return model.config.text_config._attn_implementation == NAME


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, split_prefill_attention)
    AttentionMaskInterface.register(NAME, _mask)


def _mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """No mask for a batch without padding (causality is handled in the attention); sdpa's otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None or bool(attention_mask.all()):
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def split_prefill_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, L, E]
    key: torch.Tensor,  # [B, Hkv, S, E], the cached keys then this chunk's (S >= L)
    value: torch.Tensor,  # [B, Hkv, S, E]
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface; returns ([B, L, H, E], None) like ``sdpa_attention_forward``."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    b, heads, length, dim = query.shape
    kv_heads, total = key.shape[1], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if (
        attention_mask is not None
        or not causal
        or length == 1
        or length >= total
        or dropout
        or query.device.type != "cpu"
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    groups = heads // kv_heads
    past = total - length
    grouped = query.reshape(b, kv_heads, groups * length, dim)  # head h uses key head h // groups
    out_past, lse_past = flash(grouped, key[:, :, :past], value[:, :, :past], 0.0, False, scale=scaling)
    out_past = out_past.reshape(b, heads, length, dim)
    lse_past = lse_past.reshape(b, heads, length)
    keys, values = repeat_kv(key[:, :, past:], groups), repeat_kv(value[:, :, past:], groups)
    out_chunk, lse_chunk = flash(query, keys, values, 0.0, True, scale=scaling)
    lse = torch.logaddexp(lse_past, lse_chunk)
    out = out_past * torch.exp(lse_past - lse)[..., None] + out_chunk * torch.exp(lse_chunk - lse)[..., None]
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


# ----------------------------------------------------------------------------------------------------
# A float8 KV cache: dequantized block by block, merged exactly by log-sum-exp

FLOAT8_NAME = "float8_kv"  # registered with the attention interface only, so transformers builds no mask
# Cached tokens dequantized at once, counted as the bytes of their keys plus values in the compute dtype.
# This bounds the attention's transient memory whatever the context: 64 MiB is 16,384 tokens of
# Qwen3-VL-2B in bf16, where one whole layer at 262,144 tokens would be 1 GiB.
DEQUANT_BLOCK_BYTES = 64 * 2**20
# Scores per tile of the plain PyTorch fallback, for devices without a fused kernel that returns the
# log-sum-exp (MPS, unusual head sizes): 128 MiB in float32.
MATH_TILE_SCORES = 2**25


@contextlib.contextmanager
def float8_kv_attention(model: Any) -> Iterator[None]:
    """While inside, ``model``'s text layers read a float8 KV cache (:class:`.kv_cache.Float8Layer`)
    through :func:`float8_attention`.

    The text config's implementation is switched for these forward passes only: sessions with an
    unquantized cache on the same model keep their own attention and masks. Callers hold the engine's
    lock, so no other forward pass runs meanwhile. The name has no mask function registered, so
    transformers passes no mask at all (the float8 attention is causal by construction, batch 1).
    """
    from transformers import AttentionInterface

    AttentionInterface.register(FLOAT8_NAME, float8_attention)
    config = model.model.language_model.config
    saved = config._attn_implementation
    config._attn_implementation = FLOAT8_NAME
    try:
        yield
    finally:
        config._attn_implementation = saved


def float8_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, L, E]: the chunk's queries, the last L of S tokens
    key: Any,  # kv_cache.Float8KV [B, Hkv, S, E]: every cached key, this chunk's included
    value: Any,  # kv_cache.Float8KV [B, Hkv, S, E]
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface over a float8 cache; returns ([B, L, H, E], None).

    The S - L earlier tokens are attended without a mask, one dequantized block at a time (a single
    query, decoding, attends to all S that way); the chunk's own L tokens causally, as one square block.
    Each block's softmax is merged into the running result with its log-sum-exp, which is exactly the
    softmax over their union (as in :func:`split_prefill_attention`).
    """
    if attention_mask is not None or dropout:
        raise ValueError("the float8 KV cache attends without padding or dropout (one sequence, inference)")
    from transformers.integrations.sdpa_attention import repeat_kv

    b, heads, length, dim = query.shape
    kv_heads, total = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    past = total if length == 1 else total - length
    block = max(1, DEQUANT_BLOCK_BYTES // (2 * b * kv_heads * dim * query.element_size()))
    grouped = query.reshape(b, kv_heads, groups * length, dim)  # head h reads key head h // groups
    out = lse = None
    for start in range(0, past, block):
        end = min(past, start + block)
        k, v = key.dequantize(start, end, query.dtype), value.dequantize(start, end, query.dtype)
        o, s = _attend(grouped, k, v, causal=False, scale=scale)
        out, lse = _merge(out, lse, o.reshape(b, heads, length, dim), s.reshape(b, heads, length))
    if past < total:
        k = repeat_kv(key.dequantize(past, total, query.dtype), groups)
        v = repeat_kv(value.dequantize(past, total, query.dtype), groups)
        out, lse = _merge(out, lse, *_attend(query, k, v, causal=True, scale=scale))
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _merge(
    out: torch.Tensor | None, lse: torch.Tensor | None, block_out: torch.Tensor, block_lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention over two sets of keys from each one's output and log-sum-exp (float32)."""
    block_out, block_lse = block_out.float(), block_lse.float()
    if out is None:
        return block_out, block_lse
    merged = torch.logaddexp(lse, block_lse)
    out = out.mul_(torch.exp(lse - merged)[..., None]).add_(
        block_out * torch.exp(block_lse - merged)[..., None]
    )
    return out, merged


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scale) v`` and each row's log-sum-exp: ([B, H, L, E], [B, H, L]).

    Fused kernels where PyTorch has one that returns the log-sum-exp: the CPU flash kernel, CUDA's flash
    kernel (fp16/bf16) or memory-efficient kernel (float32); the plain tiled computation elsewhere.
    ``causal`` needs a square block (L == keys).
    """
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    if q.device.type == "cuda" and q.shape[-1] <= 256:
        if q.dtype in (torch.float16, torch.bfloat16):
            out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
            return out[0], out[1]
        out = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, None, True, 0.0, causal, scale=scale
        )
        return out[0], out[1][..., : q.shape[-2]]  # its log-sum-exp may be padded along L
    return _attend_math(q, k, v, causal, scale)


def _attend_math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_attend` in plain PyTorch, float32, in tiles of query rows (MATH_TILE_SCORES)."""
    b, heads, length, _ = q.shape
    keys = k.shape[-2]
    kf, vf = k.float().transpose(-1, -2), v.float()
    rows = max(1, MATH_TILE_SCORES // (b * heads * keys))
    outs, lses = [], []
    for start in range(0, length, rows):
        scores = torch.matmul(q[:, :, start : start + rows].float(), kf).mul_(scale)  # [B, H, rows, keys]
        if causal:  # query row i (of the square block) sees keys 0..i
            i = torch.arange(start, start + scores.shape[-2], device=q.device)[:, None]
            scores.masked_fill_(torch.arange(keys, device=q.device) > i, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        outs.append(torch.matmul(torch.exp(scores - lse[..., None]), vf))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


# ----------------------------------------------------------------------------------------------------
# Prefill: the last layer for the last token only, kernels and masks


class _LastLayerForLastToken(torch.nn.Module):
    """The text model's last decoder layer for one prefill chunk, computing only what is ever read.

    Later tokens read the last layer's keys and values (from the cache); its output is read only by the
    final norm and the output head, for the prompt's last token. So for a chunk of n tokens this computes
    the keys and values of all n into the cache, and queries, attention and MLP for the chunk's last token
    only when its logits are wanted (``last``), for none otherwise. That skips 1/L of the prefill's
    attention and MLP (a quarter on the 4-layer test model, half on a 2-layer one, 1/28 on Qwen3-VL-2B),
    exactly: nothing reads what is skipped. Returns hidden states [1, 1, D]: the last token's (a
    placeholder when not ``last``); with ``whole`` (DeepStack features are added after this layer, at
    the video's positions of the chunk) [1, n, D], whose last row is the last token's and whose other rows,
    never read past the final norm, are the layer's input.
    """

    def __init__(self, layer: torch.nn.Module, last: bool, whole: bool = False):
        super().__init__()
        self.layer = layer
        self.last = last
        self.whole = whole
        self._rotate_half = sys.modules[type(layer).__module__].rotate_half

    def forward(
        self,
        hidden_states: torch.Tensor,  # [1, n, D]
        position_embeddings: tuple[torch.Tensor, torch.Tensor],  # cos, sin [1, n, E]
        attention_mask: torch.Tensor | None = None,  # None, or [1, 1, n, keys]
        position_ids: torch.Tensor | None = None,  # [1, n]
        cache: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        layer, attn = self.layer, self.layer.self_attn
        normed = layer.input_layernorm(hidden_states)
        heads = (*normed.shape[:-1], -1, attn.head_dim)
        cos, sin = (x.unsqueeze(1) for x in position_embeddings)  # [1, 1, n, E]
        keys = attn.k_norm(attn.k_proj(normed).view(heads)).transpose(1, 2)  # [1, Hkv, n, E]
        keys = (keys * cos) + (self._rotate_half(keys) * sin)  # apply_rotary_pos_emb's formula
        values = attn.v_proj(normed).view(heads).transpose(1, 2)
        keys, values = cache.update(keys, values, attn.layer_idx)
        if not self.last:
            return hidden_states if self.whole else hidden_states[:, -1:]
        query = attn.q_norm(attn.q_proj(normed[:, -1:]).view(1, 1, -1, attn.head_dim)).transpose(1, 2)
        query = (query * cos[:, :, -1:]) + (self._rotate_half(query) * sin[:, :, -1:])  # [1, H, 1, E]
        if attention_mask is not None:
            attention_mask = attention_mask[..., -1:, :]
        if position_ids is not None:
            position_ids = position_ids[..., -1:]
        attend = ALL_ATTENTION_FUNCTIONS[attn.config._attn_implementation]
        out, _ = attend(
            attn, query, keys, values, attention_mask, dropout=0.0, scaling=attn.scaling,
            position_ids=position_ids, **kwargs,
        )  # fmt: skip
        hidden = hidden_states[:, -1:] + attn.o_proj(out.reshape(1, 1, -1).contiguous())
        mlp = layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = hidden + (mlp[0] if isinstance(mlp, tuple) else mlp)  # [1, 1, D]
        if not self.whole:
            return hidden
        out = hidden_states.clone()  # [1, n, D]: the layer's input, read by nothing but the final norm
        out[:, -1:] = hidden
        return out


@contextlib.contextmanager
def last_layer_for_last_token(model: Any, last: bool, deepstack_layers: int) -> Iterator[None]:
    """While inside, ``model``'s last text layer is :class:`_LastLayerForLastToken`, returning every row
    when DeepStack features (``deepstack_layers`` of them, added after the first text layers) reach it;
    nothing changes where that is not known to work: an attention implementation outside transformers'
    registry (eager), a layer of another shape."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    layers = model.model.language_model.layers
    layer = layers[-1]
    attn = getattr(layer, "self_attn", None)
    usable = (
        type(layer).__name__.endswith("TextDecoderLayer")
        and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"))
        and attn.config._attn_implementation in ALL_ATTENTION_FUNCTIONS
        and hasattr(sys.modules[type(layer).__module__], "rotate_half")
    )
    if not usable:
        yield
        return
    layers[-1] = _LastLayerForLastToken(layer, last, whole=deepstack_layers >= len(layers))
    try:
        yield
    finally:
        layers[-1] = layer


def needs_mask(model: Any, kv_cache_dtype: str) -> bool:
    """Whether prefill chunks after the first get an explicit chunk x keys mask: not with the CPU split
    attention (:func:`split_prefill_attention`), the float8 cache's attention, or FlashAttention."""
    implementation = model.config.text_config._attn_implementation
    return kv_cache_dtype != "float8" and implementation != NAME and "flash" not in implementation


def cpu_attention_backends(device: torch.device) -> contextlib.AbstractContextManager:
    """On the CPU, prefer sdpa's flash kernel. Given a mask (chunks after the first, where the
    split attention is unavailable) PyTorch otherwise picks its math kernel, measured 3x slower in
    prefill and 5x in decode (tiny model, 13K tokens, identical tokens out). GPUs keep PyTorch's own
    choice, which handles masks well."""
    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])


# ----------------------------------------------------------------------------------------------------
# The vision tower: temporal groups of one size attended in one call


class _BatchedVisionAttention(torch.nn.Module):
    """A vision block's attention with every temporal group attended in one sdpa call.

    The vision tower attends within each temporal group (``cu_seqlens`` bounds them). Without
    FlashAttention's variable-length kernel, transformers makes one sdpa call per group and joins the
    outputs: 300 calls per layer for 10 minutes at 1 fps, each too small to use the cores well (one
    32-group batch of the test model on the 2-core CPU with 2 threads: 1.2-2.0 s of CPU time that way,
    0.9-1.3 s batched; the same with 1 thread, bench/RESULTS_engine.md). The frames of a video share
    one size, so its groups do too: they are a batch [G, H, L, E], attended in one call, the same softmax
    over the same keys for each group. Groups of mixed sizes (an image's tiles) go to the wrapped module
    unchanged.
    """

    def __init__(self, attn: torch.nn.Module):
        super().__init__()
        self.attn = attn
        self._rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision

    def forward(
        self,
        hidden_states: torch.Tensor,  # [n, D]: the patches of every group, group after group
        cu_seqlens: torch.Tensor,  # [G + 1]: where each group starts, and n
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin [n, E]
        **kwargs: Any,
    ) -> torch.Tensor:
        attn = self.attn
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        if position_embeddings is None or len(lengths) < 2 or bool((lengths != lengths[0]).any()):
            return attn(
                hidden_states, cu_seqlens=cu_seqlens, position_embeddings=position_embeddings, **kwargs
            )
        n, groups, length = hidden_states.shape[0], len(lengths), int(lengths[0])
        qkv = attn.qkv(hidden_states).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3)  # [3, n, H, E]
        query, key, value = qkv.unbind(0)
        query, key = self._rotary(query, key, *position_embeddings)
        query, key, value = (
            x.reshape(groups, length, attn.num_heads, -1).transpose(1, 2) for x in (query, key, value)
        )  # [G, H, L, E]
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=attn.scaling)
        return attn.proj(out.transpose(1, 2).reshape(n, -1))  # [n, D]


class _LinearPatchEmbed(torch.nn.Module):
    """The vision tower's patch embedding as one matrix product.

    Its Conv3d has kernel = stride = one patch (channels x temporal patch x patch x patch), so each output
    is the dot product of one flattened patch [C*T*P*P] with one filter: a Linear with the filters
    flattened the same way (the layout the processor's patches already have). PyTorch's CPU Conv3d takes
    1.5-2.5x as long for it (14,336 patches of the test model, 1 thread: 0.07 against 0.04 s), and the
    sums differ by float rounding only (4e-6 there).
    """

    def __init__(self, embed: torch.nn.Module):
        super().__init__()
        self.embed = embed

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # [N, C*T*P*P] -> [N, D]
        proj = self.embed.proj
        weight = proj.weight.reshape(proj.out_channels, -1)  # [D, C*T*P*P], a view
        return torch.nn.functional.linear(hidden_states.to(weight.dtype), weight, proj.bias)


@contextlib.contextmanager
def linear_patch_embed(model: Any) -> Iterator[None]:
    """While inside, ``model``'s vision patch embedding is :class:`_LinearPatchEmbed` on the CPU, where
    the embedding is a Conv3d whose stride is its kernel; elsewhere nothing changes. Callers hold the
    engine's lock."""
    visual = getattr(model.model, "visual", None)
    embed = getattr(visual, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    usable = (
        isinstance(proj, torch.nn.Conv3d)
        and model.device.type == "cpu"
        and tuple(proj.stride) == tuple(proj.kernel_size)
        and proj.groups == 1
        and proj.padding in ((0, 0, 0), "valid")
        and tuple(proj.dilation) == (1, 1, 1)
    )
    if not usable:
        yield
        return
    visual.patch_embed = _LinearPatchEmbed(embed)
    try:
        yield
    finally:
        visual.patch_embed = embed


@contextlib.contextmanager
def batched_vision_attention(model: Any) -> Iterator[None]:
    """While inside, the attention of ``model``'s vision blocks is :class:`_BatchedVisionAttention`, where
    the vision tower runs transformers' sdpa on the CPU; elsewhere (FlashAttention's variable-length
    kernel, GPUs, another layout of the blocks) nothing changes. Callers hold the engine's lock."""
    visual = getattr(model.model, "visual", None)
    blocks = getattr(visual, "blocks", None)
    usable = (
        blocks is not None
        and model.device.type == "cpu"
        and visual.config._attn_implementation == "sdpa"
        and all(
            hasattr(b, "attn") and all(hasattr(b.attn, a) for a in ("qkv", "proj", "num_heads", "scaling"))
            for b in blocks
        )
        and hasattr(sys.modules[type(blocks[0].attn).__module__], "apply_rotary_pos_emb_vision")
    )
    if not usable:
        yield
        return
    originals = [b.attn for b in blocks]
    for b, attn in zip(blocks, originals, strict=True):
        b.attn = _BatchedVisionAttention(attn)
    try:
        yield
    finally:
        for b, attn in zip(blocks, originals, strict=True):
            b.attn = attn
