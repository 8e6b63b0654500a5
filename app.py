"""Web app: upload a video, get a timestamped Markdown summary from Qwen3-VL, then ask follow-ups.

The entry point: reads the flags over the config, builds the page and serves it. The page itself is the
``web`` package beside this file: ``web/page.py`` lays it out and wires it, ``web/handlers.py`` holds what
its events call, ``web/render.py`` what it shows, ``web/policy.py`` what a request may do, ``web/i18n.py``
its English and Chinese texts, ``web/static/`` its script and stylesheet.

    python app.py --model Qwen/Qwen3-VL-2B-Instruct --host 127.0.0.1 --port 7860
"""

import argparse
import logging

from qwen3vl_summarizer.errors import OptionsError
from qwen3vl_summarizer.options import BACKENDS, load_options
from web.handlers import AppState
from web.page import build_demo, launch

__all__ = ["AppState", "build_demo", "launch", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Web app: summarize a video with Qwen3-VL, then chat about it."
    )
    parser.add_argument(
        "--model", help="hub id or local folder of a Qwen3-VL model (default: from the config)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS,
        help="where the model runs: local (in this process) | vllm (a vLLM server that serves --model)",
    )  # fmt: skip
    parser.add_argument(
        "--server-url", help="the vLLM server, with --backend vllm (default: from the config)"
    )
    parser.add_argument(
        "--served-name",
        help="with --backend vllm: the name the server serves --model under (default: --model)",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port to listen on (default 7860)")
    parser.add_argument(
        "--share", action="store_true", default=None, help="also open a public gradio.live link"
    )
    parser.add_argument("--config", help="TOML config file (default: the package's configs/default.toml)")
    parser.add_argument(
        "--auth", metavar="USER:PASSWORD",
        help="require this login (comma-separated for several; or QWEN3VL_SERVER__AUTH): use it whenever the "
        "server listens beyond this machine (--host 0.0.0.0, --share, Docker)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = load_options(
            args.config,
            overrides={
                "model": {
                    "id": args.model,
                    "backend": args.backend,
                    "server_url": args.server_url,
                    "served_name": args.served_name,
                },
                "server": {"host": args.host, "port": args.port, "share": args.share, "auth": args.auth},
            },
        )
    except OptionsError as e:
        parser.error(str(e))
    launch(build_demo(options), options)


if __name__ == "__main__":
    main()
