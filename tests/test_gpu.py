"""CUDA-only checks of the engine in bfloat16 on the tiny random Qwen3-VL; bench/gpu.sh runs them.

tests/test_engine.py pins every engine path against transformers' ``generate`` in float32 on the CPU.
These repeat, where they can go wrong differently, the two properties that depend on device and dtype:
chunked prefill in bf16 (masked sdpa over the cached past on the GPU) equals one pass within bf16
rounding, and the preallocated KV cache lives on the GPU, is written in place and serves follow-ups.

    python -m pytest -m gpu tests/test_gpu.py -q     # skipped, with its reason, without CUDA
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen3vl_summarizer.engine import Engine, TextDelta, TurnStats
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import ContextOptions, GenerationOptions, ModelOptions
from qwen3vl_summarizer.video import Frame

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device (run by bench/gpu.sh)", allow_module_level=True)
pytestmark = pytest.mark.gpu

PROMPT = "Summarize the video with timestamps."
GREEDY = GenerationOptions(max_new_tokens=8, temperature=0.0, repetition_penalty=1.0)
# 40 frames at 2 fps, 96x64: 20 temporal groups of 6 visual tokens, about 320 prompt tokens in all.
TIMES = [i / 2 for i in range(40)]
SMALL_CHUNK = 16  # tokens: about 20 prefill chunks, each attending to the cached past through a mask
ONE_PASS = 1 << 20  # tokens: the whole prompt in one causal forward pass
SAME_TOKENS = 4  # greedy tokens that must agree; later ones may part on a bf16 near-tie
# bf16 keeps 8 significant bits: one step is 2**-5 = 0.031 for logits in [4, 8). Two chunkings of the
# same prompt reach the logits through different attention kernels and summation orders in every layer.
# Measured on the CPU in bf16 (tiny model, these frames; logits up to 6.3 in magnitude): chunked against
# one pass differed by at most 0.0625 (two steps), 0.013 on average; the follow-up against recomputing
# the conversation by 0.078, 0.018 on average. A planted bug, MRoPE positions off by one in every chunk
# after the first, moved them by up to 0.23, 0.055 on average, and changed the second token: the mean
# bound is the sharp one.
LOGITS_ATOL = 0.125  # four bf16 steps at the largest logits
LOGITS_RTOL = 0.02
LOGITS_MEAN_ATOL = 0.04  # mean absolute difference over the vocabulary


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return load_engine(ModelOptions(str(tiny_model_dir), device="cuda", dtype="bfloat16"))


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    rng = np.random.default_rng(1)
    return [Frame(t=t, target=t, image=rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)) for t in TIMES]


def session(engine, frames, chunk, **kwargs):
    return engine.session(
        list(frames),
        total_frames=len(frames),
        context=ContextOptions(prefill_chunk_size=chunk),
        generation=GREEDY,
        **kwargs,
    )


def ask(session, question) -> tuple[TurnStats, torch.Tensor]:
    """Run one turn; its stats and the logits its first answer token was chosen from, [V] float32.

    The logits are read off the model's ``lm_head`` (a forward hook; every way of computing logits goes
    through it): the last call before the first answer token is streamed. Earlier calls in the same turn
    are possible (recomputing the video without cache reuse ends with one); later ones are decode steps.
    """
    seen: list[torch.Tensor] = []
    first: torch.Tensor | None = None

    def hook(module, inputs, output):
        seen.append(output.detach().reshape(-1, output.shape[-1])[-1].float().cpu())

    handle = session.engine.model.lm_head.register_forward_hook(hook)
    try:
        events = []
        for event in session.ask(question).events():
            if first is None and isinstance(event, TextDelta) and seen:
                first = seen[-1]
            events.append(event)
    finally:
        handle.remove()
    stats = events[-1]
    assert isinstance(stats, TurnStats)
    assert seen, "the turn computed no logits through lm_head"
    logits = first if first is not None else seen[-1]  # no text: the answer ended at once
    if stats.tokens:  # greedy, no repetition penalty: the first token is these logits' argmax
        assert int(logits.argmax()) == stats.tokens[0]
    return stats, logits


def assert_logits_close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=LOGITS_ATOL, rtol=LOGITS_RTOL)
    assert float((a - b).abs().mean()) < LOGITS_MEAN_ATOL


def test_bf16_chunked_prefill_equals_one_pass(engine, frames):
    assert engine.device.type == "cuda" and engine.dtype == torch.bfloat16
    chunked, chunked_logits = ask(session(engine, frames, SMALL_CHUNK), PROMPT)
    whole, whole_logits = ask(session(engine, frames, ONE_PASS), PROMPT)
    assert chunked.prefill_tokens == whole.prefill_tokens > 10 * SMALL_CHUNK
    assert_logits_close(chunked_logits, whole_logits)
    top2 = whole_logits.topk(2).values
    assert chunked.tokens[:SAME_TOKENS] == whole.tokens[:SAME_TOKENS], (
        f"greedy tokens differ; first-token margin {float(top2[0] - top2[1]):.4f}"
    )
    assert len(whole.tokens) >= SAME_TOKENS


def test_kv_cache_lives_on_the_gpu_and_serves_follow_ups(engine, frames):
    s = session(engine, frames, SMALL_CHUNK)
    ask(s, PROMPT)
    layers = s.cache.layers
    assert len(layers) == engine.config.text_config.num_hidden_layers
    for layer in layers:
        for t in (layer.keys, layer.values):
            assert t.device.type == "cuda"
            assert t.shape[-2] == len(s.ids)  # the cache holds exactly the session's tokens
    # Preallocated: the follow-up writes into the same buffers instead of reallocating them.
    starts = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in layers]
    follow, follow_logits = ask(s, "What happens at 00:07?")
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in layers] == starts
    assert all(layer.keys.shape[-2] == len(s.ids) for layer in layers)
    assert follow.prefill_tokens <= len(s.turns[1].prompt_ids) + 1  # only the new turn was computed

    # A fresh session asked the whole conversation: without cache reuse it recomputes every token.
    fresh = session(engine, frames, SMALL_CHUNK, cache_reuse=False)
    ask(fresh, PROMPT)
    again, again_logits = ask(fresh, "What happens at 00:07?")
    assert again.prefill_tokens > s.media_tokens
    assert fresh.turns[0].answer_ids == s.turns[0].answer_ids  # the same conversation up to the follow-up
    assert_logits_close(follow_logits, again_logits)
    assert follow.tokens[:SAME_TOKENS] == again.tokens[:SAME_TOKENS]
