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
"""

from __future__ import annotations

import logging
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
