"""The same session interface as :class:`~.engine.VideoSession`, over a vLLM server (``model.backend = "vllm"``).

:class:`RemoteEngine` stands where :class:`~.engine.Engine` stands for the job layer (``geometry``,
``context_length``, ``session``), but holds only the model's processor and tokenizer, for the plan and
token counts: the weights live in the server. :class:`RemoteSession` sends the frames the sampler read, at
the plan's size, as one ``data:video/jpeg;base64,<f1>,<f2>,…`` video with their real times, and streams
the answer (server-sent events) into the same :class:`~.events.Response`. A follow-up sends the whole
conversation again; the server's prefix cache answers the video's part of it without computing it again
(``TurnStats.cached_tokens``).

What the server builds, measured with vLLM 0.32 (its ``/tokenize``), and how each piece is asked for:

- Frame times: ``media_io_kwargs.video`` with ``fps = 1000`` and ``frames_indices = round(t * 1000)``, so
  it writes each temporal group's ``<t seconds>`` from the frames' real presentation times, as the local
  engine does; ``num_frames = -1`` (else it keeps 32 frames) and ``do_sample_frames = false``.
- Frame size: ``mm_processor_kwargs = {"do_resize": false}``, else its video processor shrinks the frames
  to its own pixel budget and the plan's token count is wrong.
- Layout: vLLM keeps the chat template's outer ``<|vision_start|>…<|vision_end|>`` around the groups, two
  tokens the local engine's prompt does not have (see the docstring of :mod:`.engine`): the geometry of a
  :class:`RemoteEngine` counts them (:data:`OUTER_VISION_TOKENS`), so ``plan.tokens`` equals the server's
  ``usage.prompt_tokens`` for the first turn.
- Text: the speech block, then the prompt, in the same user turn after the video, as the local engine.
- Follow-ups: the media part carries a ``uuid``, a hash of the frames, their times and the processor's
  options; the first request sends the frames with it, later ones only the ``uuid``, and the server takes
  the processed video from its multimodal cache (and the KV of the prompt from its prefix cache) instead
  of receiving, decoding and hashing the frames again. A server that no longer holds it (evicted,
  restarted) answers 400 "Cache miss … data is not provided": the request is sent again with the frames.

A video longer than the server's context goes in parts and a merge, as with the local engine
(:mod:`.summarize`): each part is a session of its own frames, and the merge a text-only one. The
vision-feature cache does not apply (the server encodes the frames).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import numpy as np

from .chat_template import ChatTemplate
from .engine import Turn, kept_turns
from .errors import (
    Cancelled,
    DamagedVideoError,
    ModelLoadError,
    ServerContextError,
    ServerError,
    ServerModelError,
    ServerTimeoutError,
    ServerUnavailableError,
    first_line,
)
from .events import Event, Progress, Response, TextDelta, TurnStats
from .options import ContextOptions, GenerationOptions, ModelOptions
from .plan import SERVER_KV_CACHE, Geometry
from .video import Frame

log = logging.getLogger(__name__)

# vLLM 0.32 keeps the chat template's <|vision_start|>…<|vision_end|> around the video's groups.
OUTER_VISION_TOKENS = 2
JPEG_QUALITY = 95  # frames go to the server as JPEG; its decoder gives back the plan's size exactly
FPS_MS = 1000.0  # frames_indices are milliseconds: the server writes each frame's real time
CONNECT_TIMEOUT_S = 10.0
CANCEL_POLL_S = 0.1  # how often a stream's watcher looks at its Stop event, seconds


class ServerClient:
    """HTTP to an OpenAI-compatible server (httpx), its failures raised as this package's errors."""

    def __init__(self, url: str, api_key: str = "", timeout_s: float = 600.0):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            # A connection per request: a stream's own socket is the one a Stop shuts (_Hangup).
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def get(self, path: str) -> dict[str, Any]:
        with self._errors():
            response = self.http.get(path)
            _raise_for_status(response, self.url)
            return response.json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._errors():
            response = self.http.post(path, json=body)
            _raise_for_status(response, self.url)
            return response.json()

    @contextmanager
    def stream(
        self, path: str, body: dict[str, Any], cancel: threading.Event | None = None
    ) -> Iterator[Iterator[dict[str, Any]]]:
        """POST ``body`` for a streamed answer; yields an iterator of its server-sent events' JSON. Leaving
        the block closes the connection, and vLLM aborts the request. Setting ``cancel`` shuts the
        connection at once, even while the server is still reading the prompt and nothing streams yet (its
        prefill of a long video): vLLM aborts the request, and this raises :class:`Cancelled`."""
        hangup = _Hangup(cancel)
        try:
            with (
                self._errors(),
                hangup,
                self.http.stream("POST", path, json=body, extensions={"trace": hangup.trace}) as response,
            ):
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response, self.url)
                yield _sse_chunks(response.iter_lines(), self.url)
        except ServerError:
            if hangup.hung_up:
                raise Cancelled("stopped") from None
            raise

    def close(self) -> None:
        self.http.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """httpx's errors as this package's: one line that says what happened and what to do."""
        import httpx

        url = self.url
        try:
            yield
        except httpx.ConnectError as e:
            raise ServerUnavailableError(
                f"cannot reach the vLLM server at {url} ({_reason(e)}): start it "
                "(bash scripts/vllm_server.sh serve MODEL) or set model.server_url (--server-url)"
            ) from None
        except httpx.TimeoutException as e:
            raise ServerTimeoutError(
                f"the vLLM server at {url} did not answer in time ({type(e).__name__}); "
                "ask again, or raise model.server_timeout_s"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            raise ServerUnavailableError(
                f"the vLLM server at {url} closed the connection ({_reason(e)}); "
                "nothing was lost: ask again once it is up"
            ) from None
        except httpx.HTTPError as e:
            raise ServerError(f"request to the vLLM server at {url} failed: {_reason(e)}") from None


class MediaNotCachedError(ServerError):
    """The server does not hold the media a request names by its uuid alone (its cache evicted it, or it
    restarted): the request is sent again with the media. Never leaves this module."""


class _Hangup:
    """Shuts a request's socket once ``cancel`` is set, from a watching thread: the thread that streams may
    be blocked reading, waiting for the server's first bytes, and only a shut socket wakes it (closing it
    would not), while the server sees the client go and aborts the request. ``trace`` is httpcore's trace
    extension, which hands over the socket of the request's connection."""

    def __init__(self, cancel: threading.Event | None):
        self.cancel = cancel
        self.hung_up = False
        self._socket: socket.socket | None = None
        self._over = threading.Event()
        self._lock = threading.Lock()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
            if self.cancel is not None and self.cancel.is_set():  # stopped while it connected
                self._shut()

    def __enter__(self) -> _Hangup:
        if self.cancel is not None:
            threading.Thread(target=self._watch, name="vllm-hangup", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._over.set()

    def _watch(self) -> None:
        while not self._over.is_set():
            if self.cancel.wait(CANCEL_POLL_S):
                self._shut()
                return

    def _shut(self) -> None:
        with self._lock:
            if self._socket is None or self._over.is_set():
                return
            self.hung_up = True
            with suppress(OSError):  # already closed
                self._socket.shutdown(socket.SHUT_RDWR)


class RemoteEngine:
    """A vLLM server serving ``model_id``, and that model's processor (loaded here, without weights)."""

    backend = "vllm"

    def __init__(
        self,
        processor: Any,
        model_id: str,
        client: ServerClient,
        max_model_len: int | None = None,
        served_name: str | None = None,
    ):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_id = model_id  # where the processor comes from, and the name the exports and library give
        self.served_name = served_name or model_id  # the name the requests give (--served-model-name)
        self.client = client
        self.server_url = client.url
        self.max_model_len = max_model_len  # the server's context length (its --max-model-len)
        # What the page says the model runs on and in (the local Engine's torch device and dtype).
        self.device = f"the vLLM server at {client.url}"
        self.dtype = "the server's dtype"
        self._template = ChatTemplate.from_processor(processor)
        self.eos_token_ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        self.lock = threading.Lock()  # for callers that hold an engine's lock; the server batches

    @classmethod
    def connect(cls, options: ModelOptions, model_id: str | None = None) -> RemoteEngine:
        """Check that the server at ``options.server_url`` serves ``model_id`` (default ``options.id``)
        under its served name (``options.served_name`` for ``options.id``, else the id itself), read its
        context length, and load the model's processor (tokenizer, chat template, video processor) from
        the hub or the folder ``model_id``."""
        model_id = (model_id if model_id is not None else options.id).strip()
        if not model_id:
            raise ModelLoadError("no model given: set model.id to the model the vLLM server serves")
        name = options.served_name.strip() if model_id == options.id.strip() else ""
        name = name or model_id
        client = ServerClient(options.server_url, options.api_key, options.server_timeout_s)
        try:
            served = client.get("/v1/models").get("data", [])
            card = next((m for m in served if m.get("id") == name), None)
            if card is None:
                names = ", ".join(m.get("id", "?") for m in served) or "nothing"
                setting = "model.served_name (--served-name)" if name != model_id else "model.id (--model)"
                raise ServerModelError(
                    f"the vLLM server at {client.url} serves {names}, not {name}: set {setting} to the "
                    "name it serves (model.served_name when it differs from the model's hub id or folder)"
                )
            engine = cls(_load_processor(model_id), model_id, client, card.get("max_model_len"), name)
        except BaseException:
            client.close()
            raise
        log.info(
            "using %s (served as %s) on the vLLM server at %s (context %s)",
            model_id,
            name,
            client.url,
            engine.max_model_len,
        )
        return engine

    # -- what the job layer asks of an engine -------------------------------------------------------

    def geometry(self, context: ContextOptions | None = None) -> Geometry:
        """The token arithmetic of the prompt the server builds: the local engine's, plus the outer
        vision pair vLLM keeps. The KV cache lives in the server: none is counted here."""
        vp = self.processor.video_processor
        template = (
            len(self._template.tokens_before_video(self.tokenizer))
            + self._count(self._template.after_video + self._template.after_prompt)
            + OUTER_VISION_TOKENS
        )
        return Geometry(
            patch_size=vp.patch_size,
            merge_size=vp.merge_size,
            temporal_patch_size=vp.temporal_patch_size,
            kv_bytes_per_token=0,
            kv_cache_dtype=SERVER_KV_CACHE,
            timestamp_base_tokens=self._count("<0.0 seconds>"),
            template_tokens=template,
            count_text_tokens=self._count,
        )

    def context_length(self, context: ContextOptions) -> int:
        """The server's context length (its ``--max-model-len``), or ``context.max_context`` when smaller."""
        served = self.max_model_len or context.max_context_cap
        return served if context.max_context == "auto" else min(int(context.max_context), served)

    @property
    def fingerprint(self) -> str:
        return f"{self.server_url}\0{self.served_name}"

    def session(
        self, frames: Iterable[Frame] | None, total_frames: int | None = None, **kwargs: Any
    ) -> RemoteSession:
        return RemoteSession(self, frames, total_frames=total_frames, **kwargs)

    def close(self) -> None:
        self.client.close()

    # -- requests -----------------------------------------------------------------------------------

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """The prompt the server builds for a chat request ``body`` (its ``/tokenize``): ``tokens`` (ids),
        ``token_strs`` and ``count``."""
        request = {
            key: body[key]
            for key in ("model", "messages", "media_io_kwargs", "mm_processor_kwargs")
            if key in body
        }
        request.update(add_generation_prompt=True, return_token_strs=True)
        return self.client.post("/tokenize", request)

    def stream(self, body: dict[str, Any], cancel: threading.Event | None = None) -> Any:
        """A streamed chat completion (:meth:`ServerClient.stream`)."""
        return self.client.stream("/v1/chat/completions", body, cancel)

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class RemoteSession:
    """One video (or image, or none) and a conversation about it, answered by a vLLM server.

    The interface of :class:`~.engine.VideoSession`: ``ask(question, branch=, cancel=)`` returns a
    :class:`Response` of :class:`Progress`, :class:`TextDelta` and :class:`TurnStats` events; ``turns``
    holds the conversation. The first ask reads the frames (JPEG-encoded once, kept for follow-ups) and
    sends them; each later ask sends the conversation so far with the video named by its uuid (the frames
    again only when the server no longer holds them), and the server's prefix cache serves the repeated
    part. A Stop (``cancel``) or a closed :class:`Response` closes the stream, which aborts the request;
    the turn is dropped and the session stays usable, as after a server error.
    """

    def __init__(
        self,
        engine: RemoteEngine,
        frames: Iterable[Frame] | None = None,
        *,
        total_frames: int | None = None,
        image: np.ndarray | None = None,
        generation: GenerationOptions | None = None,
        max_context: int | None = None,
        speech: str | Callable[[threading.Event | None], Iterator[Event]] | None = None,
        # The local engine's memory settings, which a server decides for itself:
        context: ContextOptions | None = None,
        expected_tokens: int | None = None,
        cache_reuse: bool = True,
        feature_cache: Any = None,
        feature_key: str | None = None,
    ):
        if frames is not None and image is not None:
            raise ValueError("a session holds frames or an image (or neither, for text), not both")
        self.engine = engine
        self.generation = generation or GenerationOptions()
        self.max_context = max_context
        self.total_frames = total_frames
        self.turns: list[Turn] = []
        self.frames_read = 0
        self.timestamps: list[float] = []  # times (s) of the frames read, in order
        self.damage: str | None = None
        self.features_from_cache = False  # the server encodes the frames: no feature cache
        self._source = frames
        self._frames = iter(frames) if frames is not None else None
        self._jpegs: list[str] = []  # base64 JPEG of each frame read
        self._image = image
        self._media: dict[str, Any] | None = None  # the video or image content item, once read
        self._speech_later = speech if callable(speech) else None
        self._speech = speech if isinstance(speech, str) else ""
        self._media_done = frames is None and image is None
        self._media_sent = False  # whether the server received the media (and may hold it by its uuid)
        self._broken: str | None = None
        # For the prefill's progress: the plan's prompt tokens, then (once known) the server's count of
        # the prompt before the first question's text.
        self._planned_tokens = max(1, (expected_tokens or 0) - self.generation.max_new_tokens)
        self._media_tokens: int | None = None

    # -- public -------------------------------------------------------------------------------------

    def ask(
        self, question: str, *, branch: int | None = None, cancel: threading.Event | None = None
    ) -> Response:
        """The answer to ``question`` (a prompt or a follow-up): iterate it to stream its events."""
        kept = kept_turns(self.turns, branch, self._broken)
        tokenizer = self.engine.tokenizer
        turn = Turn(question, self.engine._template.turn_ids(tokenizer, question, first=not kept))
        return Response(self._run_turn(kept, turn, cancel))

    def request(self, question: str, kept: list[Turn] | None = None, *, media: bool = True) -> dict[str, Any]:
        """The chat-completion request for ``question`` after the turns ``kept`` (the media must be read);
        ``media=False`` names the media by its ``uuid`` only, for a server that holds it already."""
        if not self._media_done:
            raise RuntimeError("the media is read by the first ask")
        g = self.generation
        body: dict[str, Any] = {
            "model": self.engine.served_name,
            "messages": self._messages(kept or [], question, media),
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": False},
            "max_tokens": g.max_new_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "top_k": g.top_k if g.top_k > 0 else -1,
            "repetition_penalty": g.repetition_penalty,
            "return_token_ids": True,  # vLLM: the generated ids, as the local engine reports them
        }
        if self._media is not None and self._media["type"] == "video_url":
            body.update(self._video_kwargs())
        return body

    # -- the turn -----------------------------------------------------------------------------------

    def _run_turn(self, kept: list[Turn], turn: Turn, cancel: threading.Event | None) -> Iterator[Event]:
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        fresh = not self._media_done
        try:
            if fresh:
                yield from self._read_media(cancel, timings)
            expected = self._expected_prompt_tokens(kept, turn)
            yield Progress("prefill", 0, expected)  # the server reports nothing until the first token
            t0 = time.perf_counter()
            ttft = None
            t_first = t0
            usage: dict[str, Any] = {}
            text = ""
            ids: list[int] | None = None  # generated ids, where the server sends them
            with ExitStack() as stack:
                chunks = None
                if self._media_sent:  # the server took the media by its uuid before
                    try:
                        body = self.request(turn.question, kept, media=False)
                        chunks = stack.enter_context(self.engine.stream(body, cancel))
                    except MediaNotCachedError:
                        log.info("the vLLM server no longer holds the media: sending it again")
                if chunks is None:
                    chunks = stack.enter_context(
                        self.engine.stream(self.request(turn.question, kept), cancel)
                    )
                for chunk in chunks:
                    _check(cancel)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content") or ""
                        new_ids = choice.get("token_ids")
                        if new_ids is not None:
                            ids = [*(ids or []), *new_ids]
                        if ttft is None:
                            ttft = time.perf_counter() - t_start
                            t_first = time.perf_counter()
                            timings["prefill"] = time.perf_counter() - t0
                            yield Progress("prefill", expected, expected)
                        if delta:
                            text += delta
                            token = new_ids[0] if new_ids is not None and len(new_ids) == 1 else None
                            yield TextDelta(delta, token)
            elapsed = time.perf_counter() - t_first
        except BaseException as e:
            if not self._media_done and not isinstance(e, (Cancelled, GeneratorExit, ServerError)):
                self._broken = f"reading the video failed: {first_line(e)}"
            raise
        if not usage:
            raise ServerError(f"the vLLM server at {self.engine.server_url} sent no usage statistics")
        self._media_sent = self._media is not None
        turn.text = text
        if ids and ids[-1] in self.engine.eos_token_ids:
            ids = ids[:-1]  # as the local engine: the end-of-turn token is not part of the answer
        turn.answer_ids = ids if ids is not None else self._tokens(text)
        self.turns = [*kept, turn]
        if not kept:  # what the media and the speech cost: the first prompt less its own text's tokens
            self._media_tokens = int(usage["prompt_tokens"]) - len(turn.prompt_ids)
        n = int(usage.get("completion_tokens") or len(turn.answer_ids))
        details = usage.get("prompt_tokens_details") or {}
        yield TurnStats(
            question=turn.question,
            text=text,
            tokens=list(turn.answer_ids),
            prefill_tokens=int(usage["prompt_tokens"]),
            ttft_s=ttft if ttft is not None else time.perf_counter() - t_start,
            decode_tokens_per_s=(n - 1) / elapsed if n > 1 and elapsed > 0 else 0.0,
            timings=timings,
            read_video=fresh and self._media is not None,
            cached_tokens=int(details.get("cached_tokens") or 0),
        )

    def _expected_prompt_tokens(self, kept: list[Turn], turn: Turn) -> int:
        """About how many prompt tokens the server will compute, for the progress of its prefill."""
        if self._media_tokens is None:
            return self._planned_tokens
        history = sum(len(t.prompt_ids) + len(t.answer_ids) for t in kept)
        return self._media_tokens + history + len(turn.prompt_ids)

    def _tokens(self, text: str) -> list[int]:
        return self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _read_media(self, cancel: threading.Event | None, timings: dict[str, float]) -> Iterator[Event]:
        """Read and JPEG-encode the frames (resumable after a cancel), then wait for the speech."""
        t0 = time.perf_counter()
        if self._image is not None:
            self._media = {
                "type": "image_url",
                "image_url": {"url": _data_url("image", [_jpeg(self._image)])},
            }
        for frame in self._frames or ():
            _check(cancel)
            self._jpegs.append(_jpeg(frame.image))
            self.timestamps.append(frame.t)
            self.frames_read += 1
            yield Progress("frames", self.frames_read, self.total_frames or self.frames_read)
        if self._frames is not None:
            if not self._jpegs:
                raise DamagedVideoError("no frame could be read from the video")
            self.damage = getattr(self._source, "damage", None)
            self._media = {"type": "video_url", "video_url": {"url": _data_url("video", self._jpegs)}}
        if self._media is not None:
            self._media["uuid"] = self._media_uuid()
        timings["frames"] = time.perf_counter() - t0
        if self._speech_later is not None:
            t0 = time.perf_counter()
            self._speech = (yield from self._speech_later(cancel)) or ""
            self._speech_later = None
            timings["speech_wait"] = time.perf_counter() - t0
        self._media_done = True

    def _messages(self, kept: list[Turn], question: str, media: bool = True) -> list[dict[str, Any]]:
        """The conversation in OpenAI's format: the media (or its uuid alone), the speech block and the
        first question in the first user turn (the local engine's order), then each answer and question."""
        first, *rest = [*(t.question for t in kept), question]
        content: list[dict[str, Any]] = []
        if self._media is not None:
            kind = self._media["type"]
            content.append(self._media if media else {"type": kind, kind: None, "uuid": self._media["uuid"]})
        content.append({"type": "text", "text": self._speech + first})
        messages = [{"role": "user", "content": content}]
        for turn, later in zip(kept, rest, strict=True):
            messages.append({"role": "assistant", "content": turn.text})
            messages.append({"role": "user", "content": later})
        return messages

    def _video_kwargs(self) -> dict[str, Any]:
        """The request's fields that say how the server reads the video: the frames' times, their size."""
        return {
            "media_io_kwargs": {"video": self._video_metadata()},
            "mm_processor_kwargs": {"do_resize": False},  # the plan chose the size
        }

    def _media_uuid(self) -> str:
        """The media's name in the server's caches: a hash of what it is made of (the JPEGs, and for a
        video its frames' times and the processor's options), so that only the same media matches."""
        digest = hashlib.sha256()
        if self._media["type"] == "video_url":
            digest.update(json.dumps(self._video_kwargs(), sort_keys=True).encode())
        digest.update(json.dumps(self._media, sort_keys=True).encode())
        return f"qwen3vl-{digest.hexdigest()}"

    def _video_metadata(self) -> dict[str, Any]:
        """``media_io_kwargs.video``: the frames' real times as millisecond indices at 1000 fps."""
        indices = [round(t * FPS_MS) for t in self.timestamps]
        return {
            "fps": FPS_MS,
            "frames_indices": indices,
            "total_num_frames": indices[-1] + 1,
            "duration": (indices[-1] + 1) / FPS_MS,
            "num_frames": -1,  # keep every frame sent (the default keeps 32)
            "do_sample_frames": False,  # we sampled them
        }


# ----------------------------------------------------------------------------------------------------
# Helpers


def _load_processor(model_id: str) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(model_id)
    except Exception as e:  # noqa: BLE001 - hub, network and file errors alike, in one line
        raise ModelLoadError(f"cannot load the processor of {model_id}: {first_line(e)}") from None


def _jpeg(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _data_url(kind: str, jpegs: list[str]) -> str:
    return f"data:{kind}/jpeg;base64," + ",".join(jpegs)


def _sse_chunks(lines: Iterator[str], url: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, up to ``data: [DONE]``; an error event raises."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise _server_error(chunk, 500, url)
        yield chunk
    raise ServerUnavailableError(
        f"the vLLM server at {url} ended the answer early (restarted?); nothing was lost: ask again"
    )


def _raise_for_status(response: Any, url: str) -> None:
    if response.status_code < 400:
        return
    try:
        payload = response.json()
    except ValueError:
        payload = {"message": response.text}
    raise _server_error(payload, response.status_code, url)


def _server_error(payload: dict[str, Any], status: int, url: str) -> ServerError:
    error = payload.get("error", payload)
    message = (error.get("message") if isinstance(error, dict) else str(error)) or f"HTTP {status}"
    line = message.strip().splitlines()[0] if message.strip() else f"HTTP {status}"
    lowered = line.lower()
    if "context length" in lowered or "max_model_len" in lowered or "maximum model length" in lowered:
        return ServerContextError(
            f"the request does not fit the vLLM server's context ({line}); serve the model with a larger "
            "--max-model-len, or lower the fps"
        )
    if status == 400 and "cache miss" in lowered and "data is not provided" in lowered:
        return MediaNotCachedError(f"the vLLM server at {url}: {line}")
    if status == 404 and "model" in lowered:
        return ServerModelError(f"the vLLM server at {url}: {line}; set model.id to the model it serves")
    if status == 401:
        return ServerError(f"the vLLM server at {url} refused the API key ({line}); set model.api_key")
    return ServerError(f"the vLLM server at {url} answered {status}: {line}")


def _reason(e: BaseException) -> str:
    cause = e.__context__ or e.__cause__
    text = first_line(e)
    if text == type(e).__name__ and cause is not None:
        text = first_line(cause)
    return text


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("stopped")
