"""The library: every video summarised or transcribed, kept in one SQLite database and searchable.

What is kept, per video (its identity is the feature cache's content fingerprint, so the same file given
twice is one video): its name, path, duration and streams, a poster and the timeline thumbnails (small
JPEGs); per run: the settings, the summary text, its statistics and chapters, the transcript segments and
every follow-up question with its answer; and what reopening the run needs (:func:`~.jobs.reopen_job`):
how its job was opened (VideoInfo, Plan, settings, the model's fingerprint, the file and whether it is the
app's copy of an upload) and, after each answer, its conversation as the model saw it (per part: its span,
feature-cache key, transcript lines, and its session's turns as token ids). Model: simonw/llm's ``logs.db``.

Recording listens to a job: :meth:`Library.record` gives a :class:`Recorder` for an opened
:class:`~.summarize.VideoJob`, and ``recorder.tap(response.events(), question)`` passes the answer's events
through unchanged while it writes the text down as it streams, at most once per FLUSH_INTERVAL_S (and
always before the first text is passed on), so a crash keeps what was shown. Nothing below the front ends
knows the library exists: the engine, sessions and jobs never call it.

Search is SQLite FTS5, ranked by BM25, over *passages*: transcript segments, summary lines and answer lines,
each with its video, run, kind and start time (seconds, when it has one). FTS5's ``unicode61`` tokenizer
keeps a run of CJK characters as one token and its ``trigram`` tokenizer cannot find two-character words,
so CJK text is indexed as overlapping bigrams plus its last character (:func:`index_terms`) and queried as a
phrase of bigrams (:func:`match_expression`): every CJK substring of two characters or more is found, with
no dependency. Snippets are cut from the original text in Python (the index holds the bigrams).

The database is WAL with a busy timeout; writes run in ``BEGIN IMMEDIATE`` transactions, so concurrent
writers (threads or processes, each with its own :class:`Library`) queue instead of failing. The schema
version is SQLite's ``user_version``, brought up to SCHEMA_VERSION by MIGRATIONS. A file that is not a
readable database is renamed aside (``<name>.damaged-<time>``) with a warning and a fresh one started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import sqlite3
import sys
import threading
import time
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SummarizerError, first_line
from .events import Event, TextDelta, TurnStats
from .export import Summary, parse_chapters
from .options import LibraryOptions
from .timestamps import find_timestamps

log = logging.getLogger(__name__)

APP_FOLDER = "qwen3vl-summarizer"  # under the user's data folder
DATABASE_NAME = "library.db"
BUSY_TIMEOUT_MS = 60_000  # a writer waits this long for another's transaction before giving up
FLUSH_INTERVAL_S = 0.3  # streamed text is written at most this often (and before its first chunk is shown)
SNIPPET_CHARS = 160  # characters of context kept around a match in a search hit
DEFAULT_PAGE = 20  # videos per page of `list`, hits per search
POSTER_AT = 0.1  # the poster is the thumbnail nearest this share of the video's duration
MARK = ("**", "**")  # how a snippet marks a match (Markdown bold)
KINDS = ("transcript", "summary", "chat")  # what a passage (a search hit) is
STOPPED = "stopped before the end"  # the error of a run whose answer was not read to its end
ASK_PASSAGES = 12  # passages retrieved to answer a question over the library
# A search whose every term is in more passages than this lists its matches newest first instead of by
# BM25, which scores every match (~1.3 us each on a 2-core EPYC: 0.5 s for a word in 300,000 passages).
# A question's retrieval leaves such terms out (they are this library's stopwords).
COMMON_PASSAGES = 10_000
# Words left out of a question when passages are retrieved for it (they would match almost everything).
_STOPWORDS = (
    "a an and are as at be by did do does for from had has have how i in is it of on or said say says that "
    "the their there this to was we what when where which who why will with about any anyone anything "
    "video videos"
)
STOPWORDS = frozenset(_STOPWORDS.split())
ASK_PROMPT = """Below are passages from a library of videos: what was said (transcript), summarised \
(summary) or answered (chat). Each starts with its source as [video name @ MM:SS].

{passages}

Answer the question from these passages only. After every claim, cite its source exactly as written \
above, e.g. [lecture 3.mp4 @ 12:05]. If the passages do not answer the question, say that nothing \
relevant was found in the library; do not invent an answer.

Question: {question}"""
ASK_PROMPT_ZH = """以下是视频库中的片段：所说的话（transcript）、摘要（summary）或回答（chat）。\
每段开头标出来源，格式为 [视频名 @ MM:SS]。

{passages}

只根据这些片段回答问题。每个论断后按上面的原样注明来源，例如 [lecture 3.mp4 @ 12:05]。\
如果片段不能回答问题，请说明库中没有找到相关内容，不要编造答案。

