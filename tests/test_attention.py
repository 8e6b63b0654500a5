"""The CPU split attention (qwen3vl_summarizer.attention) against one masked sdpa call.

The engine's equivalence tests (tests/test_engine.py) run the whole model through it with chunk sizes that
do and do not divide the prompt; these check the function itself, including where it must step aside.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from qwen3vl_summarizer import attention
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import ModelOptions

HEADS, KV_HEADS, DIM = 4, 2, 16


def qkv(length: int, total: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, HEADS, length, DIM, generator=g).to(dtype)
    k = torch.randn(1, KV_HEADS, total, DIM, generator=g).to(dtype)
    v = torch.randn(1, KV_HEADS, total, DIM, generator=g).to(dtype)
    return q, k, v


def module(causal: bool = True):
    return SimpleNamespace(is_causal=causal, num_key_value_groups=HEADS // KV_HEADS)


def masked_reference(q, k, v, scaling=None) -> torch.Tensor:
    """One sdpa call with the explicit chunk mask: query i sees keys 0 .. past + i. [B, L, H, E]."""
    length, total = q.shape[2], k.shape[2]
    mask = torch.ones(length, total, dtype=torch.bool).tril(diagonal=total - length)
    groups = HEADS // KV_HEADS
    out = F.scaled_dot_product_attention(
        q.float(),
        k.float().repeat_interleave(groups, 1),
        v.float().repeat_interleave(groups, 1),
        attn_mask=mask,
        scale=scaling,
    )
    return out.transpose(1, 2)


@pytest.mark.parametrize(("length", "past"), [(2, 1), (7, 30), (64, 500), (300, 40)])
def test_split_equals_one_masked_call(length, past):
    q, k, v = qkv(length, past + length)
    out, weights = attention.split_prefill_attention(module(), q, k, v, None, scaling=0.3)
    assert weights is None and out.shape == (1, length, HEADS, DIM) and out.dtype == torch.float32
    torch.testing.assert_close(out, masked_reference(q, k, v, scaling=0.3), atol=1e-5, rtol=1e-5)


def test_split_in_bfloat16_stays_close():
    q, k, v = qkv(33, 233, dtype=torch.bfloat16)
    out, _ = attention.split_prefill_attention(module(), q, k, v, None)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), masked_reference(q, k, v), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    ("length", "total", "causal", "with_mask"),
    [
        (1, 50, True, False),  # decoding one token: every key, no mask
        (20, 20, True, False),  # the first chunk: square causal
        (10, 30, False, False),  # a non-causal module (the vision tower)
        (10, 30, True, True),  # a real mask (padding): sdpa's own handling
    ],
)
def test_other_cases_go_to_transformers_sdpa(length, total, causal, with_mask):
    q, k, v = qkv(length, total)
    mask = torch.ones(1, 1, length, total, dtype=torch.bool).tril(total - length) if with_mask else None
    out, _ = attention.split_prefill_attention(module(causal), q, k, v, mask)
    expected, _ = sdpa_attention_forward(module(causal), q, k, v, mask)
    assert torch.equal(out, expected)


def test_mask_is_skipped_only_without_padding():
    ones = torch.ones(1, 12, dtype=torch.long)
    assert attention._mask(batch_size=1, q_length=4, kv_length=12, attention_mask=None) is None
    assert attention._mask(batch_size=1, q_length=4, kv_length=12, attention_mask=ones) is None
    padded = ones.clone()
    padded[0, :3] = 0
    mask = attention._mask(batch_size=1, q_length=4, kv_length=12, kv_offset=0, attention_mask=padded.bool())
    assert mask is not None and not bool(mask[0, 0, :, :3].any())


def test_the_engine_uses_it_on_the_cpu_for_text_only(tiny_model_dir):
    engine = load_engine(ModelOptions(str(tiny_model_dir), device="cpu", dtype="float32"))
    assert engine.config.text_config._attn_implementation == attention.NAME
    assert engine.config.vision_config._attn_implementation == "sdpa"
    eager = load_engine(
        ModelOptions(str(tiny_model_dir), device="cpu", dtype="float32", attn_implementation="eager")
    )
    assert eager.config.text_config._attn_implementation == "eager"


def test_an_incompatible_transformers_keeps_plain_sdpa(tiny_model_dir, monkeypatch):
    def missing():
        raise ImportError("no AttentionMaskInterface in this transformers")

    monkeypatch.setattr(attention, "_register", missing)
    engine = load_engine(ModelOptions(str(tiny_model_dir), device="cpu", dtype="float32"))
    assert engine.config.text_config._attn_implementation == "sdpa"
