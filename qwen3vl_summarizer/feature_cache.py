"""A persistent on-disk cache of a video's vision features, so decoding and encoding happen once.

The engine's expensive part is decoding frames and running the vision tower. Its result for a video
(or for one segment of a long video) is a :class:`CachedFeatures`; :class:`FeatureCache` keeps it on
disk under a key made of the video file's *content* (:func:`file_fingerprint`) and every setting that
changes the result (fps, frame size, segment bounds, model id, dtype, processor config...). The same
video asked another question, in another session or after a restart, then skips both stages.

Layout, one immutable directory per entry::

    root/<key[:2]>/<key>/tensors.safetensors   ids, positions, embeds, deepstack.0..L-1 (dtypes kept)
    root/<key[:2]>/<key>/meta.json             key, format, created, times, damage, sha256 and sizes
    root/transcripts/<key>.json                a transcript (transcripts.py): small entries of their own
    root/.tmp/                                 entries being written (renamed into place when complete)
    root/.trash/                               entries being deleted (renamed out of place first)

An entry directory only ever appears complete (written in ``.tmp``, fsynced, then renamed into place)
and only ever disappears whole (renamed into ``.trash``, then removed), so a reader never sees half an
entry. Readers open the entry directory once and read both files through that handle, so an entry
replaced concurrently is read either wholly old or wholly new. Least-recently-used order is the entry
directory's mtime, set on write and on every hit.

The cache is an optimisation: a damaged entry is logged, deleted and reported as a miss, and a failed
write is logged and dropped. Nothing here raises on account of the disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .errors import OptionsError, first_line

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the layout or the meaning of a stored tensor changes
TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
TMP_DIR = ".tmp"  # under root: entries being written
TRASH_DIR = ".trash"  # under root: entries being deleted
KEY_HEX_CHARS = 64  # a key is a sha256 hex digest
HASH_BLOCK_BYTES = 8 * 1024 * 1024  # file_fingerprint reads the video in blocks of this size
STALE_TMP_SECONDS = 3600.0  # a temp entry untouched this long belongs to a crashed writer
RACY_MTIME_SECONDS = 2.0  # a file modified this recently may change again without its mtime moving
FINGERPRINT_MEMO_MAX = 4096  # fingerprints remembered in-process
TRANSCRIPTS_DIR = "transcripts"  # under root: transcripts, counted and evicted with the features
RENAME_ATTEMPTS = 3  # tries to move a finished entry into place past concurrent writers of its key


@dataclass
class CachedFeatures:
    """What the vision side produced for one video or segment; the prompt-independent part of prefill.

    ``ids`` [n] int64 token ids; ``positions`` [3, n] int64 MRoPE positions (relative, from 0);
    ``embeds`` [m, D] visual embeddings (any float dtype); ``deepstack`` L tensors [m, D], same dtype;
    ``times`` the sampled frames' times in seconds; ``damage`` a note when the video was partly unreadable.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    embeds: torch.Tensor
    deepstack: list[torch.Tensor]
    times: list[float]
    damage: str | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        tensors = [self.ids, self.positions, self.embeds, *self.deepstack]
        return sum(t.numel() * t.element_size() for t in tensors)


# -- file fingerprints -------------------------------------------------------------------------------------

_fingerprint_memo: dict[tuple, str] = {}
_fingerprint_lock = threading.Lock()


def _hash_file(path: str) -> tuple[str, os.stat_result, os.stat_result]:
    """blake2b of the whole file in HASH_BLOCK_BYTES blocks; returns (hex digest, stat before, stat after)."""
    digest = hashlib.blake2b(digest_size=32)
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        while n := f.readinto(buffer):
            digest.update(view[:n])
        after = os.fstat(f.fileno())
    return digest.hexdigest(), before, after