问题：{question}"""
NOTHING_FOUND = "Nothing relevant was found in the library for this question."
NOTHING_FOUND_ZH = "库中没有找到与这个问题相关的内容。"

# A run of CJK characters: ideographs (with extension A and compatibility), kana, hangul.
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]+")
_WORD = re.compile(r"\w+")


class LibraryError(SummarizerError):
    """The library cannot be opened or written (a newer schema, a disk error)."""


class LibraryNotFoundError(LibraryError, KeyError):
    """No video with that id in this library (or not this user's)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# -- the schema ------------------------------------------------------------------------------------------

SCHEMA_VERSION = 2
# MIGRATIONS[i] brings a database from version i to i + 1; add one at the end for each schema change.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE videos (
        id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL,          -- feature_cache.file_fingerprint: the file's content
        owner TEXT NOT NULL DEFAULT '',     -- the user it belongs to ('' without a login)
        name TEXT NOT NULL,                 -- file name, no folders
        path TEXT,                          -- where it was read from, last time
        duration REAL,                      -- seconds
        streams TEXT,                       -- JSON: codec, size, fps, rotation, audio
        poster BLOB,                        -- small JPEG
        created REAL NOT NULL,              -- unix seconds
        updated REAL NOT NULL,
        UNIQUE (owner, fingerprint)
    );
    CREATE INDEX videos_by_owner_updated ON videos (owner, updated DESC);
    CREATE TABLE thumbnails (
        video_id INTEGER NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
        t REAL NOT NULL,                    -- seconds on the video's clock
        jpeg BLOB NOT NULL,
        PRIMARY KEY (video_id, t)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        video_id INTEGER NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,                 -- summarize | transcribe
        settings TEXT NOT NULL,             -- JSON: model, fps, context, range, speech source
        prompt TEXT NOT NULL DEFAULT '',
        summary TEXT NOT NULL DEFAULT '',   -- as streamed so far; the whole answer once finished
        stats TEXT,                         -- JSON: the summary's TurnStats numbers and the plan
        chapters TEXT,                      -- JSON: [{start, end, title}] (export.parse_chapters)
        started REAL NOT NULL,
        updated REAL NOT NULL,
        finished INTEGER NOT NULL DEFAULT 0, -- 1 once every turn asked was answered
        error TEXT                          -- why it stopped early, when it did and knew it
    );
    CREATE INDEX runs_by_video ON runs (video_id);
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,            -- 1 for the first follow-up (the summary is the run's)
        question TEXT NOT NULL,
        answer TEXT NOT NULL DEFAULT '',
        stats TEXT,
        started REAL NOT NULL,
        updated REAL NOT NULL,
        finished INTEGER NOT NULL DEFAULT 0,
        UNIQUE (run_id, number)
    );
    -- What search finds: transcript segments, summary lines, answer lines.
    CREATE TABLE passages (
        id INTEGER PRIMARY KEY,
        video_id INTEGER NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        turn_id INTEGER REFERENCES turns (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,                 -- transcript | summary | chat
        start REAL,                         -- seconds, when known
        "end" REAL,
        text TEXT NOT NULL
    );
    CREATE INDEX passages_by_run ON passages (run_id, kind);
    CREATE INDEX passages_by_video ON passages (video_id);
    CREATE INDEX passages_by_turn ON passages (turn_id) WHERE turn_id IS NOT NULL;
    CREATE VIEW transcript_segments AS
        SELECT run_id, video_id, start, "end", text FROM passages WHERE kind = 'transcript';
    -- rowid = passages.id; terms = index_terms(text). Library._insert_passages writes both (a trigger per
    -- inserted row took 3-4 times as long); the trigger below removes a deleted passage from the index.
    CREATE VIRTUAL TABLE passages_fts USING fts5 (terms, content='', tokenize='unicode61 remove_diacritics 2');
    -- How many passages hold each term (read per query: a term in most passages is not ranked by BM25).
    CREATE VIRTUAL TABLE passages_terms USING fts5vocab (passages_fts, row);
    CREATE TRIGGER passages_unindexed AFTER DELETE ON passages BEGIN
        INSERT INTO passages_fts (passages_fts, rowid, terms) VALUES ('delete', old.id, index_terms(old.text));
    END;
    """,
    # 2: what reopening a run needs (jobs.reopen_job): how its job was opened, and its conversation as the
    # model saw it. Runs recorded before have none of it (their summary is shown; follow-ups need the file).
    """
    ALTER TABLE runs ADD COLUMN source_path TEXT;   -- the file the run read (absolute), when known
    ALTER TABLE runs ADD COLUMN upload INTEGER NOT NULL DEFAULT 0; -- 1: the app's copy of an upload
    ALTER TABLE runs ADD COLUMN opened TEXT;        -- JSON: VideoInfo, Plan, context, fps, model fingerprint
    ALTER TABLE runs ADD COLUMN conversation TEXT;  -- JSON: answers kept, merged summary, speech block
    CREATE INDEX runs_by_source_path ON runs (source_path) WHERE upload = 1;
    -- Per segment of the plan (one when the video fits): its span, vision features and transcript lines.
    CREATE TABLE parts (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,            -- 0, 1, ...: the plan's segments in order
        start REAL NOT NULL,                -- seconds
        "end" REAL NOT NULL,
        feature_key TEXT,                   -- its entry in the feature cache (NULL: none was kept)
        speech TEXT NOT NULL DEFAULT '',    -- its transcript lines as the model read them (speech_block)
        summary TEXT NOT NULL DEFAULT '',   -- its notes, for a video in parts
        PRIMARY KEY (run_id, number)
    ) WITHOUT ROWID;
    CREATE INDEX parts_by_feature_key ON parts (feature_key) WHERE feature_key IS NOT NULL;
    -- Each part's session turns (engine.Turn) token for token, so a rebuilt KV cache is the one it was.
    CREATE TABLE part_turns (
        run_id INTEGER NOT NULL,
        part INTEGER NOT NULL,
        number INTEGER NOT NULL,            -- 0: the part's first question (the summary prompt)
        question TEXT NOT NULL,
        prompt_ids BLOB NOT NULL,           -- int32 little-endian (ids_blob)
        answer_ids BLOB NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, part, number),
        FOREIGN KEY (run_id, part) REFERENCES parts (run_id, number) ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
]
OPENED_FORMAT = 1  # the layout of runs.opened and runs.conversation; reopen_job refuses others


# -- CJK segmentation --------------------------------------------------------------------------------------


def _bigrams(run: str) -> str:
    """A CJK run as its overlapping bigrams and its last character: 注意力 -> 注意 意力 力."""
    return " ".join([run[i : i + 2] for i in range(len(run) - 1)] + [run[-1]])


def index_terms(text: str) -> str:
    """``text`` as the index reads it: each CJK run replaced by :func:`_bigrams` (spaced off from the
    words around it); other text unchanged (FTS5's unicode61 lowercases it and strips diacritics).

    Every character of a run starts a token (a bigram, or the run's last character on its own), so a
    one-character query is a prefix query and a longer one a phrase of consecutive bigrams. Deterministic:
    the delete trigger recomputes it to remove a passage from the contentless index, so a change to it
    needs a migration that rebuilds the index (``'delete-all'``, then every passage inserted again).
    """
    return _CJK_RUN.sub(lambda m: f" {_bigrams(m.group())} ", text)


def match_expression(query: str) -> str | None:
    """The FTS5 query for what a person typed: every word and CJK run must occur (AND); a CJK run is the
    phrase of its bigrams, a single CJK character a prefix. FTS5 syntax in ``query`` is not interpreted
    (each term is quoted). None when ``query`` has nothing to search for."""
    terms: list[str] = []
    position = 0
    for m in _CJK_RUN.finditer(query):
        terms += [f'"{w}"' for w in _WORD.findall(query[position : m.start()])]
        run = m.group()
        terms.append(f'"{run}"*' if len(run) == 1 else '"' + " ".join(_bigrams(run).split()[:-1]) + '"')
        position = m.end()
    terms += [f'"{w}"' for w in _WORD.findall(query[position:])]
    return " AND ".join(terms) if terms else None


