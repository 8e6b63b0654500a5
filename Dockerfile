# syntax=docker/dockerfile:1
# The web app on a CUDA GPU:
#   docker build -t qwen3vl-summarizer .
#   docker run --gpus all -p 7860:7860 -v qwen3vl-data:/data qwen3vl-summarizer
# Then open http://localhost:7860. The model (~4.3 GB) downloads into the /data volume on first use.
#
# Base: nvidia/cuda:12.8.1-base-ubuntu24.04, which sets up the NVIDIA container runtime and nothing
# more. The torch wheels from the cu128 index bring their own CUDA runtime and cuDNN (nvidia-* wheels),
# so a cudnn-runtime base would ship a second copy of the same libraries (several GB). PyAV wheels
# bundle FFmpeg, so no system ffmpeg is needed.
FROM nvidia/cuda:12.8.1-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/data/hf \
    GRADIO_ANALYTICS_ENABLED=False

# Ubuntu 24.04's Python is 3.12 and refuses system-wide pip installs (PEP 668): use a virtualenv.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /app

# Dependencies first, from pyproject.toml alone: this (large) layer is rebuilt only when
# pyproject.toml or constraints.txt change, not on every code edit. constraints.txt pins torch and
# torchvision; the +cu128 builds come from PyTorch's index.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt \
        --extra-index-url https://download.pytorch.org/whl/cu128 -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The package carries its default config and prompts; app.py and the page (web/) stay in /app.
COPY . .
RUN pip install --no-cache-dir --no-deps .

RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/hf \
    && chown -R app:app /data
USER app
VOLUME ["/data"]

EXPOSE 7860
# The app binds 127.0.0.1 by default; inside a container it must listen on all interfaces.
CMD ["python", "app.py", "--host", "0.0.0.0"]
