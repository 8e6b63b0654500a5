#!/usr/bin/env bash
# Download into .whl/ the wheels that the GPU machine (device tool, kind nvidia-h200: Python 3.12,
# torch 2.11, transformers 5.17, huggingface_hub 1.33, no network) lacks for bench/gpu.sh. Run it here,
# once; then call the device tool's `run` with carry [".whl"] and command `bash bench/gpu.sh`.
#
# What our code path imports, against that machine's package list (/work/.library/device/KINDS.md):
# - av: not there (video.py imports it; engine.py imports video.py). Its wheel bundles FFmpeg with
#   libx264, so it also writes the benchmark's test videos there (no ffmpeg program on that machine).
# - transformers: 5.17 there is too old for the engine, and silently so: its Qwen3-VL text model takes
#   the cache as `past_key_values` and swallows our `cache=` in **kwargs (every chunk then prefills
#   without its past), and its vision features come back unsplit (engine.py's torch.cat fails). 5.24.0
#   is what DESIGN.md and bench/RESULTS_engine.md measured with; it works with that machine's
#   huggingface_hub 1.33 (needs >=1.31), tokenizers 0.23.2 and safetensors 0.8.0. The virtualenv's 5.25
#   would also need huggingface_hub>=2.4 and its new dependencies. (Checked here: tests/test_engine.py,
#   test_tiny_model.py and test_feature_cache.py pass with transformers 5.24.0 + huggingface_hub 1.33.0.)
# - torch, torchvision (the video processor), tokenizers, safetensors, numpy, pillow, accelerate and
#   pytest are there; gradio (app.py and web/ only) and qwen-vl-utils (never imported) are not needed.
#
#   bash bench/gpu_wheels.sh                   # av at the virtualenv's version (else AV_VERSION below)
#   AV_VERSION=18.1.0 bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The device tool carries at most 64 MiB, the working tree (under 1 MiB) included.
LIMIT_MIB=56
venv_av=$(.venv/bin/python -c "import av; print(av.__version__)" 2>/dev/null || true)
AV_VERSION=${AV_VERSION:-${venv_av:-18.1.0}}
TRANSFORMERS_VERSION=${TRANSFORMERS_VERSION:-5.24.0}
PYTHON=${PYTHON:-python3}

grep -qx '/.whl/' .gitignore 2>/dev/null || echo "warning: /.whl/ is not in .gitignore" >&2
rm -rf .whl
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "av==$AV_VERSION" "transformers==$TRANSFORMERS_VERSION"

ls -l .whl
total=$(du -sk .whl | cut -f1)
echo "total: $((total / 1024)) MiB in .whl (limit ${LIMIT_MIB} MiB)"
if [ "$total" -gt $((LIMIT_MIB * 1024)) ]; then
    echo "error: .whl is over ${LIMIT_MIB} MiB" >&2
    exit 1
fi
for w in .whl/*.whl; do  # what each needs (the machine has these, at the versions noted above)
    deps=$(unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | cut -d' ' -f2- |
        paste -sd' ' || true)
    echo "$(basename "$w") needs: ${deps:-nothing}"
done