def any_term_expression(question: str) -> str | None:
    """The FTS5 query that retrieves passages for a question: any of its words (STOPWORDS left out) or
    CJK bigrams (a one-character run as a prefix), BM25 ranking passages with more and rarer ones first.
    None when nothing is left to search for."""
    terms: list[str] = []
    for m in _CJK_RUN.finditer(question):
        run = m.group()
        terms += [f'"{run}"*'] if len(run) == 1 else [f'"{b}"' for b in _bigrams(run).split()[:-1]]
    words = _WORD.findall(_CJK_RUN.sub(" ", question))
    terms += [f'"{w}"' for w in words if w.lower() not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    return " OR ".join(dict.fromkeys(terms)) if terms else None


def ask_prompt(question: str, hits: list[Hit]) -> str:
    """The text-only prompt that answers ``question`` from the retrieved ``hits``, each given as
    ``[video name @ MM:SS] (kind) text`` for the answer to cite; in Chinese for a Chinese question."""
    from .timestamps import format_timestamp

    lines = []
    for h in hits:
        where = (
            h.video_name
            if h.start is None
            else f"{h.video_name} @ {format_timestamp(h.start, h.start >= 3600)}"
        )
        lines.append(f"[{where}] ({h.kind}) {h.text}")
    template = ASK_PROMPT_ZH if _CJK_RUN.search(question) else ASK_PROMPT
    return template.replace("{passages}", "\n".join(lines)).replace("{question}", question)


def nothing_found(question: str) -> str:
    """What to answer when no passage was found for ``question`` (in Chinese for a Chinese question)."""
    return NOTHING_FOUND_ZH if _CJK_RUN.search(question) else NOTHING_FOUND


def _fold(token: str) -> str:
    """A token as FTS5's ``unicode61 remove_diacritics 2`` indexes it: lower case, no diacritics."""
    decomposed = unicodedata.normalize("NFKD", token.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _needles(query: str) -> list[str]:
    """The words and CJK runs of ``query``, as :func:`mark` looks for them in a passage."""
    needles = [m.group() for m in _CJK_RUN.finditer(query)]
    needles += _WORD.findall(_CJK_RUN.sub(" ", query))
    return [n for n in needles if n]


def mark(text: str, query: str, width: int = SNIPPET_CHARS) -> tuple[str, list[tuple[int, int]]]:
    """A snippet of ``text`` around the first match of ``query`` (at most ``width`` characters, with "…"
    where cut) with each match wrapped in MARK, and the matches' ``(start, end)`` offsets in ``text``."""
    spans: list[tuple[int, int]] = []
    for needle in _needles(query):
        # a CJK run anywhere; a word only whole (unicode61 matches whole tokens), in any case
        whole = rf"(?<!\w){re.escape(needle)}(?!\w)"
        pattern = re.escape(needle) if _CJK_RUN.fullmatch(needle) else whole
        spans += [(m.start(), m.end()) for m in re.finditer(pattern, text, re.IGNORECASE)]
    spans = _disjoint(sorted(spans))
    first = spans[0][0] if spans else 0
    lo = max(0, min(first - width // 3, len(text) - width))
    hi = min(len(text), lo + width)
    out, at = [], lo
    for s, e in spans:
        if s < lo or e > hi:
            continue
        out += [text[at:s], MARK[0], text[s:e], MARK[1]]
        at = e
    out.append(text[at:hi])
    snippet = ("…" if lo > 0 else "") + "".join(out) + ("…" if hi < len(text) else "")
    return snippet, spans


def _disjoint(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


# -- where the database lives ------------------------------------------------------------------------------


def default_path(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/qwen3vl-summarizer/library.db``, XDG_DATA_HOME defaulting to ~/.local/share."""
    env = os.environ if environ is None else environ
    data = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / APP_FOLDER / DATABASE_NAME


def library_path(options: LibraryOptions) -> Path:
    """The database file ``options`` name (``path = ""``: :func:`default_path`)."""
    return Path(options.path).expanduser() if options.path else default_path()


def open_library(options: LibraryOptions, owner: str = "") -> Library | None:
    """The library ``options`` ask for, or None when it is off."""
    return Library(library_path(options), owner=owner) if options.enabled else None


# -- results -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One search result: a passage of a video, where it starts, and the text around the match."""

    video_id: int
    video_name: str
    run_id: int
    kind: str  # transcript | summary | chat
    start: float | None  # seconds on the video's clock, when the passage has a time
    end: float | None
    text: str  # the whole passage
    snippet: str  # the passage around the first match, matches marked with MARK
    spans: list[tuple[int, int]]  # the matches, as character offsets in ``text``
    rank: float | None  # BM25 (lower is better, as FTS5 gives it); None when every term was common

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": {"id": self.video_id, "name": self.video_name},
            "run": self.run_id,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "snippet": self.snippet,
            "spans": [list(s) for s in self.spans],
            "rank": None if self.rank is None else round(self.rank, 4),
        }


# -- the library -------------------------------------------------------------------------------------------


class Library:
    """One SQLite library file, seen as ``owner`` ('' without a login): every read and delete is scoped to
    that owner's videos. One connection, shared by this object's threads under a lock; other processes and
    other :class:`Library` objects on the same file write concurrently (WAL, busy timeout)."""

    def __init__(self, path: str | os.PathLike, owner: str = ""):
        self.path = Path(path)
        self.owner = owner
        self.set_aside: Path | None = None  # where a damaged file was moved, when it was
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LibraryError(
                f"cannot create the library's folder {self.path.parent}: {first_line(e)}"
            ) from e
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_damage(e, self.path):  # busy past the timeout, a full disk...: not the file's fault
                raise LibraryError(f"cannot open the library {self.path}: {first_line(e)}") from e
            self.set_aside = self._set_aside(e)
            self._db = self._connect()

    # -- opening

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=False)  # fmt: skip
        try:
            db.create_function("index_terms", 1, index_terms, deterministic=True)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                log.warning(
                    "library %s: WAL mode is not available here; concurrent writers will wait", self.path
                )
            db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at each checkpoint, never corrupt
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"library {self.path} was written by a newer version of qwen3vl-summarizer (schema "
                f"{version}, this one knows {SCHEMA_VERSION}); upgrade, or set library.path to another file"
            )
        if version == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for step in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[step]):
                    db.execute(statement)
                log.info("library %s: schema %d -> %d", self.path, step, step + 1)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _set_aside(self, error: sqlite3.DatabaseError) -> Path:
        """Move a damaged or unreadable database (and its -wal/-shm) aside; return where it went."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    os.replace(source, f"{aside}{suffix}")
        except OSError as e:
            raise LibraryError(
                f"library {self.path} cannot be read ({first_line(error)}) nor moved aside ({first_line(e)}); "
                "move it away or set library.path to another file"
            ) from e
        log.warning(
            "library %s could not be read (%s): it was moved to %s and a new, empty library started",
            self.path, first_line(error), aside,
        )  # fmt: skip
        return aside

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``: a writer waits its turn up to the busy
        timeout rather than failing when a read turns into a write). SQLite errors become LibraryError."""
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock, self._errors():
            cursor = self._db.execute(sql, tuple(args))
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as LibraryError, saying what to do about a damaged file."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                raise LibraryError(
                    f"the library {self.path} is damaged ({first_line(e)}): move it away and a new one is "
                    f"started (what it holds can often be saved with: sqlite3 {self.path} .recover)"
                ) from e
            raise LibraryError(f"library {self.path}: {first_line(e)}") from e

    # -- writing

    def add_video(
        self,
        fingerprint: str,
        name: str,
        *,
        path: str | None = None,
        duration: float | None = None,
        streams: dict[str, Any] | None = None,
    ) -> int:
        """The id of the video with this content fingerprint, added (or its name, path and details
        brought up to date, and moved to the top of the list)."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO videos (fingerprint, owner, name, path, duration, streams, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, fingerprint) DO UPDATE SET "
                "name = excluded.name, path = excluded.path, duration = coalesce(excluded.duration, duration), "
                "streams = coalesce(excluded.streams, streams), updated = excluded.updated",
                (fingerprint, self.owner, name, path, duration, _json(streams), now, now),
            )
            return db.execute(
                "SELECT id FROM videos WHERE owner = ? AND fingerprint = ?", (self.owner, fingerprint)
            ).fetchone()[0]

    def start_run(self, video_id: int, kind: str, settings: dict[str, Any], prompt: str = "") -> int:
        """A new, unfinished run of ``video_id``; returns its id."""
        now = time.time()
        with self._write() as db:
            return db.execute(
                "INSERT INTO runs (video_id, kind, settings, prompt, started, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (video_id, kind, _json(settings), prompt, now, now),
            ).lastrowid

    def write_summary(self, run_id: int, text: str, stats: dict[str, Any] | None = None,
                      duration: float | None = None) -> None:  # fmt: skip
        """The run's summary as shown so far (``stats`` None) or whole (its stats given): the text, its
        lines in the index, and once whole its chapters."""
        now = time.time()
        with self._write() as db:
            video_id = self._video_of(db, run_id)
            if stats is None:
                db.execute("UPDATE runs SET summary = ?, updated = ? WHERE id = ?", (text, now, run_id))
            else:
                chapters, _ = parse_chapters(text, duration)
                db.execute(
                    "UPDATE runs SET summary = ?, stats = ?, chapters = ?, updated = ? WHERE id = ?",
                    (text, _json(stats), _json([vars(c) for c in chapters]), now, run_id),
                )
            db.execute("DELETE FROM passages WHERE run_id = ? AND kind = 'summary'", (run_id,))
            _insert_passages(
                db,
                [
                    (video_id, run_id, None, "summary", start, None, line)
                    for start, line in _timed_lines(text)
                ],
            )
            db.execute("UPDATE videos SET updated = ? WHERE id = ?", (now, video_id))

    def write_turn(self, run_id: int, number: int, question: str, answer: str,
                   stats: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Follow-up ``number`` (1, 2, ...) of the run, as shown so far or (``stats`` given) finished."""
        now = time.time()
        with self._write() as db:
            video_id = self._video_of(db, run_id)
            db.execute(
                "INSERT INTO turns (run_id, number, question, answer, stats, started, updated, finished) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, number) DO UPDATE SET "
                "question = excluded.question, answer = excluded.answer, stats = excluded.stats, "
                "updated = excluded.updated, finished = excluded.finished",
                (run_id, number, question, answer, _json(stats), now, now, int(stats is not None)),
            )
            turn_id = db.execute(
                "SELECT id FROM turns WHERE run_id = ? AND number = ?", (run_id, number)
            ).fetchone()[0]
            db.execute("DELETE FROM passages WHERE turn_id = ?", (turn_id,))
            _insert_passages(
                db,
                [
                    (video_id, run_id, turn_id, "chat", start, None, line)
                    for start, line in _timed_lines(answer)
                ],
            )

    def drop_turns(self, run_id: int, after: int) -> None:
        """Forget the run's follow-ups numbered above ``after`` (a branch replaced turn ``after``)."""
        with self._write() as db:
            turns = "SELECT id FROM turns WHERE run_id = ? AND number > ?"
            db.execute(f"DELETE FROM passages WHERE turn_id IN ({turns})", (run_id, after))
            db.execute("DELETE FROM turns WHERE run_id = ? AND number > ?", (run_id, after))

    def write_transcript(self, run_id: int, segments: Iterable[tuple[float, float, str]],
                         source: str = "", language: str | None = None) -> None:  # fmt: skip
        """The run's transcript: ``(start, end, text)`` segments, seconds on the video's clock. It
        becomes the video's transcript: the ones of its earlier runs leave the index."""
        with self._write() as db:
            video_id = self._video_of(db, run_id)
            db.execute("DELETE FROM passages WHERE video_id = ? AND kind = 'transcript'", (video_id,))
            _insert_passages(
                db,
                [
                    (video_id, run_id, None, "transcript", float(s), float(e), t)
                    for s, e, t in segments
                    if t.strip()
                ],
            )
            settings = json.loads(
                db.execute("SELECT settings FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            )
            settings["speech_source"], settings["language"] = source, language
            db.execute("UPDATE runs SET settings = ? WHERE id = ?", (_json(settings), run_id))

    def write_thumbnails(self, video_id: int, thumbnails: Iterable[tuple[float, bytes]],
                         poster_at: float | None = None) -> None:  # fmt: skip
        """The video's timeline thumbnails (``(t, JPEG)``), and as poster the one nearest ``poster_at``
        seconds (default: the first)."""
        items = sorted(thumbnails)
        if not items:
            return
        target = items[0][0] if poster_at is None else poster_at
        poster = min(items, key=lambda item: abs(item[0] - target))[1]
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO thumbnails (video_id, t, jpeg) VALUES (?, ?, ?)",
                [(video_id, t, jpeg) for t, jpeg in items],
            )
            db.execute("UPDATE videos SET poster = ? WHERE id = ?", (poster, video_id))

    def finish_run(self, run_id: int, error: str | None = None) -> None:
        """Mark the run finished, or (``error`` given) stopped early for that reason."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET finished = ?, error = ?, updated = ? WHERE id = ?",
                (int(error is None), error, time.time(), run_id),
            )

    def _video_of(self, db: sqlite3.Connection, run_id: int) -> int:
        row = db.execute("SELECT video_id FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise LibraryNotFoundError(f"no run {run_id} in the library (was its video deleted?)")
        return row[0]

    # -- recording a job

    def record(
        self, job: Any, kind: str = "summarize", prompt: str = "", *, upload: bool = False
    ) -> Recorder:
        """A :class:`Recorder` for the opened ``job`` (a :class:`~.summarize.VideoJob`): its video is added
        (or found by content) and an unfinished run started now, before anything is asked, with what the
        job was opened with (:func:`~.jobs.reopen_job` opens it again from that). ``upload``: the file is
        the app's own copy of an upload, deleted with the video (a file named on the command line is the
        person's own and never is)."""
        from .feature_cache import file_fingerprint

        info = job.info
        source = str(Path(info.path).resolve())
        if getattr(job, "origin", None) is not None:  # reopened from this library: its file may be gone
            video_id = self._video_of_owner(job.origin[0])["id"]
        else:
            video_id = self.add_video(
                file_fingerprint(info.path), Path(info.path).name, path=source,
                duration=info.duration, streams=streams_of(info),
            )  # fmt: skip
        plan, options = job.plan, job.options
        settings = {
            "model": job.engine.model_id,
            "fps": options.sampling.fps,
            "context": job.context,
            "frames": plan.frames,
            "size": [plan.width, plan.height],
            "range": [plan.start, plan.end],
            "speech": options.speech.mode,
        }
        run_id = self.start_run(video_id, kind, settings, prompt)
        opened = {
            "format": OPENED_FORMAT,
            "info": dataclasses.asdict(info),
            "plan": dataclasses.asdict(plan),
            "context": job.context,
            "fps": options.sampling.fps,
            "model": job.engine.model_id,
            "model_fingerprint": job.engine.fingerprint,
            "cache_reuse": job.cache_reuse,
        }
        with self._write() as db:
            db.execute(
                "UPDATE runs SET source_path = ?, upload = ?, opened = ? WHERE id = ?",
                (source, int(upload), _json(opened), run_id),
            )
        # its parts now, with no turns yet: a run stopped before its first answer still names the
        # features its reading cached, for delete_video to remove
        self.write_conversation(run_id, *conversation_of(job))
        return Recorder(self, video_id, run_id, info.duration, job)

    def resume(self, job: Any) -> Recorder:
        """A :class:`Recorder` that goes on with the run a job reopened from the library came from
        (:func:`~.jobs.reopen_job`): its next answer is that run's next follow-up."""
        video_id, run_id = job.origin
        self._video_of_owner(video_id)
        recorder = Recorder(self, video_id, run_id, job.info.duration, job)
        # after the run's last follow-up, stopped ones included (they are not in job.answers)
        last = self._read("SELECT max(number) FROM turns WHERE run_id = ?", (run_id,))[0][0]
        recorder.turns = max(len(job.answers), (last or 0) + 1)
        recorder._transcript_written = True  # the run's transcript is in the library already
        return recorder

    def write_conversation(self, run_id: int, conversation: dict[str, Any], parts: list[StoredPart]) -> None:
        """The run's conversation as its job holds it after an answer (:func:`conversation_of`)."""
        with self._write() as db:
            db.execute("UPDATE runs SET conversation = ? WHERE id = ?", (_json(conversation), run_id))
            db.execute("DELETE FROM parts WHERE run_id = ?", (run_id,))  # their turns cascade
            db.executemany(
                'INSERT INTO parts (run_id, number, start, "end", feature_key, speech, summary) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, i, p.start, p.end, p.feature_key, p.speech, p.summary)
                    for i, p in enumerate(parts)
                ],
            )
            db.executemany(
                "INSERT INTO part_turns (run_id, part, number, question, prompt_ids, answer_ids, text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, i, n, t.question, ids_blob(t.prompt_ids), ids_blob(t.answer_ids), t.text)
                    for i, p in enumerate(parts)
                    for n, t in enumerate(p.turns)
                ],
            )

    def _video_of_owner(self, video_id: int) -> sqlite3.Row:
        rows = self._read(
            "SELECT id, name, path, fingerprint, duration FROM videos WHERE id = ? AND owner = ?",
            (video_id, self.owner),
        )
        if not rows:
            raise LibraryNotFoundError(f"no video {video_id} in the library {self.path}")
        return rows[0]

    def stored_run(self, video_id: int) -> StoredRun:
        """What :func:`~.jobs.reopen_job` needs of the video's latest run with a summary. Raises
        LibraryNotFoundError, or LibraryError when the video was never summarised."""
        video = self._video_of_owner(video_id)
        rows = self._read(
            "SELECT * FROM runs WHERE video_id = ? AND kind = 'summarize' AND summary != '' "
            "ORDER BY id DESC LIMIT 1",
            (video_id,),
        )
        if not rows:
            raise LibraryError(f"video {video_id} ({video['name']}) has no summary to go on from")
        run = rows[0]
        parts = []
        for p in self._read("SELECT * FROM parts WHERE run_id = ? ORDER BY number", (run["id"],)):
            turns = [
                StoredTurn(t["question"], blob_ids(t["prompt_ids"]), blob_ids(t["answer_ids"]), t["text"])
                for t in self._read(
                    "SELECT * FROM part_turns WHERE run_id = ? AND part = ? ORDER BY number",
                    (run["id"], p["number"]),
                )
            ]
            parts.append(StoredPart(p["start"], p["end"], p["feature_key"], p["speech"], p["summary"], turns))
        follow_ups = [
            {**dict(t), "stats": _unjson(t["stats"])}
            for t in self._read(
                "SELECT number, question, answer, stats, finished FROM turns WHERE run_id = ? ORDER BY number",
                (run["id"],),
            )
        ]
        transcript = [
            (r[0], r[1], r[2])
            for r in self._read(
                "SELECT start, \"end\", text FROM passages WHERE video_id = ? AND kind = 'transcript' "
                "ORDER BY start, id",
                (video_id,),
            )
        ]
        return StoredRun(
            video_id=video_id,
            run_id=run["id"],
            name=video["name"],
            fingerprint=video["fingerprint"],
            path=run["source_path"] or video["path"],
            upload=bool(run["upload"]),
            settings=_unjson(run["settings"]) or {},
            prompt=run["prompt"],
            summary=run["summary"],
            summary_stats=_unjson(run["stats"]),
            follow_ups=follow_ups,
            transcript=transcript,
            opened=_unjson(run["opened"]),
            conversation=_unjson(run["conversation"]),
            parts=parts,
        )

    def record_transcript(self, path: str | os.PathLike, transcript: Any, duration: float | None = None,
                          settings: dict[str, Any] | None = None) -> int:  # fmt: skip
        """Record a transcript made on its own (the CLI's ``transcribe``) as a finished run; its id."""
        from .feature_cache import file_fingerprint

        video_id = self.add_video(file_fingerprint(path), Path(path).name, path=str(Path(path).resolve()),
                                  duration=duration)  # fmt: skip
        run_id = self.start_run(video_id, "transcribe", settings or {})
        self.write_transcript(
            run_id, ((s.start, s.end, s.text) for s in transcript.segments), transcript.source,
            transcript.language,
        )  # fmt: skip
        self.finish_run(run_id)
        return run_id

    # -- reading

    def list_videos(self, limit: int = DEFAULT_PAGE, offset: int = 0) -> list[dict[str, Any]]:
        """This owner's videos, most recently used first: id, name, duration, dates, runs, questions,
        whether the latest run finished, and whether it has a poster."""
        rows = self._read(
            """
            SELECT v.id, v.name, v.path, v.duration, v.created, v.updated, v.poster IS NOT NULL AS has_poster,
                (SELECT count(*) FROM runs r WHERE r.video_id = v.id) AS runs,
                (SELECT count(*) FROM turns t JOIN runs r ON r.id = t.run_id WHERE r.video_id = v.id)
                    AS questions,
                (SELECT r.finished FROM runs r WHERE r.video_id = v.id ORDER BY r.id DESC LIMIT 1)
                    AS finished
            FROM videos v WHERE v.owner = ? ORDER BY v.updated DESC, v.id DESC LIMIT ? OFFSET ?
            """,
            (self.owner, limit, offset),
        )
        return [
            {**dict(r), "has_poster": bool(r["has_poster"]), "finished": bool(r["finished"])} for r in rows
        ]

    def count_videos(self) -> int:
        return self._read("SELECT count(*) FROM videos WHERE owner = ?", (self.owner,))[0][0]

    def search(self, query: str, limit: int = DEFAULT_PAGE, kinds: Iterable[str] = KINDS) -> list[Hit]:
        """The passages of this owner's videos that hold every word of ``query``, best first (BM25)."""
        return self._search(match_expression(query), query, limit, kinds)

    def retrieve(
        self,
        question: str,
        limit: int = ASK_PASSAGES,
        kinds: Iterable[str] = KINDS,
        videos: Iterable[int] | None = None,
    ) -> list[Hit]:
        """The passages that best answer ``question`` (any of its words, BM25), best first; only of the
        videos ``videos`` (ids) when given."""
        expression = any_term_expression(question)
        if expression is None:
            return []
        terms = expression.split(" OR ")
        counts = self._passage_counts(expression)
        rare = [t for t, n in zip(terms, counts, strict=True) if n <= COMMON_PASSAGES]
        expression = " OR ".join(rare) if rare else expression  # all common: newest first, below
        marked = " ".join(t.strip('"*') for t in (rare or terms))
        return self._search(expression, marked, limit, kinds, videos)

    def ask(
        self, engine: Any, question: str, options: Any, limit: int = ASK_PASSAGES
    ) -> tuple[list[Hit], Any]:
        """Answer ``question`` over this owner's videos with ``engine``'s model, from the passages
        :meth:`retrieve` finds (text only: no video is read). Returns the passages and the answer (a
        :class:`~.events.Response`), or no passages and None when nothing relevant was found: then say
        NOTHING_FOUND rather than ask the model to guess. ``options`` is the run's :class:`~.options.Options`."""
        from .engine import VideoSession

        hits = self.retrieve(question, limit)
        if not hits:
            return [], None
        session = VideoSession(engine, None, context=options.context, generation=options.generation)
        return hits, session.ask(ask_prompt(question, hits))

    def _search(
        self,
        expression: str | None,
        query: str,
        limit: int,
        kinds: Iterable[str],
        videos: Iterable[int] | None = None,
    ) -> list[Hit]:
        kinds = tuple(kinds)
        ids = None if videos is None else tuple(int(v) for v in videos)
        if expression is None or not kinds or ids == ():
            return []
        marks = ", ".join("?" * len(kinds))
        only = "" if ids is None else f"AND p.video_id IN ({', '.join('?' * len(ids))})"
        # An AND of terms matches at most as many passages as its rarest term holds; OR (retrieve) left
        # its common terms out unless all were. Either way, when every term is common, newest first.
        common = min(self._passage_counts(expression)) > COMMON_PASSAGES
        rank, order = ("NULL", "f.rowid DESC") if common else ("f.rank", "f.rank")
        rows = self._read(  # every term is quoted: what a person types is never FTS5 syntax
            f"""
            SELECT p.video_id, v.name, p.run_id, p.kind, p.start, p."end", p.text, {rank} AS rank
            FROM passages_fts f
            JOIN passages p ON p.id = f.rowid
            JOIN videos v ON v.id = p.video_id
            WHERE passages_fts MATCH ? AND v.owner = ? AND p.kind IN ({marks}) {only}
            ORDER BY {order} LIMIT ?
            """,
            (expression, self.owner, *kinds, *(ids or ()), limit),
        )
        hits = []
        for r in rows:
            snippet, spans = mark(r["text"], query)
            hits.append(Hit(r["video_id"], r["name"], r["run_id"], r["kind"], r["start"], r["end"],
                            r["text"], snippet, spans, r["rank"]))  # fmt: skip
        return hits

    def _passage_counts(self, expression: str) -> list[int]:
        """For each term of ``expression`` (as :func:`match_expression` or :func:`any_term_expression`
        write them), at most how many passages hold it: its rarest token's count (0 for a prefix term:
        not counted, taken as rare)."""
        terms = [[] if star else [_fold(t) for t in _WORD.findall(phrase)]
                 for phrase, star in re.findall(r'"([^"]*)"(\*?)', expression)]  # fmt: skip
        tokens = sorted({t for term in terms for t in term})
        counts: dict[str, int] = {}
        if tokens:
            rows = self._read(
                f"SELECT term, doc FROM passages_terms WHERE term IN ({', '.join('?' * len(tokens))})", tokens
            )
            counts = {r[0]: r[1] for r in rows}
        return [min((counts.get(t, 0) for t in term), default=0) for term in terms] or [0]

    def video(self, video_id: int) -> dict[str, Any]:
        """Everything kept about one of this owner's videos: its details, and each run (newest last) with
        its settings, summary, chapters, follow-ups and transcript. Raises LibraryNotFoundError."""
        rows = self._read(
            "SELECT id, fingerprint, name, path, duration, streams, created, updated, "
            "poster IS NOT NULL AS has_poster FROM videos WHERE id = ? AND owner = ?",
            (video_id, self.owner),
        )
        if not rows:
            raise LibraryNotFoundError(f"no video {video_id} in the library {self.path}")
        video = dict(rows[0])
        video["streams"] = _unjson(video["streams"])
        video["has_poster"] = bool(video["has_poster"])
        video["thumbnails"] = [r[0] for r in self._read(
            "SELECT t FROM thumbnails WHERE video_id = ? ORDER BY t", (video_id,))]  # fmt: skip
        runs = []
        for r in self._read("SELECT * FROM runs WHERE video_id = ? ORDER BY id", (video_id,)):
            run = dict(r)
            for key in ("settings", "stats", "chapters", "opened", "conversation"):
                run[key] = _unjson(run[key])
            run["finished"] = bool(run["finished"])
            run["turns"] = [
                {**dict(t), "stats": _unjson(t["stats"]), "finished": bool(t["finished"])}
                for t in self._read(
                    "SELECT number, question, answer, stats, started, updated, finished FROM turns "
                    "WHERE run_id = ? ORDER BY number",
                    (r["id"],),
                )  # fmt: skip
            ]
            run["transcript"] = [
                {"start": t[0], "end": t[1], "text": t[2]}
                for t in self._read(
                    "SELECT start, \"end\", text FROM passages WHERE run_id = ? AND kind = 'transcript' "
                    "ORDER BY start, id",
                    (r["id"],),
                )  # fmt: skip
            ]
            runs.append(run)
        video["runs"] = runs
        return video

    def poster(self, video_id: int) -> bytes | None:
        rows = self._read("SELECT poster FROM videos WHERE id = ? AND owner = ?", (video_id, self.owner))
        return rows[0][0] if rows else None

    def summary(self, video_id: int) -> Summary:
        """The latest run with a summary, as the exporters take it (its follow-ups as Q&A sections, the
        video's transcript). Raises LibraryNotFoundError, or LibraryError when nothing was summarised."""
        from .export import QUESTION_HEADING

        video = self.video(video_id)
        transcript = next((r["transcript"] for r in reversed(video["runs"]) if r["transcript"]), None)
        run = next((r for r in reversed(video["runs"]) if r["summary"]), None)
        if run is None and transcript is None:
            raise LibraryError(f"video {video_id} ({video['name']}) has no summary or transcript yet")
        markdown = (
            ""
            if run is None
            else run["summary"]
            + "".join(QUESTION_HEADING.format(question=t["question"]) + t["answer"] for t in run["turns"])
        )
        stats = {} if run is None else {"library": {"run": run["id"], "finished": run["finished"]},
                                        **(run["stats"] or {})}  # fmt: skip
        return Summary(
            markdown,
            video["name"],
            video["duration"] or 0.0,
            "" if run is None else run["settings"].get("model", ""),
            "" if run is None else run["prompt"],
            stats,
            transcript={"segments": transcript, "language": None, "source": "library"}
            if transcript
            else None,
        )

    def delete(self, video_id: int) -> Leftovers:
        """Remove one of this owner's videos and every row kept about it. Raises LibraryNotFoundError.
        Returns the files outside the database that no other row needs any more
        (:func:`~.jobs.delete_video` removes them)."""
        with self._write() as db:
            found = db.execute("SELECT 1 FROM videos WHERE id = ? AND owner = ?", (video_id, self.owner))
            if found.fetchone() is None:
                raise LibraryNotFoundError(f"no video {video_id} in the library {self.path}")
            return self._delete_videos(db, [video_id])

    def delete_all(self) -> int:
        """Remove all of this owner's videos and everything kept about them; how many videos."""
        return self.delete_all_videos().videos

    def delete_all_videos(self) -> Leftovers:
        """Remove all of this owner's videos and every row kept about them; what they leave outside the
        database that no other row needs (:func:`~.jobs.delete_everything` removes it)."""
        with self._write() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM videos WHERE owner = ?", (self.owner,))]
            return self._delete_videos(db, ids)

    def _delete_videos(self, db: sqlite3.Connection, ids: list[int]) -> Leftovers:
        """Delete the videos ``ids`` inside a write transaction; what they leave outside the database."""
        keys: set[str] = set()
        uploads: dict[str, str] = {}  # path -> the content it held
        contents: set[str] = set()  # the videos' content fingerprints
        for video_id in ids:
            contents.update(
                r[0] for r in db.execute("SELECT fingerprint FROM videos WHERE id = ?", (video_id,))
            )
            keys.update(r[0] for r in db.execute(
                "SELECT p.feature_key FROM parts p JOIN runs r ON r.id = p.run_id "
                "WHERE r.video_id = ? AND p.feature_key IS NOT NULL", (video_id,)))  # fmt: skip
            uploads.update((r[0], r[1]) for r in db.execute(
                "SELECT r.source_path, v.fingerprint FROM runs r JOIN videos v ON v.id = r.video_id "
                "WHERE r.video_id = ? AND r.upload = 1 AND r.source_path IS NOT NULL", (video_id,)))  # fmt: skip
            # passages first, one by one through their trigger (the cascade would skip the index)
            db.execute("DELETE FROM passages WHERE video_id = ?", (video_id,))
            db.execute("DELETE FROM videos WHERE id = ?", (video_id,))
        # Another owner's run of the same content shares its features, and Gradio keeps one copy of an
        # upload per content: those stay while any row still names them.
        needed = "SELECT 1 FROM parts WHERE feature_key = ? LIMIT 1"
        keys = {k for k in keys if db.execute(needed, (k,)).fetchone() is None}
        named = "SELECT 1 FROM runs WHERE source_path = ? LIMIT 1"
        uploads = {p: f for p, f in uploads.items() if db.execute(named, (p,)).fetchone() is None}
        kept = "SELECT 1 FROM videos WHERE fingerprint = ? LIMIT 1"
        contents = {c for c in contents if db.execute(kept, (c,)).fetchone() is None}
        return Leftovers(len(ids), sorted(keys), uploads, sorted(contents))

    # -- read-only helpers for the page

    def thumbnails(self, video_id: int) -> list[tuple[float, bytes]]:
        """This owner's video's timeline thumbnails, ``(t, JPEG)`` by time (none for another's video)."""
        rows = self._read(
            "SELECT t.t, t.jpeg FROM thumbnails t JOIN videos v ON v.id = t.video_id "
            "WHERE t.video_id = ? AND v.owner = ? ORDER BY t.t",
            (video_id, self.owner),
        )
        return [(r[0], r[1]) for r in rows]


