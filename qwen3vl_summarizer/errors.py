"""Precise exceptions raised inside the package.

The edges translate them: the CLI prints ``error: <message>`` and exits 1, the web app shows a
``gr.Error``. Every message is one line that says what happened and, where it helps, what to do.
"""


class SummarizerError(Exception):
    """Base class of every error this package raises on purpose."""


class OptionsError(SummarizerError, ValueError):
    """A setting is out of range, of the wrong type, or unknown."""


class VideoError(SummarizerError):
    """The video cannot be read as asked."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The path does not exist, or is a folder."""


class NotAVideoError(VideoError):
    """The file is empty or is not a media container PyAV can open."""


class NoVideoStreamError(VideoError):
    """The container opened but holds no video stream (audio only, subtitles...)."""


class UnsupportedCodecError(VideoError):
    """The video stream uses a codec that this build of FFmpeg cannot decode."""


class DamagedVideoError(VideoError):
    """The file is damaged (truncated or corrupt) and no frame could be decoded from it."""


class ModelLoadError(SummarizerError):
    """The model, its processor or its quantization backend could not be loaded."""


class ContextTooSmallError(SummarizerError):
    """Not even one segment of the video fits the context length."""


class OutOfMemoryError(SummarizerError):
    """The device ran out of memory; the message says what to lower."""


class Cancelled(SummarizerError):
    """The work was cancelled by the person (Stop button, Ctrl-C)."""


class SessionBrokenError(SummarizerError):
    """A session whose video read failed midway; open the video again."""


class IncompleteAnswerError(SummarizerError):
    """An answer stream ended without the statistics of its turn (a bug in a stream's producer)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, the one place front ends and logs shorten errors: an OS or
    FFmpeg error's own words (``strerror``, without the errno and path), else ``str(e)``; its type's name
    when it has none."""
    text = (getattr(e, "strerror", None) or str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


class NoAudioStreamError(VideoError):
    """The file holds no audio stream, so there is no speech to transcribe."""


class DamagedAudioError(VideoError):
    """The audio stream is damaged and not one second of it could be decoded."""


class SubtitleError(SummarizerError):
    """A subtitle file or a subtitle stream cannot be read; the message names the file and line."""


class SpeechModelError(SummarizerError):
    """The speech recognition model (or faster-whisper itself) is missing or cannot be loaded."""


class ServerError(SummarizerError):
    """The model server (vLLM, for ``model.backend = "vllm"``) refused or failed a request; the message
    carries its own words."""


class ServerUnavailableError(ServerError):
    """The model server cannot be reached (down, wrong address) or dropped the connection mid-answer."""


class ServerTimeoutError(ServerError):
    """The model server did not answer within ``model.server_timeout_s``."""


class ServerModelError(ServerError):
    """The model server serves another model than ``model.id``."""


class ServerContextError(ServerError, ContextTooSmallError):
    """The request does not fit the server's context (vLLM's ``--max-model-len``)."""


class VideoGoneError(SummarizerError):
    """A video kept in the library can no longer be asked about: neither its file nor its cached vision
    features remain (or they were made for another model); the message tells the person to upload (open)
    the file again."""
