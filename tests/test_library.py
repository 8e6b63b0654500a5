"""The library (library.py): schema and migrations, search (English and Chinese), recording a job as it
streams, damage and concurrency, and the CLI's ``library`` commands and recording, on the tiny model."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qwen3vl_summarizer import cli, library
from qwen3vl_summarizer.events import Progress, TextDelta, TurnStats
from qwen3vl_summarizer.library import (
    Library,
    LibraryError,
    LibraryNotFoundError,
    index_terms,
    match_expression,
)
from qwen3vl_summarizer.options import LibraryOptions, load_options

from .videos import write_video

REPO = Path(__file__).resolve().parent.parent
SRT = """1
00:00:01,000 --> 00:00:02,500
Gradient checkpointing saves memory.

2
00:00:02,500 --> 00:00:03,800
这个注意力机制降低了延迟。
"""


@pytest.fixture
def lib(tmp_path) -> Library:
    with Library(tmp_path / "library.db") as opened:
        yield opened


def a_run(lib: Library, fingerprint: str = "fp", name: str = "talk.mp4") -> tuple[int, int]:
    video = lib.add_video(fingerprint, name, duration=600.0)
    return video, lib.start_run(video, "summarize", {"model": "m"}, "general")


# --- options ---------------------------------------------------------------------------------------------


def test_library_options_default_to_the_user_data_folder_and_the_environment_overrides(tmp_path):
    options = load_options(environ={})
    assert options.library == LibraryOptions(enabled=True, path="")
    assert (
        library.default_path({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "qwen3vl-summarizer/library.db"
    )
    home = library.default_path({})
    assert home == Path.home() / ".local/share/qwen3vl-summarizer/library.db"
    env = {"QWEN3VL_LIBRARY__PATH": str(tmp_path / "x.db"), "QWEN3VL_LIBRARY__ENABLED": "false"}
    options = load_options(environ=env)
    assert library.library_path(options.library) == tmp_path / "x.db"
    assert library.open_library(options.library) is None


def test_the_tests_library_is_not_in_the_home_folder():
    path = library.library_path(load_options().library)
    assert not path.is_relative_to(Path.home()) and path.parent.name.startswith("qwen3vl-test-library-")


# --- schema ----------------------------------------------------------------------------------------------


def test_a_new_library_is_wal_at_the_current_schema_and_reopens_with_its_data(tmp_path):
    path = tmp_path / "library.db"
    with Library(path) as lib:
        video, run = a_run(lib)
        lib.write_summary(run, "## [00:10] Intro", {"n": 1}, 600.0)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == library.SCHEMA_VERSION
    db.close()
    with Library(path) as lib:
        assert lib.video(video)["runs"][0]["chapters"] == [{"start": 10.0, "end": 600.0, "title": "Intro"}]


def test_a_library_from_a_newer_version_is_refused_not_replaced(tmp_path):
    path = tmp_path / "library.db"
    Library(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {library.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LibraryError, match="newer version"):
        Library(path)
    assert not list(tmp_path.glob("*.damaged-*"))


def test_migrations_run_in_order_from_an_older_schema(tmp_path, monkeypatch):
    path = tmp_path / "library.db"
    Library(path).close()
    extra = "ALTER TABLE videos ADD COLUMN note TEXT;"
    monkeypatch.setattr(library, "MIGRATIONS", [*library.MIGRATIONS, extra])
    monkeypatch.setattr(library, "SCHEMA_VERSION", library.SCHEMA_VERSION + 1)
    with Library(path) as lib:
        columns = {r[1] for r in lib._read("PRAGMA table_info(videos)")}
        assert "note" in columns
        assert lib._read("PRAGMA user_version")[0][0] == library.SCHEMA_VERSION


# --- search ----------------------------------------------------------------------------------------------


def test_cjk_text_is_indexed_as_bigrams_and_queried_as_their_phrase():
    assert index_terms("注意力机制") == " 注意 意力 力机 机制 制 "
    assert index_terms("GPU延迟 ok") == "GPU 延迟 迟  ok"
    assert match_expression("注意力机制") == '"注意 意力 力机 机制"'
    assert match_expression("机") == '"机"*'
    assert match_expression('launch "date" OR x*') == '"launch" AND "date" AND "OR" AND "x"'
    assert match_expression(" ,.; ") is None


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("机制", {"zh-transcript", "zh-summary"}),  # a two-character word inside longer runs
        ("延迟", {"zh-transcript"}),
        ("注意力机制", {"zh-summary"}),
        ("机", {"zh-transcript", "zh-summary"}),
        ("力机制", {"zh-summary"}),
        ("checkpointing", {"en-transcript", "en-chat"}),
        ("CHECKPOINTING memory", {"en-transcript"}),
        ("gradient 延迟", set()),  # every term must occur in the passage
        ("制降", {"zh-transcript"}),
        ("nothing", set()),
    ],
)
def test_search_finds_words_and_two_character_chinese_words(lib, query, found):
    video, run = a_run(lib)
    lib.write_transcript(
        run, [(1.0, 2.5, "Gradient checkpointing saves memory."), (2.5, 3.8, "这个机制降低了延迟。")]
    )
    lib.write_summary(run, "## [00:10] 注意力机制\n- at 0:42 the same idea", {"n": 1}, 600.0)
    lib.write_turn(run, 1, "what?", "Checkpointing is explained at [01:05].", {"n": 2})
    texts = {
        "Gradient checkpointing saves memory.": "en-transcript",
        "这个机制降低了延迟。": "zh-transcript",
        "## [00:10] 注意力机制": "zh-summary",
        "Checkpointing is explained at [01:05].": "en-chat",
    }
    hits = lib.search(query)
    assert {texts[h.text] for h in hits} == found
    for h in hits:
        assert h.video_id == video and h.video_name == "talk.mp4"
        assert (
            h.start
            == {"en-transcript": 1.0, "zh-transcript": 2.5, "zh-summary": 10.0, "en-chat": 65.0}[
                texts[h.text]
            ]
        )
        assert h.kind == texts[h.text].split("-")[1]
        assert library.MARK[0] in h.snippet and h.spans  # the match is marked


def test_snippets_mark_every_match_and_cut_long_passages():
    text = "x " * 200 + "the launch date moved; launch in March " + "y " * 200
    snippet, spans = library.mark(text, "Launch")
    assert snippet.startswith("…") and snippet.endswith("…")
    assert snippet.count("**launch**") == 2
    assert [text[s:e] for s, e in spans] == ["launch", "launch"]
    assert library.mark("注意力机制很重要", "机制")[0] == "注意力**机制**很重要"


def test_search_ranks_by_bm25_and_filters_by_kind(lib):
    _, run = a_run(lib)
    lib.write_transcript(run, [(0, 1, "latency " + "filler " * 30), (1, 2, "latency latency latency")])
    lib.write_turn(run, 1, "q", "latency", {"n": 1})
    hits = lib.search("latency", kinds=["transcript"])
    assert [h.text for h in hits] == ["latency latency latency", "latency " + "filler " * 30]
    assert [h.rank for h in hits] == sorted(h.rank for h in hits)
    assert {h.kind for h in lib.search("latency")} == {"transcript", "chat"}


def test_a_word_in_most_passages_lists_them_newest_first_and_a_question_leaves_it_out(lib, monkeypatch):
    monkeypatch.setattr(library, "COMMON_PASSAGES", 3)
    _, run_id = a_run(lib)
    lines = ["common alpha", "common common beta", "common gamma", "common delta rare", "common epsilon"]
    lib.write_transcript(run_id, [(i, i + 1, text) for i, text in enumerate(lines)])
    assert lib._passage_counts(match_expression("COMMON rare nothing")) == [5, 1, 0]
    newest = lib.search("common")  # 5 passages > 3: not scored, newest first
    assert [h.text for h in newest] == lines[::-1] and {h.rank for h in newest} == {None}
    assert [h.text for h in lib.search("common rare")] == ["common delta rare"]
    assert lib.search("common rare")[0].rank is not None  # the rare term bounds the matches: BM25
    asked = lib.retrieve("Is the common thing rare or beta?")  # "common" left out of the question
    assert sorted(h.text for h in asked) == ["common common beta", "common delta rare"]
    assert "**common**" not in asked[0].snippet
    assert [h.text for h in lib.retrieve("common?")] == lines[::-1][: library.ASK_PASSAGES]


def test_a_newer_transcript_replaces_the_older_in_search_and_delete_empties_the_index(lib):
    video, first = a_run(lib)
    lib.write_transcript(first, [(0, 1, "old words")])
    second = lib.start_run(video, "transcribe", {})
    lib.write_transcript(second, [(0, 1, "new words")])
    assert [h.text for h in lib.search("words")] == ["new words"]
    lib.delete(video)
    assert lib.search("words") == [] and lib.list_videos() == []
    assert lib._read("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'words'")[0][0] == 0
    with pytest.raises(LibraryNotFoundError):
        lib.video(video)


def test_delete_everything_takes_only_this_owners_videos(capsys, tmp_path, monkeypatch):
    path = tmp_path / "library.db"
    mine, theirs = Library(path), Library(path, owner="someone")
    for n in range(3):
        _, run_id = a_run(mine, f"fp{n}", f"v{n}.mp4")
        mine.write_transcript(run_id, [(0, 1, "kept words")])
    _, run_id = a_run(theirs, "fp-theirs", "theirs.mp4")
    theirs.write_transcript(run_id, [(0, 1, "kept words")])
    monkeypatch.setenv("QWEN3VL_LIBRARY__PATH", str(path))
    assert run(capsys, "library", "delete", "1", "--all")[0] == 1  # ids or --all, not both
    assert run(capsys, "library", "delete", "1", "99")[0] == 1  # an unknown id: nothing deleted
    assert mine.count_videos() == 3
    code, out, _ = run(capsys, "library", "delete", "--all", "--json")
    assert code == 0 and json.loads(out) == {"deleted": 3}
    assert mine.count_videos() == 0 and mine.search("kept") == []
    assert [h.video_name for h in theirs.search("kept")] == ["theirs.mp4"]


def test_one_owner_never_sees_anothers_videos(tmp_path):
    alice, bob = Library(tmp_path / "l.db", owner="alice"), Library(tmp_path / "l.db", owner="bob")
    video, run = a_run(alice)
    alice.write_transcript(run, [(0, 1, "secret plan")])
    assert bob.search("secret") == [] and bob.list_videos() == []
    with pytest.raises(LibraryNotFoundError):
        bob.delete(video)
    assert [h.text for h in alice.search("secret")] == ["secret plan"]


def test_the_same_content_is_one_video_listed_newest_first(lib):
    first = lib.add_video("fp-a", "a.mp4")
    second = lib.add_video("fp-b", "b.mp4")
    assert [v["id"] for v in lib.list_videos()] == [second, first]
    again = lib.add_video("fp-a", "a renamed.mp4")
    assert again == first
    listed = lib.list_videos()
    assert [v["name"] for v in listed] == ["a renamed.mp4", "b.mp4"] and lib.count_videos() == 2
    assert [v["id"] for v in lib.list_videos(limit=1, offset=1)] == [second]


# --- recording as it streams ----------------------------------------------------------------------------


def stats(text: str, question: str = "q") -> TurnStats:
    return TurnStats(question, text, [1, 2], 10, 0.1, 5.0)


def test_the_recorder_writes_the_first_text_before_passing_it_on_then_the_whole_answer(lib):
    video, run = a_run(lib)
    recorder = library.Recorder(lib, video, run, 600.0)
    events = [Progress("prefill", 1, 1), TextDelta("", 1), TextDelta("## [00:05] Start", 2),
              TextDelta(" more", 3), stats("## [00:05] Start more")]  # fmt: skip
    seen = []
    for event in recorder.tap(iter(events), "summarize it"):
        seen.append(event)
        if event == events[2]:  # the first text, as a front end shows it: already in the library
            assert lib.video(video)["runs"][0]["summary"] == "## [00:05] Start"
    assert seen == events
    recorder.finish()
    run_row = lib.video(video)["runs"][0]
    assert run_row["summary"] == "## [00:05] Start more" and run_row["finished"]
    assert run_row["stats"]["prefill_tokens"] == 10
    assert run_row["chapters"][0]["start"] == 5.0


def test_text_is_written_a_few_times_a_second_while_it_streams(lib, monkeypatch):
    video, run = a_run(lib)
    writes = []
    monkeypatch.setattr(lib, "write_summary", lambda run_id, text, *a: writes.append(text))
    clock = iter(range(0, 10_000, 1))  # ms: each reading advances 1 ms
    recorder = library.Recorder(lib, video, run, 600.0)
    recorder.clock = lambda: next(clock) / 1000
    deltas = [TextDelta("w ", i) for i in range(2000)]
    list(recorder.tap(iter([*deltas, stats("w " * 2000)]), "q"))
    # 2000 deltas over 2-4 simulated seconds: one write per FLUSH_INTERVAL_S while streaming, then the whole
    assert writes[0] == "w " and writes[-1] == "w " * 2000
    assert 2 / library.FLUSH_INTERVAL_S - 1 <= len(writes) - 1 <= 4 / library.FLUSH_INTERVAL_S + 1
    assert all(len(a) <= len(b) for a, b in itertools.pairwise(writes))  # never less of the text


def test_an_answer_that_fails_keeps_its_text_and_marks_the_run_unfinished(lib):
    video, run = a_run(lib)
    recorder = library.Recorder(lib, video, run, 600.0)

    def failing():
        yield TextDelta("part one", 1)
        yield TextDelta(" part two", 2)
        raise RuntimeError("device lost")

    with pytest.raises(RuntimeError):
        list(recorder.tap(failing(), "q"))
    row = lib.video(video)["runs"][0]
    assert row["summary"] == "part one part two"
    assert not row["finished"] and row["error"] == "device lost"
    assert lib.list_videos()[0]["finished"] is False


def test_an_answer_stopped_early_keeps_its_text_and_says_so_until_the_run_finishes(lib):
    video, run = a_run(lib)
    recorder = library.Recorder(lib, video, run, 600.0)
    events = recorder.tap(iter([TextDelta("first", 1), TextDelta(" second", 2), stats("first second")]), "q")
    assert next(events).text == "first"
    events.close()  # the reader stopped (a Stop button)
    row = lib.video(video)["runs"][0]
    assert (row["summary"], row["finished"], row["error"]) == ("first", False, library.STOPPED)
    list(recorder.tap(iter([TextDelta("again", 1), stats("again")]), "q", turn=0))  # asked again, to the end
    recorder.finish()
    row = lib.video(video)["runs"][0]
    assert (row["summary"], row["finished"], row["error"]) == ("again", True, None)


def test_follow_ups_are_turns_and_their_answers_are_searchable(lib):
    video, run = a_run(lib)
    recorder = library.Recorder(lib, video, run, 600.0)
    list(recorder.tap(iter([TextDelta("summary", 1), stats("summary")]), "prompt"))
    list(
        recorder.tap(
            iter([TextDelta("at 1:30 the launch", 1), stats("at 1:30 the launch", "when?")]), "when?"
        )
    )
    turns = lib.video(video)["runs"][0]["turns"]
    assert [(t["number"], t["question"], t["answer"], t["finished"]) for t in turns] == [
        (1, "when?", "at 1:30 the launch", True)
    ]
    assert [(h.kind, h.start) for h in lib.search("launch")] == [("chat", 90.0)]
    assert lib.list_videos()[0]["questions"] == 1
    list(
        recorder.tap(iter([TextDelta("new summary", 1), stats("new summary")]), "prompt", turn=0)
    )  # branch 0
    assert lib.video(video)["runs"][0]["turns"] == [] and lib.search("launch") == []


def test_a_failing_disk_stops_the_recording_not_the_answer(lib, monkeypatch, caplog):
    video, run = a_run(lib)
    recorder = library.Recorder(lib, video, run, 600.0)

    def broken(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(lib, "write_summary", broken)
    events = [TextDelta("a", 1), TextDelta("b", 2), stats("ab")]
    with caplog.at_level(logging.WARNING, "qwen3vl_summarizer.library"):
        assert list(recorder.tap(iter(events), "q")) == events
    assert "stopped recording" in caplog.text and recorder.broken


# --- damage and concurrency ------------------------------------------------------------------------------


def test_a_damaged_file_is_set_aside_with_a_message_and_a_fresh_library_started(tmp_path, caplog):
    path = tmp_path / "library.db"
    garbage = b"this is not a database " * 500
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, "qwen3vl_summarizer.library"):
        lib = Library(path)
    assert lib.set_aside is not None and lib.set_aside.read_bytes() == garbage  # kept, not wiped
    assert str(lib.set_aside) in caplog.text and "could not be read" in caplog.text
    assert lib.list_videos() == []
    a_run(lib)
    assert len(lib.list_videos()) == 1
    lib.close()


def test_a_damaged_library_is_one_warning_in_the_cli(capsys, tmp_path, monkeypatch):
    path = tmp_path / "library.db"
    path.write_bytes(b"\0garbage" * 1000)
    monkeypatch.setenv("QWEN3VL_LIBRARY__PATH", str(path))
    code = cli.main(["library", "list"])
    out, err = capsys.readouterr()
    assert code == 0 and out == "" and "Traceback" not in err
    assert "warning: library" in err and "moved to" in err and "no videos" in err


def test_a_library_damaged_inside_is_set_aside_when_opened(capsys, tmp_path, monkeypatch):
    path = tmp_path / "library.db"
    with Library(path) as lib:
        for n in range(5):
            _, run_id = a_run(lib, f"fp{n}", f"v{n}.mp4")
            lib.write_transcript(run_id, [(i, i + 1, f"line {i}") for i in range(100)])
        lib._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes(range(256)) * ((len(data) - page) // 256) + bytes((len(data) - page) % 256)
    path.write_bytes(bytes(data))  # the header and first page survive; every other page is garbage
    monkeypatch.setenv("QWEN3VL_LIBRARY__PATH", str(path))
    code, out, err = run(capsys, "library", "list")
    assert code == 0 and out == "" and "Traceback" not in err
    assert "database disk image is malformed" in err and "moved to" in err
    assert len(list(tmp_path.glob("library.db.damaged-*"))) == 1


class _Damaged:
    """A connection whose every statement fails as a damaged file does."""

    in_transaction = False

    def execute(self, *args):
        error = sqlite3.DatabaseError("database disk image is malformed")
        error.sqlite_errorname = "SQLITE_CORRUPT"
        raise error


def test_damage_found_later_is_a_library_error_saying_what_to_do(lib, monkeypatch):
    real = lib._db
    monkeypatch.setattr(lib, "_db", _Damaged())
    for call in (lambda: lib.list_videos(), lambda: lib.search("x"), lambda: lib.add_video("f", "n")):
        with pytest.raises(LibraryError, match=r"is damaged .*malformed.*\.recover"):
            call()
    monkeypatch.setattr(lib, "_db", real)


def test_four_processes_writing_at_once_never_see_database_is_locked(tmp_path):
    path = tmp_path / "library.db"
    Library(path).close()
    script = (
        "import sys\n"
        "from qwen3vl_summarizer.library import Library\n"
        "n = int(sys.argv[2])\n"
        "lib = Library(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"  # all four start writing together
        "for k in range(20):\n"
        "    video = lib.add_video(f'p{n}-{k}', f'p{n}-{k}.mp4')\n"
        "    run = lib.start_run(video, 'summarize', {})\n"
        "    for i in range(1, 6):\n"
        "        lib.write_summary(run, f'proc{n} ' * i)\n"
        "    lib.write_transcript(run, [(i, i + 1, f'line {i} of proc{n}') for i in range(100)])\n"
        "    lib.finish_run(run)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )  # fmt: skip
        for n in range(4)
    ]
    for p in processes:
        assert p.stdout.readline().strip() == "ready"
    for p in processes:
        p.stdin.write("go\n")
        p.stdin.flush()
    errors = [p.communicate()[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
    with Library(path) as lib:
        assert lib.count_videos() == 80 and all(v["finished"] for v in lib.list_videos(limit=100))
        assert len(lib.search("proc3", limit=5000)) == 20 * (100 + 1)  # each transcript line, each summary


def test_four_sessions_writing_at_once_never_see_database_is_locked(tmp_path):
    path = tmp_path / "library.db"
    Library(path).close()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def session(n: int) -> None:
        try:
            with Library(path) as lib:  # its own connection, as another process would have
                start.wait()
                for k in range(15):
                    video, run = a_run(lib, f"fp-{n}-{k}", f"v{n}-{k}.mp4")
                    recorder = library.Recorder(lib, video, run, 60.0)
                    deltas = [TextDelta(f"word{n} ", i) for i in range(20)]
                    list(recorder.tap(iter([*deltas, stats(f"word{n} " * 20)]), "q"))
                    lib.write_transcript(run, [(i, i + 1, f"line {i} of {n}") for i in range(50)])
                    recorder.finish()
                    lib.search(f"word{n}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Library(path) as lib:
        assert lib.count_videos() == 60
        assert all(v["finished"] for v in lib.list_videos(limit=100))
        assert len(lib.search("word2", limit=100)) == 15


# --- the command line ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> Path:
    """A 4 s video with a sidecar transcript (English and Chinese)."""
    folder = tmp_path_factory.mktemp("library-videos")
    path = folder / "talk.mp4"
    write_video(path, [i / 5 for i in range(20)])
    path.with_suffix(".srt").write_text(SRT, encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "library.db"
    monkeypatch.setenv("QWEN3VL_LIBRARY__PATH", str(path))
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def summarize(capsys, model: Path, video: Path, *extra) -> tuple[int, str, str]:
    return run(
        capsys, "summarize", video, "--model", model, "--device", "cpu", "--dtype", "float32",
        "--max-new-tokens", "6", *extra,
    )  # fmt: skip


def test_a_video_read_from_the_feature_cache_still_gets_its_poster(capsys, tiny_model_dir, tmp_path, db):
    """A feature-cache hit decodes no frame while reading: the poster is decoded by seeking instead."""
    video = tmp_path / "cached.mp4"
    write_video(video, [i / 4 for i in range(12)], size=(96, 64))
    code, _, err = summarize(capsys, tiny_model_dir, video, "--no-library")  # fills the feature cache
    assert code == 0, err
    code, _, err = summarize(capsys, tiny_model_dir, video)
    assert code == 0, err
    [entry] = json.loads(run(capsys, "library", "list", "--json")[1])["videos"]
    [record] = json.loads(run(capsys, "library", "show", entry["id"], "--json")[1])["runs"]
    assert record["stats"]["read_video"] is False, "the second run read the feature cache"
    assert entry["name"] == "cached.mp4" and entry["has_poster"]


def test_summarize_records_the_video_summary_answers_transcript_and_thumbnails(
    capsys, tiny_model_dir, talk, db
):
    code, out, err = summarize(capsys, tiny_model_dir, talk, "--ask", "what is said?")
    assert code == 0, err
    code, listed, _ = run(capsys, "library", "list", "--json")
    videos = json.loads(listed)["videos"]
    assert [(v["name"], v["questions"], v["finished"], v["has_poster"]) for v in videos] == [
        ("talk.mp4", 1, True, True)
    ]
    code, shown, _ = run(capsys, "library", "show", videos[0]["id"], "--json")
    video = json.loads(shown)
    assert video["duration"] == pytest.approx(4.0, abs=0.3) and video["streams"]["codec"]
    assert video["thumbnails"]
    (record,) = video["runs"]
    assert record["finished"] and record["settings"]["model"] == str(tiny_model_dir)
    assert record["summary"] and record["summary"] in out  # the summary streamed to stdout
    assert record["turns"][0]["question"] == "what is said?" and record["turns"][0]["answer"] in out
    assert [s["text"] for s in record["transcript"]][0] == "Gradient checkpointing saves memory."
    assert record["settings"]["speech_source"].startswith("sidecar")

    code, found, _ = run(capsys, "library", "search", "机制", "--json")
    (hit,) = json.loads(found)
    assert hit["video"] == {"id": video["id"], "name": "talk.mp4"}
    assert hit["start"] == 2.5 and hit["kind"] == "transcript" and "机制" in hit["text"]
    code, text, _ = run(capsys, "library", "search", "checkpointing")
    assert code == 0 and "talk.mp4 @ 00:01" in text and "**checkpointing**" in text

    code, exported, _ = run(capsys, "library", "export", video["id"], "--format", "transcript.srt")
    assert "Gradient checkpointing saves memory." in exported and "00:00:01,000" in exported
    code, exported, _ = run(capsys, "library", "export", video["id"])
    assert record["summary"].strip()[:20] in exported

    # the same file again is the same video, with a second run
    assert summarize(capsys, tiny_model_dir, talk)[0] == 0
    again = json.loads(run(capsys, "library", "list", "--json")[1])["videos"]
    assert len(again) == 1 and json.loads(run(capsys, "library", "show", video["id"], "--json")[1])["runs"][1]

    # a question over the library: passages retrieved, answered by the model from them alone
    code, asked, err = run(
        capsys, "library", "ask", "Which video explains gradient checkpointing?", "--json", "--model", tiny_model_dir,
        "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4",
    )  # fmt: skip
    assert code == 0, err
    answer = json.loads(asked)
    assert (
        answer["found"]
        and answer["stats"]["prefill_tokens"] > 0
        and 1 <= answer["stats"]["generated_tokens"] <= 4
    )
    assert answer["passages"][0]["text"] == "Gradient checkpointing saves memory."
    assert answer["passages"][0]["video"] == {"id": video["id"], "name": "talk.mp4"}

    code, out, _ = run(capsys, "library", "delete", video["id"], "--json")
    assert json.loads(out) == {"deleted": [{"id": video["id"], "name": "talk.mp4"}]}
    assert json.loads(run(capsys, "library", "search", "机制", "--json")[1]) == []
    code, out, err = run(capsys, "library", "show", video["id"])
    assert code == 1 and err.startswith("error: no video") and "Traceback" not in err


def test_no_library_records_nothing(capsys, tiny_model_dir, talk, db):
    code, _, err = summarize(capsys, tiny_model_dir, talk, "--no-library")
    assert code == 0, err
    assert not db.exists() or json.loads(run(capsys, "library", "list", "--json")[1])["videos"] == []


def test_transcribe_records_the_transcript(capsys, talk, db):
    code, out, err = run(capsys, "transcribe", talk)
    assert code == 0, err and "checkpointing" in out
    (video,) = json.loads(run(capsys, "library", "list", "--json")[1])["videos"]
    assert video["name"] == "talk.mp4" and video["finished"]
    hits = json.loads(run(capsys, "library", "search", "延迟", "--json")[1])
    assert [(h["kind"], h["start"]) for h in hits] == [("transcript", 2.5)]
    assert run(capsys, "transcribe", talk, "--no-library")[0] == 0
    assert len(json.loads(run(capsys, "library", "show", video["id"], "--json")[1])["runs"]) == 1


def test_a_search_with_nothing_found_says_so(capsys, db):
    code, out, err = run(capsys, "library", "search", "nowhere")
    assert code == 0 and out == "" and "nothing found" in err


def test_a_summary_killed_with_sigkill_keeps_the_video_and_the_text_shown(tiny_model_dir, talk, tmp_path):
    """kill -9 while the answer streams: the video and the text written so far are in the library, and
    the run is marked unfinished. Waits on the process's output, never on time."""
    path = tmp_path / "library.db"
    env = {**os.environ, "QWEN3VL_LIBRARY__PATH": str(path), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen3vl_summarizer", "summarize", str(talk), "--model", str(tiny_model_dir),
         "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4000", "--speech", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        shown = b""
        while not shown.strip():  # the first answer text: the recorder wrote it before it was printed
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, "the summary ended before any text was shown"
            shown += chunk
        process.kill()
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -9
    with Library(path) as lib:
        (video,) = lib.list_videos()
        assert video["name"] == "talk.mp4" and video["finished"] is False
        record = lib.video(video["id"])["runs"][0]
    assert not record["finished"] and record["error"] is None  # nobody could say why: it was killed
    assert record["summary"].strip()
    printed = shown + process.stdout.read()  # everything printed before the kill
    recorded = record["summary"].encode()
    # the same text: the library can be one chunk ahead of the terminal (it writes, then the CLI prints)
    assert printed.startswith(recorded) or recorded.startswith(printed)


# --- asking the library -----------------------------------------------------------------------------------


def test_a_question_retrieves_by_any_of_its_words_without_stopwords():
    expression = library.any_term_expression("Which lecture explained gradient checkpointing?")
    assert expression == '"lecture" OR "explained" OR "gradient" OR "checkpointing"'
    assert library.any_term_expression("哪里讲了机制？") == '"哪里" OR "里讲" OR "讲了" OR "了机" OR "机制"'
    assert library.any_term_expression("what is it?") is None


def test_retrieval_ranks_the_passages_that_answer_and_the_prompt_cites_them(lib):
    video, run = a_run(lib, name="lecture 3.mp4")
    lib.write_transcript(run, [(65.0, 70.0, "Gradient checkpointing trades compute for memory."),
                               (3700.0, 3705.0, "Lunch is at noon."), (80.0, 85.0, "这个机制降低了延迟。")])  # fmt: skip
    hits = lib.retrieve("Which lecture explained gradient checkpointing?")
    assert [h.text for h in hits] == ["Gradient checkpointing trades compute for memory."]
    assert hits[0].snippet == "**Gradient** **checkpointing** trades compute for memory."
    prompt = library.ask_prompt("Which lecture explained gradient checkpointing?", hits)
    assert "[lecture 3.mp4 @ 01:05] (transcript) Gradient checkpointing trades compute for memory." in prompt
    assert prompt.rstrip().endswith("Question: Which lecture explained gradient checkpointing?")
    zh = lib.retrieve("哪个视频讲了延迟机制？")
    assert [h.start for h in zh] == [80.0]
    assert "问题：哪个视频讲了延迟机制？" in library.ask_prompt("哪个视频讲了延迟机制？", zh)
    assert lib.retrieve("Where is the weather report?") == []


def test_asking_with_nothing_found_says_so_without_loading_a_model(capsys, db, monkeypatch):
    def no_model(*args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "_load_engine", no_model)
    code, out, err = run(capsys, "library", "ask", "Where is the weather report?")
    assert code == 0 and out.strip() == library.NOTHING_FOUND, err
    code, out, _ = run(capsys, "library", "ask", "天气预报在哪里？", "--json")
    assert json.loads(out) == {"question": "天气预报在哪里？", "found": False, "answer": library.NOTHING_FOUND_ZH,
                               "passages": []}  # fmt: skip