class Recorder:
    """Writes one run of a job down as it streams. Made by :meth:`Library.record`.

    ``tap(events, question)`` passes each answer's events through; the first answer of the run is its
    summary, the others its follow-ups. ``finish()`` marks the run finished; a run the process never
    finished (killed, or ``finish(error=...)``) stays unfinished with the text written so far.
    """

    def __init__(self, library: Library, video_id: int, run_id: int, duration: float, job: Any = None):
        self.library = library
        self.video_id = video_id
        self.run_id = run_id
        self.duration = duration
        self.job = job
        self.turns = 0  # answers tapped so far
        self.broken = False  # a write failed: the run is no longer recorded
        self.clock = time.monotonic  # seconds, for the flush interval
        self._transcript_written = False

    def tap(self, events: Iterable[Event], question: str, turn: int | None = None) -> Iterator[Event]:
        """``events`` unchanged, their text written down: at most every FLUSH_INTERVAL_S while it streams
        (the first text before it is passed on), whole with its statistics at the end. ``turn`` is the
        answer's place in the conversation (0: the summary; as ``VideoJob.ask``'s ``branch`` counts), by
        default the one after the last tapped."""
        number = self.turns if turn is None else turn
        self.turns = number + 1
        if turn is not None:  # a branch: the conversation after it is gone
            self._safely(self.library.drop_turns, self.run_id, number)
        text, written, last = "", "", -math.inf
        try:
            for event in events:
                if isinstance(event, TextDelta) and event.text:
                    text += event.text
                    if self.clock() - last >= FLUSH_INTERVAL_S:
                        self._write(number, question, text)
                        written, last = text, self.clock()
                elif isinstance(event, TurnStats):
                    self._write(number, question, event.text, event.to_dict())
                    written = event.text
                    self._after_turn(number)
                yield event
        except BaseException as e:
            if text != written:
                self._write(number, question, text)
            # the consumer stopped reading (a Stop button, Ctrl-C), or the answer failed
            reason = STOPPED if isinstance(e, GeneratorExit) else first_line(e) or type(e).__name__
            self._safely(self.library.finish_run, self.run_id, reason)
            raise

    def _write(self, number: int, question: str, text: str, stats: dict[str, Any] | None = None) -> None:
        self._safely(self._write_now, number, question, text, stats)

    def _safely(self, write: Callable[..., None], *args: Any) -> None:
        """``write(*args)``; a failed write stops the recording with a warning, and the answer goes on."""
        if self.broken:
            return
        try:
            write(*args)
        except (sqlite3.Error, LibraryError) as e:
            self.broken = True
            log.warning("library %s: stopped recording this run: %s", self.library.path, first_line(e))

    def _write_now(self, number: int, question: str, text: str, stats: dict[str, Any] | None) -> None:
        if number == 0:
            if stats is not None and self.job is not None:
                stats = {**stats, "plan": self.job.plan.summary(), "frames": self.job.plan.frames}
            self.library.write_summary(self.run_id, text, stats, self.duration)
        else:
            self.library.write_turn(self.run_id, number, question, text, stats)

    def _after_turn(self, number: int) -> None:
        """After an answer: the transcript once it is known, and the thumbnails the reading kept."""
        job = self.job
        if job is None:
            return
        self._safely(self._keep_conversation, job)
        self._safely(self._keep_job_details, job, number)

    def _keep_conversation(self, job: Any) -> None:
        self.library.write_conversation(self.run_id, *conversation_of(job))

    def _keep_job_details(self, job: Any, number: int) -> None:
        if not self._transcript_written and job.transcript is not None:
            t = job.transcript
            self.library.write_transcript(self.run_id, ((s.start, s.end, s.text) for s in t.segments),
                                          t.source, t.language)  # fmt: skip
            self._transcript_written = True
        if number == 0 and job.thumbnails is not None:
            chapters, _ = parse_chapters(job.summary_text, self.duration)
            job.fill_thumbnails([self.duration * POSTER_AT, *(c.start for c in chapters)])
        if number == 0 and job.thumbnails is not None and len(job.thumbnails):
            items = [job.thumbnails.nearest(t) for t in job.thumbnails.times]
            self.library.write_thumbnails(self.video_id, [i for i in items if i is not None],
                                          poster_at=self.duration * POSTER_AT)  # fmt: skip

    def finish(self, error: str | None = None) -> None:
        """Mark the run finished (or stopped early, for ``error``)."""
        self._safely(self.library.finish_run, self.run_id, error)