def _memo_key(real: str, st: os.stat_result) -> tuple:
    return (real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def file_fingerprint(path: str | os.PathLike) -> str:
    """A digest of the file's content and size: ``"<size>-<blake2b hex>"``.

    Memoised in-process by (real path, size, mtime_ns, inode), so an unchanged file is hashed once. A file
    modified in the last RACY_MTIME_SECONDS is not memoised (it could change again within the filesystem's
    timestamp granularity, mtime unchanged), nor is one that changed while it was being read. A file
    rewritten with the same size and its old mtime restored is not noticed until the process restarts.
    Raises OSError (FileNotFoundError...) when the file cannot be read.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    memo_key = _memo_key(real, st)
    with _fingerprint_lock:
        cached = _fingerprint_memo.get(memo_key)
    if cached is not None:
        return cached
    digest, before, after = _hash_file(real)
    fingerprint = f"{after.st_size}-{digest}"
    stable = _memo_key(real, before) == _memo_key(real, after)
    settled = time.time() - after.st_mtime_ns / 1e9 > RACY_MTIME_SECONDS
    if stable and settled:
        with _fingerprint_lock:
            if len(_fingerprint_memo) >= FINGERPRINT_MEMO_MAX:
                _fingerprint_memo.pop(next(iter(_fingerprint_memo)))
            _fingerprint_memo[_memo_key(real, after)] = fingerprint
    return fingerprint


# -- validation --------------------------------------------------------------------------------------------


def _problem(features: CachedFeatures) -> str | None:
    """What is inconsistent about ``features``, or None when they hang together."""
    ids, positions, embeds = features.ids, features.positions, features.embeds
    if not all(isinstance(t, torch.Tensor) for t in (ids, positions, embeds, *features.deepstack)):
        return "a field that should be a tensor is not"
    if ids.dtype != torch.int64 or ids.dim() != 1:
        return f"ids must be [n] int64, got {list(ids.shape)} {ids.dtype}"
    if positions.dtype != torch.int64 or positions.dim() != 2 or positions.shape[0] != 3:
        return f"positions must be [3, n] int64, got {list(positions.shape)} {positions.dtype}"
    if positions.shape[1] != ids.shape[0]:
        return f"positions cover {positions.shape[1]} tokens but ids has {ids.shape[0]}"
    if embeds.dim() != 2 or not embeds.is_floating_point():
        return f"embeds must be [m, D] floating point, got {list(embeds.shape)} {embeds.dtype}"
    for i, layer in enumerate(features.deepstack):
        if layer.shape != embeds.shape or layer.dtype != embeds.dtype:
            return (
                f"deepstack.{i} is {list(layer.shape)} {layer.dtype}, "
                f"embeds {list(embeds.shape)} {embeds.dtype}"
            )
    times = features.times
    if not isinstance(times, list) or not times:
        return "times must be a non-empty list"
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in times):
        return "times must be finite numbers"
    if features.damage is not None and not isinstance(features.damage, str):
        return "damage must be a string or None"
    return None


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU, contiguous tensor that owns its whole storage (safetensors refuses shared storage)."""
    tensor = tensor.detach().cpu()
    whole = tensor.numel() * tensor.element_size() == tensor.untyped_storage().nbytes()
    if not (tensor.is_contiguous() and tensor.storage_offset() == 0 and whole):
        tensor = tensor.clone(memory_format=torch.contiguous_format)
    return tensor


class _Corrupt(Exception):
    """An entry is damaged or stale: delete it."""


# -- small filesystem helpers ------------------------------------------------------------------------------

_DIR_FD = os.open in os.supports_dir_fd and os.utime in os.supports_fd


def _fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or create inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_file(entry: str, dir_fd: int | None, name: str) -> bytes:
    if dir_fd is None:
        with open(os.path.join(entry, name), "rb") as f:
            return f.read()
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with open(fd, "rb") as f:
        return f.read()


def _reason_of(e: BaseException) -> str:
    """``OSError: Permission denied``: the type's name, then :func:`~.errors.first_line`."""
    text = first_line(e)
    return text if text == type(e).__name__ else f"{type(e).__name__}: {text}"


def _is_key(name: str) -> bool:
    return len(name) == KEY_HEX_CHARS and all(c in "0123456789abcdef" for c in name)


# -- the cache ---------------------------------------------------------------------------------------------


class FeatureCache:
    """Vision features on disk under ``root``, at most ``max_bytes`` in all, least recently used evicted.

    Safe to share between threads and processes. ``root`` is created on the first store.
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise OptionsError(f"feature cache max_bytes must be a positive integer, got {max_bytes!r}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._stamp_lock = threading.Lock()
        self._last_stamp_ns = 0

    # -- keys

    def key(self, video_path: str | os.PathLike, /, **settings: Any) -> str:
        """The entry key for this video's content and these settings (sha256 hex).

        ``settings`` is everything that changes the features: fps, width, height, start, end, model id,
        dtype, a digest of the processor config... Values must be JSON-serialisable; note that ``1`` and
        ``1.0`` are different keys. Raises OSError when the video cannot be read.
        """
        payload = {"format": FORMAT_VERSION, "video": file_fingerprint(video_path), "settings": settings}
        try:
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"feature cache settings must be JSON-serialisable: {e}") from e
        return hashlib.sha256(text.encode()).hexdigest()

    def _entry_dir(self, key: str) -> Path:
        if not isinstance(key, str) or not _is_key(key):
            raise ValueError(f"not a feature cache key (64 lowercase hex characters): {key!r}")
        return self.root / key[:2] / key

    # -- reading

    def load(self, key: str) -> CachedFeatures | None:
        """The features stored under ``key``, or None on a miss.

        A damaged, truncated or stale entry is logged, deleted and reported as a miss. A hit makes the
        entry the most recently used.
        """
        entry = self._entry_dir(key)
        dir_fd: int | None = None
        try:
            if _DIR_FD:
                dir_fd = os.open(entry, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            elif not entry.is_dir():
                return None
            try:
                features = self._read_entry(key, str(entry), dir_fd)
            except FileNotFoundError:
                # Either the entry was replaced or evicted while we read it (a plain miss), or it was
                # never complete, which the rename-into-place protocol makes a corruption.
                if not self._still_in_place(entry, dir_fd):
                    logger.debug("feature cache entry %s went away while being read", key)
                    return None
                raise _Corrupt("a file is missing") from None
            self._touch(entry, dir_fd)
            logger.debug("feature cache hit %s", key)
            return features
        except FileNotFoundError:
            logger.debug("feature cache miss %s", key)
            return None
        except _Corrupt as e:
            logger.warning("feature cache entry %s is unusable (%s); deleting it", key, e)
            if self._still_in_place(entry, dir_fd):
                self._remove_tree(entry)
            return None
        except Exception:
            logger.warning("feature cache entry %s could not be read", key, exc_info=True)
            return None
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def _read_entry(self, key: str, entry: str, dir_fd: int | None) -> CachedFeatures:
        meta_bytes = _read_file(entry, dir_fd, META_FILE)
        data = _read_file(entry, dir_fd, TENSORS_FILE)
        try:
            meta = json.loads(meta_bytes)
        except ValueError as e:
            raise _Corrupt(f"{META_FILE} is not JSON") from e
        if not isinstance(meta, dict):
            raise _Corrupt(f"{META_FILE} is not an object")
        if meta.get("format") != FORMAT_VERSION:
            raise _Corrupt(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        if meta.get("key") != key:
            raise _Corrupt(f"{META_FILE} belongs to key {meta.get('key')!r}")
        if meta.get("tensors_bytes") != len(data):
            raise _Corrupt(f"{TENSORS_FILE} is {len(data)} bytes, {meta.get('tensors_bytes')!r} were written")
        if meta.get("tensors_sha256") != hashlib.sha256(data).hexdigest():
            raise _Corrupt(f"{TENSORS_FILE} checksum mismatch")
        layers = meta.get("deepstack_layers")
        try:
            tensors = load_safetensors(data)
        except Exception as e:
            raise _Corrupt(f"{TENSORS_FILE} does not parse: {e}") from e
        expected = {"ids", "positions", "embeds", *(f"deepstack.{i}" for i in range(layers or 0))}
        if not isinstance(layers, int) or set(tensors) != expected:
            raise _Corrupt(f"{TENSORS_FILE} holds {sorted(tensors)}, {layers!r} deepstack layers recorded")
        features = CachedFeatures(
            ids=tensors["ids"],
            positions=tensors["positions"],
            embeds=tensors["embeds"],
            deepstack=[tensors[f"deepstack.{i}"] for i in range(layers)],
            times=meta.get("times"),
            damage=meta.get("damage"),
        )
        if problem := _problem(features):
            raise _Corrupt(problem)
        return features

    def contains(self, key: str) -> bool:
        """Whether an entry is stored under ``key`` (not read nor checked: :meth:`load` may still find it
        damaged; not counted as a use)."""
        return self._entry_dir(key).is_dir()

    def remove(self, key: str) -> bool:
        """Delete the entry stored under ``key`` (whole, as eviction does); False when there was none."""
        entry = self._entry_dir(key)
        if not entry.is_dir():
            return False
        self._remove_tree(entry)
        logger.debug("removed feature cache entry %s", key)
        return True

    def _still_in_place(self, entry: Path, dir_fd: int | None) -> bool:
        """Whether ``entry`` is still the directory we opened (not replaced by a concurrent writer)."""
        try:
            now = os.stat(entry)
        except OSError:
            return False
        if dir_fd is None:
            return True
        opened = os.fstat(dir_fd)
        return (now.st_ino, now.st_dev) == (opened.st_ino, opened.st_dev)

    def _stamp_ns(self) -> int:
        """Now, in ns, strictly increasing within this cache object (so LRU order has no ties)."""
        with self._stamp_lock:
            self._last_stamp_ns = max(time.time_ns(), self._last_stamp_ns + 1)
            return self._last_stamp_ns

    def _touch(self, entry: Path, dir_fd: int | None) -> None:
        stamp = self._stamp_ns()
        try:
            os.utime(dir_fd if dir_fd is not None else entry, ns=(stamp, stamp))
        except OSError as e:  # a read-only cache still serves hits
            logger.debug("could not refresh feature cache entry %s: %s", entry.name, e)

    # -- writing

    def store(self, key: str, features: CachedFeatures) -> None:
        """Store ``features`` under ``key`` (replacing any entry there), then evict down to max_bytes.

        Atomic: the entry is complete when it appears. Concurrent writers of one key leave one of their
        entries. An entry larger than max_bytes, inconsistent features, and any error writing (disk full,
        permissions) are logged and dropped.
        """
        entry = self._entry_dir(key)
        if problem := _problem(features):
            logger.warning("not caching features for %s: %s", key, problem)
            return
        tmp: Path | None = None
        try:
            tensors = {
                "ids": _owned(features.ids),
                "positions": _owned(features.positions),
                "embeds": _owned(features.embeds),
            }
            tensors.update({f"deepstack.{i}": _owned(t) for i, t in enumerate(features.deepstack)})
            data = save_safetensors(tensors)
            embeds = features.embeds
            meta = {
                "format": FORMAT_VERSION,
                "key": key,
                "created": time.time(),
                "times": [float(t) for t in features.times],
                "damage": features.damage,
                "tensors_sha256": hashlib.sha256(data).hexdigest(),
                "tensors_bytes": len(data),
                "tokens": int(features.ids.shape[0]),
                "media_tokens": int(embeds.shape[0]),
                "hidden_size": int(embeds.shape[1]),
                "dtype": str(embeds.dtype).removeprefix("torch."),
                "deepstack_layers": len(features.deepstack),
            }
            meta_bytes = json.dumps(meta, indent=1, allow_nan=False).encode()
            size = len(data) + len(meta_bytes)
            if size > self.max_bytes:
                logger.warning(
                    "not caching features for %s: %d bytes exceed the cache limit of %d bytes",
                    key,
                    size,
                    self.max_bytes,
                )
                return

            tmp = self.root / TMP_DIR / f"{key}.{uuid.uuid4().hex}"
            tmp.mkdir(parents=True)
            _write_file(tmp / TENSORS_FILE, data)
            _write_file(tmp / META_FILE, meta_bytes)
            _fsync_dir(tmp)
            entry.parent.mkdir(parents=True, exist_ok=True)
            if self._move_into_place(tmp, entry):
                tmp = None
                _fsync_dir(entry.parent)
                self._touch(entry, None)
                logger.debug("cached %d bytes of features under %s", size, key)
        except Exception as e:  # the video is still summarised; only the cache entry is lost
            reason = (
                "the disk is full" if isinstance(e, OSError) and e.errno == errno.ENOSPC else _reason_of(e)
            )
            logger.warning("could not cache the vision features (%s): %s", key, reason)
            logger.debug("feature cache write failed", exc_info=True)
            return
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self._evict(keep=key)
        self._sweep()

    def _move_into_place(self, tmp: Path, entry: Path) -> bool:
        """Rename ``tmp`` to ``entry``, moving an older entry aside first; False if others kept winning."""
        for _ in range(RENAME_ATTEMPTS):
            try:
                os.rename(tmp, entry)
                return True
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not isinstance(e, FileExistsError):
                    raise
            self._remove_tree(entry)
        logger.debug("concurrent writers kept replacing %s; keeping theirs", entry.name)
        return False

    def _remove_tree(self, path: Path) -> None:
        """Delete a directory so that it disappears whole: rename it into the trash, then remove it."""
        trash = self.root / TRASH_DIR / f"{path.name}.{uuid.uuid4().hex}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)
        except FileNotFoundError:
            return  # already gone (or moved by a concurrent writer)
        except OSError as e:
            logger.debug("could not move %s to the trash (%s); removing it in place", path, e)
            trash = path
        shutil.rmtree(trash, ignore_errors=True)

    # -- size and eviction

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(last used ns, bytes, path) for every entry: a features directory, or a transcript's file in
        :data:`TRANSCRIPTS_DIR`; temp and trash directories are not entries."""
        found = []
        with contextlib.suppress(OSError):
            for f in os.scandir(self.root / TRANSCRIPTS_DIR):
                with contextlib.suppress(OSError):
                    st = f.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and f.name.endswith(".json"):
                        found.append((st.st_mtime_ns, st.st_size, Path(f.path)))
        try:
            shards = [
                d for d in os.scandir(self.root) if len(d.name) == 2 and d.is_dir(follow_symlinks=False)
            ]
        except OSError:
            return []
        for shard in shards:
            try:
                candidates = [d for d in os.scandir(shard.path) if _is_key(d.name)]
            except OSError:
                continue
            for d in candidates:
                try:
                    used = d.stat(follow_symlinks=False)
                    if not stat.S_ISDIR(used.st_mode):
                        continue
                    size = sum(f.stat(follow_symlinks=False).st_size for f in os.scandir(d.path))
                except OSError:
                    continue  # removed concurrently
                found.append((used.st_mtime_ns, size, Path(d.path)))
        return found

    def total_bytes(self) -> int:
        """Bytes held by complete entries (files' sizes)."""
        return sum(size for _, size, _ in self._entries())

    def _evict(self, keep: str) -> None:
        """Delete least recently used entries, never ``keep`` (a key, or a transcript's file name), until
        the total is within max_bytes."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path.name == keep:
                continue
            logger.debug("evicting cache entry %s (%d bytes)", path.name, size)
            self._remove_entry(path)
            total -= size

    def _remove_entry(self, path: Path) -> None:
        if path.parent.name == TRANSCRIPTS_DIR:  # one file, replaced atomically: unlinking it is whole
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            self._remove_tree(path)

    # -- small entries beside the features (transcripts)

    def load_text(self, name: str) -> str | None:
        """The text stored as ``name`` in :data:`TRANSCRIPTS_DIR`, or None; a hit counts as a use."""
        path = self.root / TRANSCRIPTS_DIR / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        self._touch(path, None)
        return text

    def store_text(self, name: str, text: str) -> None:
        """Store ``text`` as ``name`` in :data:`TRANSCRIPTS_DIR` (atomically), then evict down to
        max_bytes, counting it with the features. A failed write is logged and dropped."""
        folder = self.root / TRANSCRIPTS_DIR
        tmp = folder / f"{name}.{uuid.uuid4().hex}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(folder / name)
            self._touch(folder / name, None)
        except OSError as e:
            logger.warning("could not cache %s: %s", name, _reason_of(e))
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self._evict(keep=name)

    def remove_texts(self, prefix: str) -> int:
        """Remove the texts in :data:`TRANSCRIPTS_DIR` whose names start with ``prefix``; how many."""
        removed = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root / TRANSCRIPTS_DIR) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(entry.path)
                        removed += 1
        return removed

    def _sweep(self) -> None:
        """Remove what crashed processes left: trash, and temp entries untouched for STALE_TMP_SECONDS."""
        trash = self.root / TRASH_DIR
        with contextlib.suppress(OSError):
            for d in os.scandir(trash):
                shutil.rmtree(d.path, ignore_errors=True)
        cutoff = time.time() - STALE_TMP_SECONDS
        with contextlib.suppress(OSError):
            for d in os.scandir(self.root / TMP_DIR):
                try:
                    stale = d.stat(follow_symlinks=False).st_mtime < cutoff
                except OSError:
                    continue
                if stale:
                    logger.info("removing a temp entry left by a crashed writer: %s", d.name)
                    shutil.rmtree(d.path, ignore_errors=True)

    def clear(self) -> None:
        """Delete every entry (and any temp or trash left over)."""
        for _, _, path in self._entries():
            self._remove_entry(path)
        with contextlib.suppress(OSError):
            for d in os.scandir(self.root):
                if d.name != TMP_DIR and d.is_dir(follow_symlinks=False):
                    shutil.rmtree(d.path, ignore_errors=True)
        self._sweep()
