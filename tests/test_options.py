"""Options read from ``QWEN3VL_<SECTION>__<KEY>`` environment variables: every string is converted to its
field's type (bool, int, float, tuple, ``int | "auto"``, a choice), and a bad one is an error that names
the key, the source and the value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwen3vl_summarizer.errors import OptionsError
from qwen3vl_summarizer.options import DEFAULT_CONFIG, Options, load_options


def from_env(**variables: str) -> Options:
    """The shipped defaults with these environment variables (names without the QWEN3VL_ prefix)."""
    return load_options(environ={f"QWEN3VL_{name}": value for name, value in variables.items()})


def fails(message: str, **variables: str) -> None:
    with pytest.raises(OptionsError, match=f"^{re.escape(message)}$"):
        from_env(**variables)


def test_the_environment_alone_changes_nothing() -> None:
    # Other variables, and ours without a SECTION__KEY, are not settings
    assert from_env() == load_options(environ={"HOME": "/root", "QWEN3VL": "x", "QWEN3VL_DEBUG": "1"})
    assert from_env() == load_options(DEFAULT_CONFIG, environ={})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("0", False),
        ("false", False),
        ("no", False),
    ],
)
def test_bool(raw: str, value: bool) -> None:
    assert from_env(SERVER__SHARE=raw).server.share is value
    assert from_env(CACHE__ENABLED=raw).cache.enabled is value


@pytest.mark.parametrize("raw", ["", "on", "2", "enabled"])
def test_bool_refuses_other_words(raw: str) -> None:
    fails(f"server.share in environment has the wrong type: {raw!r} (expected bool)", SERVER__SHARE=raw)


def test_float() -> None:
    assert from_env(SAMPLING__FPS="0.5").sampling.fps == 0.5
    fps = from_env(SAMPLING__FPS="2").sampling.fps
    assert fps == 2.0 and type(fps) is float
    assert from_env(GENERATION__TEMPERATURE=" 0.7 ").generation.temperature == 0.7
    assert from_env(SERVER__SESSION_MEMORY_GB="1e1").server.session_memory_gb == 10.0
    fails("sampling.fps in environment has the wrong type: 'fast' (expected float)", SAMPLING__FPS="fast")
    fails("sampling.fps in environment has the wrong type: '1,5' (expected float)", SAMPLING__FPS="1,5")


def test_a_converted_value_is_still_checked_for_its_range() -> None:
    fails("sampling.fps must be in (0, 30], got 0", SAMPLING__FPS="0")
    fails("sampling.fps must be in (0, 30], got 60", SAMPLING__FPS="60")
    fails("generation.top_p must be in (0, 1]", GENERATION__TOP_P="1.5")
    fails("server.port must be in 1..65535", SERVER__PORT="0")


def test_int() -> None:
    assert from_env(SERVER__PORT="8080").server.port == 8080
    assert from_env(GENERATION__TOP_K="-0").generation.top_k == 0
    fails("server.port in environment has the wrong type: '80.5' (expected int)", SERVER__PORT="80.5")
    fails("server.port in environment has the wrong type: 'http' (expected int)", SERVER__PORT="http")


@pytest.mark.parametrize(
    ("raw", "value"), [("auto", "auto"), (" AUTO ", "auto"), ("4096", 4096), ("131072", 131072)]
)
def test_int_or_auto(raw: str, value: int | str) -> None:
    assert from_env(CONTEXT__MAX_CONTEXT=raw).context.max_context == value
    assert from_env(CONTEXT__PREFILL_CHUNK_SIZE=raw).context.prefill_chunk_size == value


def test_int_or_auto_refuses_anything_else() -> None:
    fails(
        "context.max_context in environment has the wrong type: 'big' (expected int | Literal['auto'])",
        CONTEXT__MAX_CONTEXT="big",
    )
    fails(
        "context.prefill_chunk_size in environment has the wrong type: '2048.0' "
        "(expected int | Literal['auto'])",
        CONTEXT__PREFILL_CHUNK_SIZE="2048.0",
    )
    fails("context.max_context must be 'auto' or in [1024, 262144], got 512", CONTEXT__MAX_CONTEXT="512")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("Qwen/Qwen3-VL-4B-Instruct", ("Qwen/Qwen3-VL-4B-Instruct",)),
        ("a, b,c", ("a", "b", "c")),
        (" a ,, b , ", ("a", "b")),
        ("", ()),
        (",", ()),
    ],
)
def test_tuple_is_comma_separated(raw: str, value: tuple[str, ...]) -> None:
    models = from_env(SERVER__ALLOWED_MODELS=raw).server.allowed_models
    assert models == value and type(models) is tuple


def test_str_stays_text_whatever_it_looks_like() -> None:
    opts = from_env(SPEECH__LANGUAGE="123", MODEL__ID="/models/qwen", SERVER__AUTH="")
    assert opts.speech.language == "123" and opts.model.id == "/models/qwen" and opts.server.auth == ""


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        (
            "CONTEXT__KV_CACHE_DTYPE",
            "int4",
            "context.kv_cache_dtype must be one of auto, bfloat16, float8, got 'int4'",
        ),
        ("MODEL__QUANTIZATION", "gptq", "model.quantization must be one of none, nf4, int8, got 'gptq'"),
        ("SPEECH__MODE", "whisper", "speech.mode must be one of auto, subtitles, asr, off, got 'whisper'"),
        ("SPEECH__DEVICE", "mps", "speech.device must be one of auto, cpu, cuda, got 'mps'"),
    ],
)
def test_a_choice_outside_its_list_is_refused(variable: str, raw: str, message: str) -> None:
    fails(message, **{variable: raw})


def test_choices_are_taken_as_written() -> None:
    opts = from_env(CONTEXT__KV_CACHE_DTYPE="float8", MODEL__QUANTIZATION="nf4", SPEECH__MODE="off")
    assert (opts.context.kv_cache_dtype, opts.model.quantization, opts.speech.mode) == (
        "float8",
        "nf4",
        "off",
    )
    fails(  # not lowered: the value is compared as it is
        "context.kv_cache_dtype must be one of auto, bfloat16, float8, got 'Float8'",
        CONTEXT__KV_CACHE_DTYPE="Float8",
    )


def test_an_unknown_key_or_section_is_an_error_that_lists_the_known_ones() -> None:
    fails(
        "unknown key sampling.frames in environment; known: fps, min_pixels, max_pixels", SAMPLING__FRAMES="4"
    )
    fails(
        "unknown config section [video] in environment; known: model, sampling, context, generation, server, "
        "cache, speech, library",
        VIDEO__FPS="1",
    )


def test_variable_names_are_case_insensitive_after_the_prefix() -> None:
    env = {"QWEN3VL_Sampling__FPS": "2", "QWEN3VL_SERVER__port": "9000"}
    opts = load_options(environ=env)
    assert opts.sampling.fps == 2.0 and opts.server.port == 9000
    assert load_options(environ={"qwen3vl_sampling__fps": "2"}).sampling.fps == 1.0  # not our prefix


def test_order_defaults_then_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text("[sampling]\nfps = 2\n[server]\nport = 9000\nshare = true\n", encoding="utf-8")
    env = {"QWEN3VL_SAMPLING__FPS": "3", "QWEN3VL_SERVER__SHARE": "no"}
    opts = load_options(config, overrides={"sampling": {"fps": 4.0}, "server": {"port": None}}, environ=env)
    assert opts.sampling.fps == 4.0  # the override wins
    assert opts.server.share is False  # the environment beats the file
    assert opts.server.port == 9000  # an override of None changes nothing
    assert opts.sampling.max_pixels == Options().sampling.max_pixels  # in none of them: the default


def test_a_bad_value_names_the_file_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('[server]\nshare = "yes"\n', encoding="utf-8")
    with pytest.raises(OptionsError, match=re.escape(f"server.share in {config} has the wrong type: 'yes'")):
        load_options(config, environ={})
    for key in ("server.port", "sampling.fps"):  # TOML's true is no number, though Python's True is 1
        section, name = key.split(".")
        config.write_text(f"[{section}]\n{name} = true\n", encoding="utf-8")
        with pytest.raises(OptionsError, match=re.escape(f"{key} in {config} has the wrong type: True")):
            load_options(config, environ={})