# -- what reopening a run reads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTurn:
    """One turn of a part's session as the model saw it (:class:`~.engine.Turn`)."""

    question: str  # the text asked (for a part of a long video, with its note)
    prompt_ids: list[int]  # the turn's own tokens: opener, question, generation prompt
    answer_ids: list[int]  # generated tokens, end-of-turn excluded
    text: str = ""


@dataclass(frozen=True)
class StoredPart:
    """One segment of a run's plan (one when the video fits) and its session's conversation."""

    start: float  # seconds
    end: float
    feature_key: str | None  # its vision features in the feature cache
    speech: str  # its transcript lines as the model read them (summarize.speech_block)
    summary: str = ""  # its notes, for a video in parts
    turns: list[StoredTurn] = field(default_factory=list)


@dataclass(frozen=True)
class StoredRun:
    """A video's latest summarised run, as :func:`~.jobs.reopen_job` opens it again. ``opened`` and
    ``conversation`` are None for a run recorded before schema 2: its text is shown, but what the model
    saw was not kept."""

    video_id: int
    run_id: int
    name: str
    fingerprint: str  # the file's content (feature_cache.file_fingerprint)
    path: str | None  # where the run read it
    upload: bool  # the app's copy of an upload
    settings: dict[str, Any]
    prompt: str
    summary: str
    summary_stats: dict[str, Any] | None
    follow_ups: list[dict[str, Any]]  # number, question, answer, stats, finished
    transcript: list[tuple[float, float, str]]  # the video's transcript segments, seconds
    opened: dict[str, Any] | None  # Library.record: VideoInfo, Plan, context, fps, model fingerprint
    conversation: dict[str, Any] | None  # conversation_of: answers kept, merged summary, speech
    parts: list[StoredPart]


