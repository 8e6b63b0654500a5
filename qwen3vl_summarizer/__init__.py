"""Turn a video into a timestamped Markdown summary with Qwen3-VL, then answer follow-up questions."""

__version__ = "0.1.0"
