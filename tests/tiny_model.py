"""Build a tiny, randomly initialised Qwen3-VL model folder, offline.

Developer tool for tests and benchmarks: the folder has the same files and the same loading path as
`Qwen/Qwen3-VL-2B-Instruct` (config, safetensors weights, generation config, Qwen2 byte-level BPE
tokenizer with Qwen's special tokens, Qwen3-VL chat template, image and video processors), so
`AutoProcessor.from_pretrained(folder)` and `Qwen3VLForConditionalGeneration.from_pretrained(folder)`
work exactly as they do for the real model. The architecture and the vision geometry are the real ones
(patch 16, spatial merge 2, temporal patch 2, DeepStack, interleaved MRoPE, 262,144 positions); only the
widths, depths and vocabulary are toy-sized. Its output is noise: use it to test mechanics, token counts
and equivalence, never wording. Product code must not special-case it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Regex, pre_tokenizers
from transformers import (
    GenerationConfig,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.tokenization_utils_base import AddedToken

logger = logging.getLogger(__name__)

__all__ = ["ADDED_TOKENS", "TINY_TOKENIZER_SIZE", "VLLM_TEXT", "VLLM_VISION", "build_tiny_model"]

# --- tokenizer -----------------------------------------------------------------------------------------

# Qwen2's pre-tokenizer regex: digits split one per token (`\p{N}` alone), words keep a leading space.
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Qwen3-VL's added tokens, in the real tokenizer's order (ids 151643.. there, 256 + N_MERGES.. here),
# with the real `special` flags: the tool-call and think tags are added tokens but not special.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
# The real tokenizer_config lists these 13 as additional special tokens.
EXTRA_SPECIAL_TOKENS = tuple(tok for tok, special in ADDED_TOKENS[1:14] if special)

N_BYTES = 256  # byte-level alphabet: ids 0..255, GPT-2 order (so " " -> "Ġ" is id 220, as in Qwen)
TINY_TOKENIZER_SIZE = 1000  # len(tokenizer): bytes + learned merges + added tokens
N_MERGES = TINY_TOKENIZER_SIZE - N_BYTES - len(ADDED_TOKENS)
VOCAB_MULTIPLE = 64  # the real config pads its embedding rows past len(tokenizer) (151936 > 151669)

# Built-in training text for the BPE merges: plain English about videos, so prompts tokenize into words.
CORPUS = """\
Describe the video. Summarize the video in a few sentences, then list the key moments with timestamps.
The speaker opens the lecture with an overview of the course and the plan for the next weeks. She writes
the main question on the board and asks the students what they already know about the topic.
At 12.5 seconds the camera moves to the left and shows a second person who is holding a small red box.
The presenter explains each step slowly: first open the box, then take out the parts, then put them
together on the table. The video ends with a short summary of what was shown and a list of questions.
What happens at the beginning, in the middle and at the end of this video? Answer with the time of each
scene in seconds, and describe what the people are doing, what they say and where the scene takes place.
A summary should be short and clear. It names the topic, the people, the places and the most important
events in the order in which they happen. Each chapter of the video gets a title and a start time.
The weather report shows rain in the morning and sun in the afternoon, with temperatures between 10 and
21 degrees. A map of the region appears on the screen while the reporter points at the coast.
In the cooking show, the chef cuts onions, tomatoes and garlic, heats oil in a pan and adds the
vegetables. After five minutes she adds rice and water, covers the pan and waits for twenty minutes.
The football match starts at 3 pm. The home team scores in the 17th minute, the visitors answer just
before half time, and a late goal in the 89th minute decides the game. The crowd sings and the players
celebrate on the field while the coach talks to the reporters.
The tutorial shows how to install the program, how to open a file and how to export the result. Click
the button in the top right corner, choose the format and press save. The new file appears in the folder.
This is a user question about the video: what is the person in the blue shirt doing, and why does the
music change after two minutes? The assistant answers with a short description and the exact time.
Timestamps are written as <0.5 seconds>, <1.0 seconds>, <2.5 seconds> or as 00:01:30 and 1:30.
Please describe the following video frames, the objects, the actions, the text on screen and the sound.
A documentary about mountain animals follows a family of goats through winter. Snow covers the rocks,
wolves hunt in the valley below, and eagles circle above the cliffs looking for food near the river.
In the laboratory, researchers measure the temperature of a liquid, record numbers in a notebook and
compare them with yesterday's experiment. Suddenly a beaker breaks, everybody laughs, and they clean up.
Our quarterly meeting reviewed sales, marketing budgets, hiring plans, product launches and customer
feedback. Jennifer presented charts; Michael proposed improvements; nobody disagreed with anything.
Why would somebody jump quickly over lazy brown dogs? Quiet zebras munch fresh kiwi; vexing jokes amaze.
Gardening tips: water tulips weekly, prune hedges yearly, fertilize lawns monthly, harvest zucchini often.
"""


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-to-character map, in id order: printable bytes first, then the rest shifted past 255."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(N_BYTES):
        if b not in chars:
            chars[b] = chr(N_BYTES + shifted)
            shifted += 1
    ordered = printable + [b for b in range(N_BYTES) if b not in printable]
    return [chars[b] for b in ordered]


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # The same pipeline as transformers' Qwen2Tokenizer builds, so training sees the words it will see.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _train_bpe(text: str, n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn byte-level BPE merges on `text`, deterministically (most frequent pair, ties by the pair).

    A few lines of Python rather than `tokenizers`' trainer, whose tie-breaking may depend on hash order.
    """
    words = Counter(piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text))
    splits = {word: list(word) for word in words}
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            symbols = splits[word]
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = best[0] + best[1]
        merges.append(best)
        vocab[merged] = len(vocab)
        for word, symbols in splits.items():
            i, out = 0, []
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            splits[word] = out
    if len(merges) < n_merges:
        raise RuntimeError(f"training text yields only {len(merges)} merges, {n_merges} wanted; add text")
    return vocab, merges