@dataclass(frozen=True)
class Leftovers:
    """What deleted videos leave outside the database that no remaining row needs."""

    videos: int  # how many videos were deleted
    feature_keys: list[str]  # feature cache entries of their runs
    uploads: dict[str, str]  # the app's copies of their uploads: path -> the content it held (fingerprint)
    contents: list[str] = field(default_factory=list)  # fingerprints no video has now: their transcripts go


def conversation_of(job: Any) -> tuple[dict[str, Any], list[StoredPart]]:
    """What a :class:`~.summarize.VideoJob` holds after an answer that reopening needs: the answers it
    keeps, the merged summary and notes of a video in parts, its speech block, and each part's session
    turns token for token."""
    parts = []
    for part in job.parts:
        turns = part.session.turns if part.session is not None else part.turns
        parts.append(StoredPart(
            part.segment.start, part.segment.end, part.feature_key, part.speech, part.summary,
            [StoredTurn(t.question, list(t.prompt_ids), list(t.answer_ids), t.text) for t in turns],
        ))  # fmt: skip
    conversation = {
        "format": OPENED_FORMAT,
        "answers": len(job.answers),
        "merged": job.merged,
        "notes": job._notes,
        "speech": job.speech,
        "speech_tokens": job.speech_tokens,
        "speech_reserved": job.speech_reserved,
        "speech_note": job.speech_note,
        "answer_tokens": [list(a.tokens) for a in job.answers],
    }
    return conversation, parts


