#!/usr/bin/env bash
# The prepared GPU run: the CUDA tests (tests/test_gpu.py), then bench/bench_engine.py with Qwen3-VL-2B's
# shapes at random weights on 45- and 150-minute videos (1 fps; 448x256 frames at 45 minutes, the largest
# frames that fit 262,144 tokens at 150 minutes), each with a bfloat16 and a float8 KV cache. Made for the device tool's nvidia-h200 machine:
# Python 3.12 with torch, transformers and pytest, but no PyAV, no ffmpeg program and no network.
#
#   here:    bash bench/gpu_wheels.sh          # once: .whl/ with the wheels that machine lacks
#   device:  run  command "bash bench/gpu.sh"  carry [".whl"]  timeout_s 600
#   here:    bash bench/gpu.sh --dry-run       # the same steps on this CPU with tiny sizes; installs nothing
#
# Prints one JSON line per benchmark run (stage times, TTFT, follow-up TTFT, decode tokens/s, peak GPU
# GiB) and writes them to $OUT/results.jsonl, the whole log to $OUT/gpu.log (when $OUT is set).
# Every step has its own time limit, and all of them together end within GPU_SH_BUDGET_S seconds
# (default 540): a slow step costs its own figures, not the run. Exit status: 1 if the GPU tests fail
# (or did not run), 2 if only a benchmark step failed, 0 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
case "${1:-}" in
    --dry-run) dry=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu.sh [--dry-run]" >&2; exit 64 ;;
esac
budget=${GPU_SH_BUDGET_S:-540}
deadline=$((SECONDS + budget))
out=${OUT:-}
if [ -n "$out" ]; then
    mkdir -p "$out"
    exec > >(tee -a "$out/gpu.log") 2>&1
    results=$out/results.jsonl
else
    results=$(mktemp -t gpu-results.XXXXXX.jsonl)
fi
: >"$results"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

if [ "$dry" = 1 ]; then
    # This machine's virtualenv, tiny model, a few seconds of video: checks the plumbing, not speed.
    py=${PYTHON:-.venv/bin/python}
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # a caller's PYTHONPATH can stand in for the wheels
    arch=tiny
    lengths=(0.2 0.4)
    cache=${TMPDIR:-/tmp}/qwen3vl-gpu-dry
    extra=()
else
    py=${PYTHON:-python3}
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "error: no wheels in .whl/: run 'bash bench/gpu_wheels.sh' before, and carry .whl" >&2
        exit 1
    fi
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
    arch=2b
    lengths=(45 150)
    cache=${TMPDIR:-/tmp}/qwen3vl-gpu-bench
    # 150 minutes at 448x256 would be 553K tokens (3 segments): let the plan shrink the frames to 288x160,
    # 251K tokens, so that one 262K context holds the whole video.
    extra=(--min-pixels $((32 * 32 * 16)))
fi

left() { echo $((deadline - SECONDS)); }

# step NAME CAP_SECONDS COMMAND...: run under `timeout`, at most CAP seconds and never past the deadline.
step() {
    local name=$1 cap=$2
    shift 2
    local limit
    limit=$(left)
    [ "$cap" -lt "$limit" ] && limit=$cap
    if [ "$limit" -lt 10 ]; then
        echo "== $name: skipped, the time budget is spent"
        return 124
    fi
    echo "== $name (limit ${limit} s, $(left) s left)"
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    return $rc
}

echo "== gpu.sh $([ "$dry" = 1 ] && echo --dry-run) at $(date -u +%FT%TZ), budget ${budget} s"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$py" -c "
import av, torch, transformers
cuda = torch.cuda.is_available()
print('python', __import__('sys').version.split()[0], '| torch', torch.__version__, '| transformers',
      transformers.__version__, '| av', av.__version__, '| cuda:', torch.cuda.get_device_name() if cuda else 'none')
" || exit 1

# The test videos (PyAV, one encoder process per core; about a minute for both on 16 cores) are made
# while the tests run on the GPU.
video_log=$cache.videos.log
mkdir -p "$(dirname "$cache")"
timeout --kill-after=10 $(($(left) - 60)) "$py" bench/bench_engine.py --prepare --video-maker pyav \
    --cache "$cache" --minutes "${lengths[@]}" >"$video_log" 2>&1 &
video_pid=$!

tests_ok=1
pytest_log=$(mktemp -t gpu-pytest.XXXXXX.log)
step "gpu tests" 180 "$py" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$pytest_log"
rc=${PIPESTATUS[0]}
if [ "$dry" = 1 ]; then
    # No CUDA here: the module must be reported skipped (pytest exits 0, or 5 when nothing else ran).
    if ! { [ "$rc" = 0 ] || [ "$rc" = 5 ]; } || ! grep -q "skipped" "$pytest_log" \
        || grep -qE "^ERROR|[0-9]+ errors?( |$)" "$pytest_log"; then
        echo "error: without CUDA, tests/test_gpu.py must be skipped cleanly (exit $rc)"
        tests_ok=0
    fi
elif [ "$rc" != 0 ] || grep -q "skipped" "$pytest_log" || ! grep -q "passed" "$pytest_log"; then
    echo "error: the GPU tests failed or did not run (exit $rc)"
    tests_ok=0
fi

bench_ok=1
echo "== waiting for the test videos ($(left) s left)"
if ! wait "$video_pid"; then
    echo "error: making the test videos failed:"
    tail -5 "$video_log"
    bench_ok=0
fi
grep -h '^{' "$video_log"

# Each length with the KV cache in bfloat16, then in float8 (e4m3, half the bytes): first turn, decode
# tokens/s at that context, and peak GPU memory (whether 256K stays under 22 GiB with float8).
caps=(120 180)  # seconds for each length's benchmark process, per KV dtype
for i in "${!lengths[@]}"; do
    minutes=${lengths[$i]}
    for kv in bfloat16 float8; do
        log=$(mktemp -t gpu-bench.XXXXXX.log)
        step "benchmark, ${minutes} minutes, ${kv} KV cache" "${caps[$i]}" "$py" bench/bench_engine.py \
            --arch "$arch" --minutes "$minutes" --kv-cache-dtype "$kv" --skip-no-reuse --no-feature-cache \
            --new-tokens 32 --video-maker pyav --cache "$cache" "${extra[@]}" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        if [ "$rc" = 0 ] && grep -q '^{' "$log"; then
            grep '^{' "$log" >>"$results"
        else
            echo "error: the ${minutes}-minute benchmark with a ${kv} KV cache failed (exit $rc)"
            bench_ok=0
        fi
    done
done

echo "== results ($(wc -l <"$results") runs, $SECONDS s in all; in $results)"
cat "$results"
if [ "$tests_ok" != 1 ]; then
    echo "FAILED: the GPU tests"
    exit 1
fi
if [ "$bench_ok" != 1 ]; then
    echo "FAILED: a benchmark step"
    exit 2
fi
echo "OK"