def _build_tokenizer() -> Qwen2Tokenizer:
    vocab, merges = _train_bpe(CORPUS, N_MERGES)
    base = len(vocab)
    added_tokens_decoder = {
        base + i: AddedToken(
            tok, special=special, normalized=False, lstrip=False, rstrip=False, single_word=False
        )
        for i, (tok, special) in enumerate(ADDED_TOKENS)
    }
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        added_tokens_decoder=added_tokens_decoder,
        extra_special_tokens=list(EXTRA_SPECIAL_TOKENS),
        errors="replace",
        model_max_length=262144,
        split_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    want = {tok: base + i for i, (tok, _) in enumerate(ADDED_TOKENS)}
    got = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in want}
    if got != want or len(tokenizer) != TINY_TOKENIZER_SIZE:
        raise RuntimeError(f"tokenizer ids came out wrong: {got} (len {len(tokenizer)})")
    return tokenizer


# --- processor -----------------------------------------------------------------------------------------

# Qwen3-VL-2B-Instruct's preprocessor_config.json and video_preprocessor_config.json.
PATCH_SIZE = 16
SPATIAL_MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_PROCESSOR = {
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    "patch_size": PATCH_SIZE,
    "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    "merge_size": SPATIAL_MERGE_SIZE,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
VIDEO_PROCESSOR = {
    "size": {"shortest_edge": 4096, "longest_edge": 25165824},
    "patch_size": PATCH_SIZE,
    "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    "merge_size": SPATIAL_MERGE_SIZE,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "fps": 2,
    "min_frames": 4,
    "max_frames": 768,
    "do_sample_frames": True,
}

# Qwen3-VL-Instruct's chat template (same structure as the real chat_template.json): video and image
# items become <|vision_start|><|video_pad|><|vision_end|> / <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


def _build_processor(tokenizer: Qwen2Tokenizer) -> Qwen3VLProcessor:
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**IMAGE_PROCESSOR),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**VIDEO_PROCESSOR),
        chat_template=CHAT_TEMPLATE,
    )


# --- model ---------------------------------------------------------------------------------------------