def ids_blob(ids: Iterable[int]) -> bytes:
    """Token ids as int32 little-endian bytes (4 bytes an id)."""
    a = array("i", ids)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def blob_ids(blob: bytes) -> list[int]:
    """The inverse of :func:`ids_blob`."""
    a = array("i")
    a.frombytes(blob)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tolist()


# -- helpers -----------------------------------------------------------------------------------------------


def streams_of(info: Any) -> dict[str, Any]:
    """What a :class:`~.video.VideoInfo` says about the file's streams, for the library."""
    return {
        "container": info.container,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
        "fps": round(info.fps, 3),
        "frames": info.frame_count,
        "audio": info.has_audio,
    }


def _timed_lines(text: str) -> list[tuple[float | None, str]]:
    """The non-empty lines of ``text``, each with the first time it names (seconds) or None."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line == "---":
            continue
        times = find_timestamps(line)
        out.append((times[0].seconds if times else None, line))
    return out


def _insert_passages(db: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert ``(video_id, run_id, turn_id, kind, start, end, text)`` rows into ``passages`` and their
    :func:`index_terms` into the index, under the same ids. Inside a write transaction (which holds the
    database's write lock, so the ids taken here are free)."""
    if not rows:
        return
    first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM passages").fetchone()[0]
    ids = range(first, first + len(rows))
    db.executemany(
        'INSERT INTO passages (id, video_id, run_id, turn_id, kind, start, "end", text) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(i, *row) for i, row in zip(ids, rows, strict=True)],
    )
    db.executemany(
        "INSERT INTO passages_fts (rowid, terms) VALUES (?, ?)",
        [(i, index_terms(row[-1])) for i, row in zip(ids, rows, strict=True)],
    )


def _is_damage(error: sqlite3.DatabaseError, path: Path) -> bool:
    """Whether ``error`` on opening ``path`` means the file itself is damaged or unreadable."""
    name = getattr(error, "sqlite_errorname", "")
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or (name == "SQLITE_CANTOPEN" and path.exists())


def _statements(script: str) -> list[str]:
    """The statements of a migration script (split where sqlite3.complete_statement says one ends)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _unjson(value: str | None) -> Any:
    return None if value is None else json.loads(value)
