"""The tiny random Qwen3-VL loads and runs through the same transformers path as the real model."""

from __future__ import annotations

import contextlib
import logging
import runpy
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from tests.tiny_model import ADDED_TOKENS, build_tiny_model

VIDEO_PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n"
FRAME_SIZE = 64  # pixels, a multiple of patch 16 x merge 2: 2 x 2 merged tokens per temporal group
N_FRAMES = 4  # two temporal groups
FPS = 2.0


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect transformers' logged warnings (its logger does not propagate) and Python warnings.

    Clears `warning_once`'s memory first, so a warning another test already triggered shows again.
    """
    transformers.utils.logging.warning_once.cache_clear()
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        root.removeHandler(handler)


def video_messages(prompt: str = "Describe.") -> list[dict]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]


def random_frames(seed: int = 0) -> np.ndarray:
    """[N_FRAMES, H, W, 3] uint8 noise."""
    return np.random.default_rng(seed).integers(0, 256, (N_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)


def video_inputs(processor: Qwen3VLProcessor, frames: np.ndarray) -> transformers.BatchFeature:
    """The plain reference path: our own frames, real timestamps, no sampling, no resizing."""
    text = processor.apply_chat_template(video_messages(), add_generation_prompt=True, tokenize=False)
    metadata = {"fps": FPS, "frames_indices": list(range(len(frames))), "total_num_frames": len(frames)}
    return processor(
        text=[text],
        videos=[frames],
        video_metadata=[metadata],
        do_sample_frames=False,
        do_resize=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )


def test_folder_loads_like_the_real_model(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert {"tokenizer_config.json", "processor_config.json", "chat_template.jinja"} <= names
    assert (tiny_model_dir / "model.safetensors").stat().st_size < 5_000_000

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    assert isinstance(processor, Qwen3VLProcessor)
    assert isinstance(processor.tokenizer, Qwen2Tokenizer)
    assert isinstance(processor.image_processor, Qwen2VLImageProcessor)
    assert isinstance(processor.video_processor, Qwen3VLVideoProcessor)
    assert isinstance(AutoTokenizer.from_pretrained(tiny_model_dir), Qwen2Tokenizer)

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    text, vision = model.config.text_config, model.config.vision_config
    # The real geometry and positional scheme, at toy width.
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (16, 2, 2)
    for proc in (processor.image_processor, processor.video_processor):
        assert (proc.patch_size, proc.merge_size, proc.temporal_patch_size) == (16, 2, 2)
    assert vision.out_hidden_size == text.hidden_size
    assert 2 <= len(vision.deepstack_visual_indexes) <= text.num_hidden_layers
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert text.max_position_embeddings == 262144
    assert model.config.tie_word_embeddings
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_auto_model_for_image_text_to_text_gives_the_same_class(tiny_model_dir: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert type(model) is Qwen3VLForConditionalGeneration


def test_special_tokens_match_the_config(tiny_model_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    tokenizer = processor.tokenizer
    config = transformers.AutoConfig.from_pretrained(tiny_model_dir)
    ids = tokenizer.convert_tokens_to_ids
    assert ids("<|image_pad|>") == config.image_token_id == processor.image_token_id
    assert ids("<|video_pad|>") == config.video_token_id == processor.video_token_id
    assert ids("<|vision_start|>") == config.vision_start_token_id == processor.vision_start_token_id
    assert ids("<|vision_end|>") == config.vision_end_token_id == processor.vision_end_token_id
    # Every added token is one token, in Qwen's order, inside the embedding table.
    added = [ids(token) for token, _ in ADDED_TOKENS]
    assert added == list(range(added[0], added[0] + len(ADDED_TOKENS)))
    for token, _ in ADDED_TOKENS:
        assert tokenizer(token).input_ids == [ids(token)]
    assert len(tokenizer) <= config.text_config.vocab_size
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None

    generation = GenerationConfig.from_pretrained(tiny_model_dir)
    assert generation.eos_token_id == [ids("<|im_end|>"), ids("<|endoftext|>")]
    assert generation.pad_token_id == ids("<|endoftext|>")


def test_chat_template_renders_a_qwen_prompt(tiny_model_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    rendered = processor.apply_chat_template(video_messages(), add_generation_prompt=True, tokenize=False)
    assert rendered == VIDEO_PROMPT
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    assert processor.apply_chat_template(image, tokenize=False) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n"
    )
    follow_up = [
        *video_messages(),
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "Why?"}]},
    ]
    assert processor.apply_chat_template(follow_up, add_generation_prompt=True, tokenize=False) == (
        VIDEO_PROMPT + "A cat.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_digits_tokenize_one_per_token(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pieces = tokenizer.tokenize("At 12.5 seconds, 2024 frames")
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["1", "2", "5", "2", "0", "2", "4"]
    assert tokenizer.decode(tokenizer("<12.5 seconds> 00:01:30").input_ids) == "<12.5 seconds> 00:01:30"


def test_reference_video_path_generates_without_metadata_warnings(tiny_model) -> None:
    model, processor = tiny_model
    with captured_warnings() as messages:
        inputs = video_inputs(processor, random_frames())
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert messages == []  # in particular none about missing `video_metadata` / fps or the pixel cap

    # 64x64 frames, patch 16: a 4x4 patch grid, merged 2x2 -> 4 tokens per temporal group of 2 frames.
    assert inputs["video_grid_thw"].tolist() == [[N_FRAMES // 2, 4, 4]]
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == (N_FRAMES // 2) * 4
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert (
        "<0.2 seconds>" in text and "<1.2 seconds>" in text
    )  # mean time of frames (0, 1) and (2, 3) at 2 fps

    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert 1 <= len(new) <= 5
    never = {model.config.image_token_id, model.config.video_token_id}
    assert all(i < len(processor.tokenizer) and i not in never for i in new), new


def test_warning_capture_sees_the_missing_metadata_warning(tiny_model_dir: Path) -> None:
    # Control for the test above: without metadata the processor warns (and assumes 24 fps).
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    with captured_warnings() as messages:
        processor(text=[VIDEO_PROMPT], videos=[random_frames()], do_sample_frames=False, do_resize=False)
    assert any("video_metadata" in m for m in messages), messages


def test_greedy_decoding_is_varied_and_depends_on_the_pixels(tiny_model) -> None:
    model, processor = tiny_model
    answers = []
    for seed in range(2):
        inputs = video_inputs(processor, random_frames(seed))
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        answers.append(out[0, inputs["input_ids"].shape[1] :].tolist())
    assert answers[0] != answers[1]
    assert all(len(set(answer)) > 3 for answer in answers), answers


def test_build_is_deterministic_and_leaves_the_rng_alone(tmp_path: Path, tiny_model_dir: Path) -> None:
    state = torch.random.get_rng_state()
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    for path in sorted(tiny_model_dir.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_script_writes_a_loadable_folder_with_other_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_tiny_model.py"
    main = runpy.run_path(str(script), run_name="make_tiny_model")["main"]
    assert main([str(tmp_path / "tiny"), "--seed", "1"]) == 0
    assert isinstance(AutoProcessor.from_pretrained(tmp_path / "tiny"), Qwen3VLProcessor)
    weights = (tmp_path / "tiny" / "model.safetensors").read_bytes()
    assert weights != (tiny_model_dir / "model.safetensors").read_bytes()