TEXT_HIDDEN = 64
TEXT_HEAD_DIM = 16
# Interleaved MRoPE over head_dim / 2 = 8 frequencies, [T, H, W] like the real [24, 20, 20]: T H W T H W T T.
MROPE_SECTION = [4, 2, 2]
# A shape that vLLM's CPU attention takes (head_dim 32, 64, 80, ...; not the default's 16), for the tests
# against a real vLLM server: build_tiny_model(out, text=VLLM_TEXT, vision=VLLM_VISION).
VLLM_TEXT_HIDDEN = 128
VLLM_TEXT = {
    "hidden_size": VLLM_TEXT_HIDDEN,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    # head_dim / 2 = 32 frequencies, in the real model's proportions ([24, 20, 20] of 64)
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [12, 10, 10],
        "mrope_interleaved": True,
    },
}
VLLM_VISION = {"out_hidden_size": VLLM_TEXT_HIDDEN}
# Std of the random weights. Wider than the real 0.02 so that a toy-width model's logits are spread out
# and greedy decoding wanders over the vocabulary instead of repeating one token.
INIT_STD = 0.2


def _build_config(
    tokenizer: Qwen2Tokenizer, text: dict | None = None, vision: dict | None = None
) -> Qwen3VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    vocab_size = math.ceil(len(tokenizer) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": TEXT_HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "initializer_range": INIT_STD,
        "rms_norm_eps": 1e-6,
        "use_cache": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": MROPE_SECTION,
            "mrope_interleaved": True,
        },
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "tie_word_embeddings": True,
    }
    vision_config = {
        "depth": 3,
        "hidden_size": 32,
        "hidden_act": "gelu_pytorch_tanh",
        "intermediate_size": 64,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": SPATIAL_MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "out_hidden_size": TEXT_HIDDEN,
        "num_position_embeddings": 2304,
        # One DeepStack feature per entry, injected into text layers 0, 1, 2 (the real 2B: [5, 11, 17]).
        "deepstack_visual_indexes": [0, 1, 2],
        "initializer_range": INIT_STD,
    }
    config = Qwen3VLConfig(
        text_config={**text_config, **(text or {})},
        vision_config={**vision_config, **(vision or {})},
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    return config


def _silence_never_generated(model: Qwen3VLForConditionalGeneration, tokenizer: Qwen2Tokenizer) -> None:
    """Zero the embedding rows of ids a trained Qwen3-VL never emits, so the tiny one never emits them either.

    The rows are the visual placeholders (their input embeddings are always overwritten by visual
    features, so nothing is lost) and the padding ids past `len(tokenizer)` (never inputs). Embeddings
    are tied, so their logits are exactly 0 while the largest of ~1000 random logits is positive: greedy
    and top-k decoding never pick them. Without this, a random model emits `<|video_pad|>` now and then,
    and a follow-up turn that feeds the answer back in fails the placeholder/feature count check.
    """
    placeholders = ["<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
    padding = range(len(tokenizer), model.config.text_config.vocab_size)
    rows = [*tokenizer.convert_tokens_to_ids(placeholders), *padding]
    with torch.no_grad():
        model.get_input_embeddings().weight[rows] = 0.0


def _generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    """Qwen3-VL-2B-Instruct's generation_config.json, with this tokenizer's ids."""
    ids = tokenizer.convert_tokens_to_ids
    return GenerationConfig(
        bos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")],
        do_sample=True,
        top_k=20,
        top_p=0.8,
        temperature=0.7,
        repetition_penalty=1.0,
    )


def build_tiny_model(
    out_dir: str | Path, seed: int = 0, text: dict | None = None, vision: dict | None = None
) -> Path:
    """Write a complete tiny Qwen3-VL model folder to `out_dir` and return its path.

    `text` and `vision` override entries of the text and vision configs (e.g. another depth, for a
    benchmark on another shape); by default the test suite's shape.

    The folder loads with `AutoProcessor.from_pretrained` and `Qwen3VLForConditionalGeneration` /
    `AutoModelForImageTextToText.from_pretrained`. Weights are random but a pure function of `seed`
    (the caller's torch RNG state is left untouched). Takes about a second on CPU once transformers is
    imported; about 2 MB on disk.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    _build_processor(tokenizer).save_pretrained(out)

    config = _build_config(tokenizer, text, vision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    _silence_never_generated(model, tokenizer)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("wrote tiny Qwen3-VL (%d parameters, seed %d) to %s", n_params, seed, out)
    return out
