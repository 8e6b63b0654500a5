"""Reopening a video from the library (jobs.reopen_job): the conversation token for token from the
feature cache without the file, its precise failures, videos in parts, deleting what a video left
(library.delete_video), and runs recorded before schema 2 (tiny model, real videos)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import av
import pytest

from qwen3vl_summarizer import cli, library
from qwen3vl_summarizer.errors import VideoGoneError
from qwen3vl_summarizer.events import TextDelta
from qwen3vl_summarizer.feature_cache import FeatureCache, file_fingerprint
from qwen3vl_summarizer.jobs import delete_everything, delete_video, open_job, reopen_job
from qwen3vl_summarizer.library import Library
from qwen3vl_summarizer.loading import load_engine
from qwen3vl_summarizer.options import ModelOptions, load_options
from qwen3vl_summarizer.transcripts import video_prefix
from tests.videos import write_video

PROMPT = "Summarize the video."
SRT = """1
00:00:00,500 --> 00:00:02,000
Gradient checkpointing saves memory.

2
00:00:02,500 --> 00:00:04,000
这个注意力机制降低了延迟。
"""


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return load_engine(ModelOptions(str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture
def fresh_engine(tiny_model_dir):
    """Another Engine on the same model folder, as a restarted server loads it."""
    return load_engine(ModelOptions(str(tiny_model_dir), device="cpu", dtype="float32"))


def options(tmp_path: Path, context: int = 8192):
    return load_options(
        overrides={
            "sampling": {"fps": 2.0, "min_pixels": 128 * 96, "max_pixels": 128 * 96},
            "context": {"max_context": context, "reserve_tokens": 400, "prefill_chunk_size": 256},
            "generation": {"max_new_tokens": 6, "temperature": 0.0, "repetition_penalty": 1.0},
            "cache": {"enabled": True, "dir": str(tmp_path / "features")},
            "speech": {"mode": "subtitles"},
        },
        environ={},
    )


def a_talk(folder: Path, seconds: float = 6.0, name: str = "talk.mp4") -> Path:
    path = folder / name
    write_video(path, [i * 0.5 for i in range(int(seconds * 2))])
    path.with_suffix(".srt").write_text(SRT)
    return path


def recorded(engine, lib: Library, video: Path, opts, questions: list[str], *, upload: bool = False):
    """The video summarised and asked ``questions``, every answer recorded; returns (job, video id)."""
    job = open_job(engine, video, opts, PROMPT)
    recorder = lib.record(job, "summarize", "general", upload=upload)
    for question in [PROMPT, *questions]:
        for _ in recorder.tap(job.ask(question).events(), question):
            pass
    recorder.finish()
    return job, recorder.video_id


@pytest.fixture
def opened_files(monkeypatch) -> list[str]:
    """Every file PyAV opens from now on."""
    opened: list[str] = []
    real = av.open

    def counting(file, *args, **kwargs):
        opened.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting)
    return opened


def test_a_reopened_video_answers_token_for_token_without_its_file(
    engine, fresh_engine, tmp_path, opened_files
):
    opts = options(tmp_path)
    video = a_talk(tmp_path)
    lib = Library(tmp_path / "library.db")
    job, video_id = recorded(engine, lib, video, opts, ["What is said first?"])
    assert job.speech, "the transcript is in the prompt: the reopened one must be too"
    # The same question on the original job (not recorded): what the reopened one must answer.
    expected = job.ask("And at the end?").stats
    video.unlink()
    video.with_suffix(".srt").unlink()
    opened_files.clear()

    reopened = reopen_job(fresh_engine, Library(tmp_path / "library.db"), video_id, opts)
    assert [a.text for a in reopened.answers] == [a.text for a in job.answers[:2]]
    assert [a.question for a in reopened.answers] == [PROMPT, "What is said first?"]
    assert reopened.summary_text == job.answers[0].text and reopened.speech == job.speech
    assert [t.text for t in reopened.transcript.segments] == [t.text for t in job.transcript.segments]
    recorder = lib.resume(reopened)  # its answers go on in the same run of the library
    response = reopened.ask("And at the end?")
    for _ in recorder.tap(response.events(), "And at the end?"):
        pass
    answer = response.stats
    assert answer.tokens == expected.tokens and answer.text == expected.text
    assert not answer.read_video and reopened.session.features_from_cache
    assert reopened.session.ids == job.session.ids, "the rebuilt cache holds what the original did"
    assert opened_files == [], "the video was not decoded"
    (run,) = lib.video(video_id)["runs"]
    assert [t["question"] for t in run["turns"]] == ["What is said first?", "And at the end?"]
    assert [t.question for t in lib.stored_run(video_id).parts[0].turns] == [
        PROMPT,
        "What is said first?",
        "And at the end?",
    ], "and the conversation the model saw"
    # A new summary of the reopened video is a new run of the same video, its file gone or not.
    assert lib.record(reopened, "summarize", "general").video_id == video_id


def test_the_file_is_read_again_only_where_its_features_are_missing(engine, tmp_path, opened_files):
    opts = options(tmp_path)
    video = a_talk(tmp_path)
    lib = Library(tmp_path / "library.db")
    job, video_id = recorded(engine, lib, video, opts, [])
    expected = job.ask("What happens?").stats
    FeatureCache(tmp_path / "features", 2**30).remove(job.parts[0].feature_key)
    opened_files.clear()
    reopened = reopen_job(engine, lib, video_id, opts)
    answer = reopened.ask("What happens?").stats
    assert answer.read_video and answer.tokens == expected.tokens
    assert opened_files and all(Path(f) == video for f in opened_files)


def test_a_video_whose_file_and_features_are_gone_says_to_upload_it_again(engine, tmp_path):
    opts = options(tmp_path)
    video = a_talk(tmp_path)
    lib = Library(tmp_path / "library.db")
    job, video_id = recorded(engine, lib, video, opts, ["What is said first?"])
    cache = FeatureCache(tmp_path / "features", 2**30)
    video.unlink()

    # Features gone after the video was reopened: the question fails precisely, and keeps failing so.
    reopened = reopen_job(engine, lib, video_id, opts)
    assert cache.remove(job.parts[0].feature_key)
    for _ in range(2):
        with pytest.raises(VideoGoneError, match="upload .*again"):
            reopened.ask("And then?").stats  # noqa: B018

    # Gone before: reopening says so at once.
    with pytest.raises(VideoGoneError, match="talk.mp4: its file and its cached vision features are gone"):
        reopen_job(engine, lib, video_id, opts)

    # A file of the same name with other content is not the video.
    write_video(video, [i * 0.25 for i in range(12)])
    with pytest.raises(VideoGoneError, match="upload the video again"):
        reopen_job(engine, lib, video_id, opts)


def test_another_model_reads_the_file_again_or_says_it_is_gone(engine, tmp_path):
    from tests.tiny_model import build_tiny_model

    other = load_engine(ModelOptions(str(build_tiny_model(tmp_path / "other", seed=1)), device="cpu",
                                     dtype="float32"))  # fmt: skip
    assert other.fingerprint != engine.fingerprint
    opts = options(tmp_path)
    video = a_talk(tmp_path)
    lib = Library(tmp_path / "library.db")
    job, video_id = recorded(engine, lib, video, opts, ["What is said first?"])
    reopened = reopen_job(other, lib, video_id, opts)
    assert [a.text for a in reopened.answers] == [a.text for a in job.answers]
    answer = reopened.ask("And then?").stats
    assert answer.read_video, "the other model's features are made from the file"
    prompt = other.tokenizer.decode(reopened.session.ids)
    assert job.answers[1].text in prompt and "What is said first?" in prompt, "the conversation so far"
    video.unlink()
    with pytest.raises(VideoGoneError, match="another model"):
        reopen_job(other, lib, video_id, opts)


def test_a_video_in_parts_reopens_with_its_merged_summary_and_answers(engine, fresh_engine, tmp_path):
    opts = options(tmp_path, context=1024)
    video = tmp_path / "long.mp4"
    write_video(video, [i * 0.5 for i in range(80)])  # 40 s: parts at a 1,024-token context
    lib = Library(tmp_path / "library.db")
    job, video_id = recorded(engine, lib, video, opts, ["What happens at 0:35?"])
    assert len(job.parts) >= 2 and job.merged
    expected_late = job.ask("And at 0:36?").stats  # the part holding 0:36: its session is live
    expected_first = job.ask("What is at 0:01?").stats  # the first part, rebuilt from its turns
    video.unlink()

    reopened = reopen_job(fresh_engine, lib, video_id, opts)
    assert reopened.merged == job.merged and reopened.summary_text == job.summary_text
    assert [p.summary for p in reopened.parts] == [p.summary for p in job.parts]
    assert [(p.segment.start, p.segment.end) for p in reopened.parts] == [
        (p.segment.start, p.segment.end) for p in job.parts
    ]
    late = reopened.ask("And at 0:36?").stats
    first = reopened.ask("What is at 0:01?").stats
    assert (late.tokens, first.tokens) == (expected_late.tokens, expected_first.tokens)
    assert not late.read_video and not first.read_video


def test_delete_video_removes_the_cached_features_and_the_uploaded_copy_not_a_users_file(engine, tmp_path):
    opts = options(tmp_path)
    lib = Library(tmp_path / "library.db")
    mine = a_talk(tmp_path, name="mine.mp4")
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    copy = a_talk(upload_dir, seconds=5.0, name="copy.mp4")
    cache = FeatureCache(tmp_path / "features", 2**30)
    mine_job, mine_id = recorded(engine, lib, mine, opts, [])
    copy_job, copy_id = recorded(engine, lib, copy, opts, [], upload=True)
    keys = [mine_job.parts[0].feature_key, copy_job.parts[0].feature_key]
    assert all(cache.contains(k) for k in keys)

    transcripts = tmp_path / "features" / "transcripts"
    said = {v: f"{video_prefix(file_fingerprint(v))}-" for v in (mine, copy)}
    assert all(any(f.name.startswith(said[v]) for f in transcripts.iterdir()) for v in (mine, copy))

    delete_video(lib, copy_id, opts)
    assert not copy.exists() and not cache.contains(keys[1]), "the app's copy and its features"
    assert cache.contains(keys[0]) and mine.exists()
    left = [f.name for f in transcripts.iterdir()]
    assert [n for n in left if n.startswith(said[mine])] and not [n for n in left if n.startswith(said[copy])]
    with pytest.raises(library.LibraryNotFoundError):
        lib.video(copy_id)

    delete_video(lib, mine_id, opts)
    assert not cache.contains(keys[0]) and mine.exists(), "a file named on the command line stays"

    # A run stopped at its first words (or killed) cached its features already: they go too.
    job = open_job(engine, mine, opts, PROMPT)
    recorder = lib.record(job, "summarize", "general")
    for event in recorder.tap(job.ask(PROMPT).events(), PROMPT):
        if isinstance(event, TextDelta) and event.text:
            break
    assert cache.contains(keys[0]) and not lib.video(recorder.video_id)["runs"][0]["finished"]
    delete_video(lib, recorder.video_id, opts)
    assert not cache.contains(keys[0])


def test_features_another_owner_still_uses_are_kept(engine, tmp_path):
    opts = options(tmp_path)
    video = a_talk(tmp_path)
    alice, bob = (Library(tmp_path / "library.db", owner=o) for o in ("alice", "bob"))
    job, alice_id = recorded(engine, alice, video, opts, [])
    _, bob_id = recorded(engine, bob, video, opts, [])
    cache = FeatureCache(tmp_path / "features", 2**30)
    assert delete_everything(alice, opts) == 1
    transcripts = tmp_path / "features" / "transcripts"
    said = f"{video_prefix(file_fingerprint(video))}-"
    assert cache.contains(job.parts[0].feature_key), "bob's run of the same content needs them"
    assert [f for f in transcripts.iterdir() if f.name.startswith(said)], "and its transcript"
    delete_video(bob, bob_id, opts)
    assert not cache.contains(job.parts[0].feature_key)
    assert not [f for f in transcripts.iterdir() if f.name.startswith(said)]


def test_the_cli_deletes_the_cached_features_of_a_video_but_not_its_file(
    engine, tmp_path, monkeypatch, capsys
):
    opts = options(tmp_path)
    db = tmp_path / "library.db"
    monkeypatch.setenv("QWEN3VL_LIBRARY__PATH", str(db))
    monkeypatch.setenv("QWEN3VL_CACHE__DIR", str(tmp_path / "features"))
    video = a_talk(tmp_path)
    job, video_id = recorded(engine, Library(db), video, opts, [])
    key = job.parts[0].feature_key
    assert cli.main(["library", "delete", str(video_id)]) == 0, capsys.readouterr().err
    assert not FeatureCache(tmp_path / "features", 2**30).contains(key) and video.exists()


def test_a_library_of_schema_1_keeps_its_rows_and_its_runs_reopen_from_their_file(
    engine, tmp_path, monkeypatch
):
    opts = options(tmp_path)
    video = a_talk(tmp_path)
    path = tmp_path / "library.db"
    job = open_job(engine, video, opts, PROMPT)
    summary, answer = job.ask(PROMPT).stats, job.ask("What is said first?").stats
    with monkeypatch.context() as old:  # the version before: schema 1, none of what reopening needs
        old.setattr(library, "MIGRATIONS", library.MIGRATIONS[:1])
        old.setattr(library, "SCHEMA_VERSION", 1)
        with Library(path) as lib:  # written as schema 1's Library.record and Recorder wrote a run
            video_id = lib.add_video(file_fingerprint(video), video.name, path=str(video), duration=6.0)
            settings = {"model": engine.model_id, "fps": 2.0, "range": [0.0, None], "speech": "subtitles"}
            run = lib.start_run(video_id, "summarize", settings, "general")
            lib.write_summary(run, summary.text, summary.to_dict(), 6.0)
            lib.write_turn(run, 1, answer.question, answer.text, answer.to_dict())
            lib.finish_run(run)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1

    lib = Library(path)
    assert lib._read("PRAGMA user_version")[0][0] == library.SCHEMA_VERSION
    (run,) = lib.video(video_id)["runs"]
    assert run["summary"] == job.answers[0].text and run["turns"][0]["answer"] == job.answers[1].text
    assert run["opened"] is None and lib.stored_run(video_id).parts == []

    # The summary is shown; the follow-ups need the file: read again, the conversation from its text.
    reopened = reopen_job(engine, lib, video_id, opts)
    assert [a.text for a in reopened.answers] == [a.text for a in job.answers]
    assert reopened.ask("And then?").stats.tokens
    prompt = engine.tokenizer.decode(reopened.session.ids)
    assert f"{PROMPT}" in prompt and job.answers[1].text in prompt, "the conversation so far, from its text"
    video.unlink()
    with pytest.raises(VideoGoneError, match="older version.*upload the video again"):
        reopen_job(engine, lib, video_id, opts)


def test_an_answer_stopped_early_is_shown_but_not_in_the_reopened_conversation(engine, tmp_path):
    opts = options(tmp_path)
    video = a_talk(tmp_path)
    lib = Library(tmp_path / "library.db")
    job = open_job(engine, video, opts, PROMPT)
    recorder = lib.record(job, "summarize", "general")
    video_id = recorder.video_id
    for _ in recorder.tap(job.ask(PROMPT).events(), PROMPT):
        pass
    for event in recorder.tap(job.ask("Stopped?").events(), "Stopped?"):
        if isinstance(event, TextDelta) and event.text:
            break  # the person pressed Stop: the session drops the turn, the library keeps its text
    for _ in recorder.tap(job.ask("Finished?").events(), "Finished?"):
        pass
    assert [a.question for a in job.answers] == [PROMPT, "Finished?"]
    expected = job.ask("And then?").stats

    reopened = reopen_job(engine, lib, video_id, opts)
    assert [a.question for a in reopened.answers] == [PROMPT, "Finished?"]
    resumed = lib.resume(reopened)
    response = reopened.ask("And then?")
    for _ in resumed.tap(response.events(), "And then?"):
        pass
    assert response.stats.tokens == expected.tokens
    turns = lib.video(video_id)["runs"][0]["turns"]
    assert [(t["number"], t["question"], t["finished"]) for t in turns] == [
        (1, "Stopped?", False), (2, "Finished?", True), (3, "And then?", True),
    ]  # fmt: skip
