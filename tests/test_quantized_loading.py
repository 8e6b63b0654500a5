"""Quantized weights: FP8 checkpoints, bitsandbytes at load time (model.quantization), GPTQ and AWQ.

What runs on the CPU runs here: an FP8 checkpoint made from the tiny model (weights in e4m3 with Qwen's
128 x 128 block scales) loads dequantized and answers; every backend or device that is missing gives
one clear ModelLoadError naming the pip command. The CUDA paths are marked ``gpu`` and skip without it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen3vl_summarizer import loading
from qwen3vl_summarizer.engine import Engine, TurnStats
from qwen3vl_summarizer.errors import ModelLoadError, OptionsError
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import ContextOptions, GenerationOptions, ModelOptions, load_options
from qwen3vl_summarizer.video import Frame

FP8_BLOCK = 128  # Qwen's FP8 checkpoints: one scale per 128 x 128 block of a weight ("weight_block_size")
# The text layers' linear weights; the vision tower, embeddings, norms and the output head stay unquantized.
FP8_LINEAR = re.compile(
    r"model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight"
)
FP8_QUANTIZATION_CONFIG = {
    "quant_method": "fp8",
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
    "modules_to_not_convert": ["lm_head", "model.visual"],
}
GREEDY = GenerationOptions(max_new_tokens=4, temperature=0.0, repetition_penalty=1.0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def with_quantization_config(tiny_model_dir: Path, folder: Path, quantization_config: dict) -> Path:
    """A copy of the tiny model whose config.json carries ``quantization_config`` (weights untouched)."""
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def quantize_block_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] as e4m3 and its ``weight_scale_inv`` [ceil(out/128), ceil(in/128)], the way
    Qwen's FP8 checkpoints store it: weight ~ e4m3 * scale, block by block."""
    out_features, in_features = weight.shape
    rows, cols = -(-out_features // FP8_BLOCK), -(-in_features // FP8_BLOCK)
    padded = torch.zeros(rows * FP8_BLOCK, cols * FP8_BLOCK)
    padded[:out_features, :in_features] = weight.float()
    blocks = padded.reshape(rows, FP8_BLOCK, cols, FP8_BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
    quantized = (blocks / scale[:, None, :, None]).reshape(rows * FP8_BLOCK, cols * FP8_BLOCK)
    return quantized[:out_features, :in_features].to(torch.float8_e4m3fn), scale


@pytest.fixture(scope="module")
def fp8_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as an FP8 checkpoint (quant_method "fp8", block scales), built once per module."""
    from safetensors.torch import load_file, save_file

    folder = with_quantization_config(
        tiny_model_dir, tmp_path_factory.mktemp("fp8") / "tiny-fp8", FP8_QUANTIZATION_CONFIG
    )
    tensors = {}
    for name, tensor in load_file(folder / "model.safetensors").items():
        if FP8_LINEAR.fullmatch(name):
            tensors[name], tensors[name.removesuffix("weight") + "weight_scale_inv"] = quantize_block_fp8(
                tensor
            )
        else:
            tensors[name] = tensor
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def frames() -> list[Frame]:
    rng = np.random.default_rng(5)
    return [
        Frame(t=t, target=t, image=rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)) for t in (0.0, 0.5, 1.2)
    ]


def answer(engine: Engine, **context) -> TurnStats:
    session = engine.session(frames(), context=ContextOptions(**context), generation=GREEDY)
    stats = session.ask("Summarize the video.").stats
    assert isinstance(stats, TurnStats) and stats.tokens
    return stats


# --- FP8 checkpoints --------------------------------------------------------------------------------------


def test_fp8_checkpoint_loads_dequantized_on_the_cpu_and_answers(fp8_model_dir, tiny_model_dir, caplog):
    from safetensors.torch import load_file

    with caplog.at_level(logging.WARNING, logger="qwen3vl_summarizer"):
        engine = load_engine(ModelOptions(str(fp8_model_dir), device="cpu", dtype="float32"))
    assert "FP8 checkpoint" in caplog.text and "dequantized" in caplog.text
    # Each quantized weight is exactly e4m3 x its block's scale, in the dtype asked for.
    stored = load_file(fp8_model_dir / "model.safetensors")
    q_proj = engine.model.model.language_model.layers[1].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear and q_proj.weight.dtype == torch.float32
    name = "model.language_model.layers.1.self_attn.q_proj.weight"
    expected = stored[name].float() * stored[name.removesuffix("weight") + "weight_scale_inv"]  # one block
    assert torch.equal(q_proj.weight.data, expected)
    original = load_file(tiny_model_dir / "model.safetensors")[name]
    assert 0 < float((q_proj.weight.data - original).norm() / original.norm()) < 0.04  # e4m3 rounding
    # The unquantized parts are the original weights.
    assert torch.equal(
        engine.model.model.visual.patch_embed.proj.weight.data, stored["model.visual.patch_embed.proj.weight"]
    )
    assert engine.unquantized_kv_dtype == "float32"
    answer(engine)
    answer(engine, kv_cache_dtype="float8")  # quantized weights and a quantized cache together


def test_fp8_on_an_fp8_gpu_without_the_kernels_package_is_a_clear_error(fp8_model_dir, monkeypatch):
    """On a GPU of compute capability 8.9 or more transformers runs FP8 matmuls through the hub kernel that
    the 'kernels' package fetches; without it the model would fail at its first forward pass."""
    from transformers import AutoConfig
    from transformers.utils import import_utils

    config = AutoConfig.from_pretrained(fp8_model_dir)
    monkeypatch.setattr(loading, "runs_fp8", lambda device: True)
    monkeypatch.setattr(import_utils, "is_kernels_available", lambda: False)
    with pytest.raises(ModelLoadError, match=r"FP8 checkpoint.*pip install 'kernels>=\d"):
        loading._check_quantization_backend(config, "qwen/fp8", torch.device("cuda"))
    monkeypatch.setattr(import_utils, "is_kernels_available", lambda: True)
    loading._check_quantization_backend(config, "qwen/fp8", torch.device("cuda"))  # nothing missing


def test_fp8_matmuls_need_compute_capability_8_9(monkeypatch):
    assert not loading.runs_fp8(torch.device("cpu"))
    for capability, expected in (((8, 0), False), ((8, 6), False), ((8, 9), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert loading.runs_fp8(torch.device("cuda")) is expected


# --- GPTQ and AWQ checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "packages"), [("gptq", ["gptqmodel", "optimum"]), ("awq", ["gptqmodel"])])
def test_gptq_and_awq_checkpoints_name_their_missing_packages(
    tiny_model_dir, tmp_path, monkeypatch, method, packages
):
    folder = with_quantization_config(tiny_model_dir, tmp_path / method, {"quant_method": method, "bits": 4})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # as on a machine without them, whatever this one has
        importlib.util, "find_spec", lambda name, *a: None if name in packages else real_find_spec(name, *a)
    )
    with pytest.raises(ModelLoadError) as error:
        load_engine(ModelOptions(str(folder), device="cpu"))
    message = str(error.value)
    assert f"{method.upper()} checkpoint" in message and "pip install 'qwen3vl-summarizer[gptq]'" in message
    assert all(f"'{p}'" in message for p in packages)
    assert "autoawq" not in message  # transformers 5 runs AWQ through GPT-QModel


# --- bitsandbytes at load time ---------------------------------------------------------------------------


def test_bitsandbytes_needs_cuda(tiny_model_dir):
    for quantization in ("nf4", "int8"):
        with pytest.raises(ModelLoadError, match=f"model.quantization = {quantization}.*CUDA.*runs on cpu"):
            load_engine(ModelOptions(str(tiny_model_dir), device="cpu", quantization=quantization))


def test_bitsandbytes_missing_names_the_pip_command(monkeypatch):
    from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    with pytest.raises(
        ModelLoadError, match=re.escape(f"pip install 'bitsandbytes>={BITSANDBYTES_MIN_VERSION}'")
    ):
        loading.bnb_config("nf4", torch.bfloat16, torch.device("cuda"), object(), "qwen")


def test_bitsandbytes_configs(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # the config is built the same whether or not bitsandbytes is on this machine
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    nf4 = loading.bnb_config("nf4", torch.bfloat16, torch.device("cuda"), object(), "qwen")
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype == torch.bfloat16
    assert nf4.llm_int8_skip_modules == ["model.visual", "lm_head"]  # vision tower and head unquantized
    int8 = loading.bnb_config("int8", torch.bfloat16, torch.device("cuda"), object(), "qwen")
    assert (
        int8.load_in_8bit
        and not int8.load_in_4bit
        and int8.llm_int8_skip_modules == ["model.visual", "lm_head"]
    )


def test_bitsandbytes_on_a_quantized_checkpoint_is_refused(fp8_model_dir):
    with pytest.raises(ModelLoadError, match=r"already a quantized \(fp8\) checkpoint"):
        load_engine(ModelOptions(str(fp8_model_dir), device="cpu", quantization="nf4"))


def test_quantization_option():
    assert load_options().model.quantization == "none"  # the shipped configs/default.toml has the key
    assert load_options(overrides={"model": {"quantization": "nf4"}}).model.quantization == "nf4"
    assert load_options(environ={"QWEN3VL_MODEL__QUANTIZATION": "int8"}).model.quantization == "int8"
    with pytest.raises(OptionsError, match="model.quantization must be one of none, nf4, int8"):
        load_options(overrides={"model": {"quantization": "nf8"}})


# --- on a GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_bitsandbytes_on_cuda(tiny_model_dir, quantization):
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    import bitsandbytes as bnb

    engine = load_engine(ModelOptions(str(tiny_model_dir), device="cuda", quantization=quantization))
    layer = engine.model.model.language_model.layers[0].mlp.up_proj
    assert isinstance(layer, bnb.nn.Linear4bit if quantization == "nf4" else bnb.nn.Linear8bitLt)
    assert type(engine.model.model.visual.blocks[0].mlp.linear_fc1) is torch.nn.Linear
    assert engine.unquantized_kv_dtype == "bfloat16"
    answer(engine)


@pytest.mark.gpu
@needs_cuda
def test_fp8_checkpoint_on_cuda(fp8_model_dir):
    """In FP8 on a GPU of capability 8.9+ (needs 'kernels' and its hub kernel), dequantized before."""
    from transformers.utils.import_utils import is_kernels_available

    fp8 = loading.runs_fp8(torch.device("cuda"))
    if fp8 and not is_kernels_available():
        pytest.skip("FP8 matmuls on this GPU need the 'kernels' package")
    engine = load_engine(ModelOptions(str(fp8_model_dir), device="cuda", dtype="bfloat16"))
    weight = engine.model.model.language_model.layers[0].self_attn.q_proj.weight
    assert weight.dtype == (torch.float8_e4m3fn if fp8 else torch.bfloat16)
    assert engine.unquantized_kv_dtype == "bfloat16"
    answer(engine)
