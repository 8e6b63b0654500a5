"""The model's own chat template, cut at the places where the video, the prompt and later turns go.

Rendering the template once with sentinel strings gives the text around each piece, so the session can
tokenize a conversation turn by turn (and keep the video's KV prefix when the prompt changes) while the
tokens stay exactly what ``apply_chat_template`` would give for the whole conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Sentinels rendered through the chat template to find where the video, prompt and answers go.
_PROMPT, _ANSWER, _QUESTION = "\x00PROMPT\x00", "\x00ANSWER\x00", "\x00QUESTION\x00"


@dataclass(frozen=True)
class ChatTemplate:
    """The model's chat template cut where the video, the prompt and later turns go."""

    before_video: str  # "<|im_start|>user\n"
    after_video: str  # text between the video and the prompt (usually empty)
    after_prompt: str  # "<|im_end|>\n<|im_start|>assistant\n"
    between_turns: str  # closes the answer and opens the next user turn: "<|im_end|>\n<|im_start|>user\n"

    @classmethod
    def from_processor(cls, processor: Any) -> ChatTemplate:
        video = processor.vision_start_token + processor.video_token + processor.vision_end_token

        def render(messages: list[dict]) -> str:
            return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

        first = render([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": _PROMPT}]}])
        before_video, rest = first.split(video, 1)
        after_video, after_prompt = rest.split(_PROMPT, 1)
        convo = render(
            [
                {"role": "user", "content": [{"type": "text", "text": _PROMPT}]},
                {"role": "assistant", "content": [{"type": "text", "text": _ANSWER}]},
                {"role": "user", "content": [{"type": "text", "text": _QUESTION}]},
            ]
        )
        between = convo.split(_ANSWER, 1)[1].split(_QUESTION, 1)[0]
        return cls(before_video, after_video, after_prompt, between)

    def tokens_before_video(self, tokenizer: Any) -> list[int]:
        return tokenizer(self.before_video, add_special_tokens=False)["input_ids"]

    def turn_ids(self, tokenizer: Any, question: str, first: bool) -> list[int]:
        """A user turn's tokens: the template's opener, the person's text, the generation prompt.

        The person's text is tokenized as text (``split_special_tokens``): a prompt or a question that
        contains ``<|im_start|>system`` must not open a turn of its own. The template's pieces end and
        start at the special tokens or a newline, where the tokenizer splits anyway, so the ids are the
        ones the whole rendered conversation gives.
        """
        opener = self.after_video if first else self.between_turns
        return [
            *tokenizer(opener, add_special_tokens=False)["input_ids"],
            *tokenizer(question, add_special_tokens=False, split_special_tokens=True)["input_ids"],
            *tokenizer(self.after_prompt, add_special_tokens=False)["input_ids"],
        ]
