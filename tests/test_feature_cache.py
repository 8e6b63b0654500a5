"""The on-disk vision feature cache: round trips, keys, damage detection, LRU eviction, atomicity."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from qwen3vl_summarizer import feature_cache
from qwen3vl_summarizer.errors import OptionsError
from qwen3vl_summarizer.feature_cache import (
    META_FILE,
    STALE_TMP_SECONDS,
    TENSORS_FILE,
    TMP_DIR,
    CachedFeatures,
    FeatureCache,
    file_fingerprint,
)

MiB = 1024 * 1024
LOGGER = feature_cache.__name__


def make_features(
    seed: int = 0, dtype: torch.dtype = torch.float32, n: int = 24, m: int = 16, d: int = 8, layers: int = 3
) -> CachedFeatures:
    g = torch.Generator().manual_seed(seed)
    return CachedFeatures(
        ids=torch.randint(0, 1000, (n,), generator=g),  # [n]
        positions=torch.arange(n).repeat(3, 1),  # [3, n]
        embeds=torch.randn(m, d, generator=g).to(dtype),  # [m, D]
        deepstack=[torch.randn(m, d, generator=g).to(dtype) for _ in range(layers)],
        times=[0.0, 0.5, 1.25 + seed],
        damage=None if seed % 2 == 0 else f"stopped at {seed}.5 s",
    )


def assert_same(a: CachedFeatures, b: CachedFeatures) -> None:
    for x, y in zip(
        [a.ids, a.positions, a.embeds, *a.deepstack],
        [b.ids, b.positions, b.embeds, *b.deepstack],
        strict=True,
    ):
        assert x.dtype == y.dtype
        assert torch.equal(x, y)
    assert len(a.deepstack) == len(b.deepstack)
    assert a.times == b.times
    assert a.damage == b.damage


def key_of(i: int) -> str:
    return f"{i:064x}"


def entry_dir(root: Path, key: str) -> Path:
    return root / key[:2] / key


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
def cache(tmp_path: Path) -> FeatureCache:
    return FeatureCache(tmp_path / "cache", max_bytes=64 * MiB)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(100_000))
    return path


# -- round trip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip_is_exact(cache: FeatureCache, dtype: torch.dtype) -> None:
    features = make_features(seed=1, dtype=dtype)
    cache.store(key_of(1), features)
    loaded = cache.load(key_of(1))
    assert loaded is not None
    assert_same(loaded, features)
    assert loaded.nbytes == features.nbytes > 0


def test_round_trip_of_views_sharing_storage(cache: FeatureCache) -> None:
    # Deepstack layers sliced out of one stacked tensor, embeds transposed: safetensors alone refuses these.
    stacked = torch.randn(3, 16, 8)
    features = make_features()
    features.deepstack = list(stacked.unbind(0))
    features.embeds = torch.randn(8, 16).t()
    cache.store(key_of(2), features)
    loaded = cache.load(key_of(2))
    assert loaded is not None
    assert_same(loaded, features)


def test_miss_is_none_and_quiet(cache: FeatureCache, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert cache.load(key_of(3)) is None
    assert warnings_in(caplog) == []
    assert cache.total_bytes() == 0


def test_store_replaces_an_existing_entry(cache: FeatureCache) -> None:
    cache.store(key_of(4), make_features(seed=0))
    cache.store(key_of(4), make_features(seed=1))
    loaded = cache.load(key_of(4))
    assert loaded is not None
    assert_same(loaded, make_features(seed=1))


# -- keys


def test_key_is_stable_and_follows_every_setting(cache: FeatureCache, video: Path) -> None:
    settings = {
        "fps": 2.0,
        "width": 448,
        "height": 252,
        "start": 0.0,
        "end": None,
        "model": "m",
        "dtype": "bf16",
    }
    base = cache.key(video, **settings)
    assert base == cache.key(str(video), **dict(reversed(settings.items())))
    assert base == FeatureCache(Path(cache.root) / "elsewhere", max_bytes=1).key(video, **settings)
    for name, other in [("fps", 1.0), ("width", 224), ("end", 30.0), ("model", "n"), ("dtype", "fp16")]:
        assert cache.key(video, **{**settings, name: other}) != base, name
    assert cache.key(video, **settings, processor="abc") != base


def test_key_follows_the_content_not_the_name(cache: FeatureCache, video: Path, tmp_path: Path) -> None:
    before = cache.key(video, fps=2.0)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(video.read_bytes())
    assert cache.key(copy, fps=2.0) == before
    # Same name, same size, different bytes, rewritten at once (mtime may not even move).
    data = bytearray(video.read_bytes())
    data[50_000] ^= 0xFF
    video.write_bytes(bytes(data))
    assert cache.key(video, fps=2.0) != before


def test_key_rejects_settings_that_are_not_json(cache: FeatureCache, video: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        cache.key(video, fps=object())
    with pytest.raises(FileNotFoundError):
        cache.key(video.with_name("missing.mp4"), fps=2.0)


def test_fingerprint_is_memoised_for_a_settled_file(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_hash = feature_cache._hash_file
    monkeypatch.setattr(feature_cache, "_hash_file", lambda p: calls.append(p) or real_hash(p))

    # Just written: could change again within the timestamp granularity, so it is hashed every time.
    first = file_fingerprint(video)
    assert file_fingerprint(video) == first
    assert len(calls) == 2

    old = time.time_ns() - 3600 * 10**9
    os.utime(video, ns=(old, old))
    assert file_fingerprint(video) == first
    assert file_fingerprint(video) == first
    assert len(calls) == 3
    assert first.startswith(f"{video.stat().st_size}-")

    video.write_bytes(b"other content")
    os.utime(video, ns=(old + 10**9, old + 10**9))
    assert file_fingerprint(video) != first
    assert len(calls) == 4


# -- damaged entries


def flip_bytes(entry: Path) -> None:
    path = entry / TENSORS_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(entry: Path) -> None:
    path = entry / TENSORS_FILE
    path.write_bytes(path.read_bytes()[:-100])


def garbage_meta(entry: Path) -> None:
    (entry / META_FILE).write_bytes(b"\x00{not json")


def meta_not_object(entry: Path) -> None:
    (entry / META_FILE).write_text("[1, 2]")


def stale_format(entry: Path) -> None:
    meta = json.loads((entry / META_FILE).read_text())
    meta["format"] = 0
    (entry / META_FILE).write_text(json.dumps(meta))


def missing_tensors(entry: Path) -> None:
    (entry / TENSORS_FILE).unlink()


def inconsistent_shapes(entry: Path) -> None:
    # Well-formed file with a correct checksum, but ids and positions disagree.
    from safetensors.torch import load_file, save_file

    tensors = load_file(entry / TENSORS_FILE)
    tensors["ids"] = tensors["ids"][:-1].clone()
    save_file(tensors, entry / TENSORS_FILE)
    meta = json.loads((entry / META_FILE).read_text())
    data = (entry / TENSORS_FILE).read_bytes()
    meta["tensors_bytes"] = len(data)
    meta["tensors_sha256"] = hashlib.sha256(data).hexdigest()
    (entry / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage",
    [flip_bytes, truncate, garbage_meta, meta_not_object, stale_format, missing_tensors, inconsistent_shapes],
)
def test_damaged_entry_is_deleted_not_used(
    cache: FeatureCache, damage, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_of(5)
    cache.store(key, make_features())
    damage(entry_dir(cache.root, key))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert cache.load(key) is None
    assert len(warnings_in(caplog)) == 1
    assert not entry_dir(cache.root, key).exists()
    assert cache.total_bytes() == 0
    # The key works again afterwards.
    cache.store(key, make_features())
    assert cache.load(key) is not None


def test_entry_under_another_key_is_rejected(cache: FeatureCache, caplog: pytest.LogCaptureFixture) -> None:
    a, b = key_of(6), "ff" + key_of(6)[2:]
    cache.store(a, make_features())
    entry_dir(cache.root, b).parent.mkdir(parents=True)
    os.rename(entry_dir(cache.root, a), entry_dir(cache.root, b))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert cache.load(b) is None
    assert "belongs to key" in warnings_in(caplog)[0]
    assert not entry_dir(cache.root, b).exists()
    assert cache.load(a) is None


def test_bad_keys_and_limits_are_errors(cache: FeatureCache, tmp_path: Path) -> None:
    for bad in ["../../etc", "AB" * 32, key_of(1)[:-1], key_of(1) + "0", ""]:
        with pytest.raises(ValueError):
            cache.load(bad)
    for bad_limit in [0, -1, 1.5, True]:
        with pytest.raises(OptionsError):
            FeatureCache(tmp_path, max_bytes=bad_limit)


def test_inconsistent_features_are_not_stored(cache: FeatureCache, caplog: pytest.LogCaptureFixture) -> None:
    bad = make_features()
    bad.deepstack[1] = bad.deepstack[1][:-1]
    no_times = make_features()
    no_times.times = []
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache.store(key_of(7), bad)
    cache.store(key_of(8), no_times)
    assert len(warnings_in(caplog)) == 2
    assert cache.total_bytes() == 0


# -- size limit


def entry_size(tmp_path: Path) -> int:
    scratch = FeatureCache(tmp_path / "scratch", max_bytes=64 * MiB)
    scratch.store(key_of(0), make_features(d=64))
    return scratch.total_bytes()


def test_lru_eviction_keeps_the_recently_used(tmp_path: Path) -> None:
    size = entry_size(tmp_path)
    cache = FeatureCache(tmp_path / "cache", max_bytes=3 * size + size // 2)
    a, b, c, d, e = (key_of(i) for i in range(10, 15))
    for key in (a, b, c):
        cache.store(key, make_features(d=64))
    assert abs(cache.total_bytes() - 3 * size) < 10  # meta.json lengths differ by a digit or two
    assert cache.load(a) is not None  # a is now more recent than b and c
    cache.store(d, make_features(d=64))
    assert [cache.load(k) is not None for k in (a, b, c, d)] == [True, False, True, True]
    assert cache.total_bytes() <= cache.max_bytes
    # The loads just above refreshed a, c, d in that order, so a is now the least recently used.
    cache.store(e, make_features(d=64))
    assert [cache.load(k) is not None for k in (a, c, d, e)] == [False, True, True, True]


def test_oversize_entry_is_not_stored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    size = entry_size(tmp_path)
    cache = FeatureCache(tmp_path / "cache", max_bytes=size * 2)
    cache.store(key_of(20), make_features(d=64))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache.store(key_of(21), make_features(d=64 * 3))
    assert "exceed" in warnings_in(caplog)[0]
    assert cache.load(key_of(21)) is None
    assert cache.load(key_of(20)) is not None  # nothing was evicted for it


def test_clear_removes_everything(cache: FeatureCache) -> None:
    for i in range(3):
        cache.store(key_of(30 + i), make_features(seed=i))
    assert cache.total_bytes() > 0
    cache.clear()
    assert cache.total_bytes() == 0
    assert all(cache.load(key_of(30 + i)) is None for i in range(3))
    assert [p.name for p in cache.root.iterdir() if p.name != TMP_DIR] == []
    FeatureCache(cache.root / "never-made", max_bytes=1).clear()


# -- atomicity and failures


def test_leftover_temp_entry_is_ignored_then_cleaned(cache: FeatureCache) -> None:
    key = key_of(40)
    cache.store(key_of(41), make_features())
    before = cache.total_bytes()
    crashed = cache.root / TMP_DIR / f"{key}.deadbeef"
    live = cache.root / TMP_DIR / f"{key}.cafef00d"
    for d in (crashed, live):
        d.mkdir(parents=True)
        (d / TENSORS_FILE).write_bytes(b"half a file")
    old = time.time() - 2 * STALE_TMP_SECONDS
    os.utime(crashed, (old, old))

    assert cache.load(key) is None
    assert cache.total_bytes() == before
    cache.store(key_of(42), make_features())
    assert not crashed.exists()
    assert live.exists()  # may belong to a writer still at work


def test_concurrent_writers_of_one_key_leave_one_valid_entry(
    cache: FeatureCache, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_of(50)
    versions = [make_features(seed=0, d=32), make_features(seed=1, d=32)]
    rounds = 25
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []
    hits: list[CachedFeatures] = []

    def writer(features: CachedFeatures) -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                cache.store(key, features)
        except BaseException as e:  # carried to the test thread
            errors.append(e)

    def reader() -> None:
        try:
            barrier.wait()
            for _ in range(rounds * 2):
                if (loaded := cache.load(key)) is not None:
                    hits.append(loaded)
        except BaseException as e:
            errors.append(e)

    caplog.set_level(logging.WARNING, logger=LOGGER)
    threads = [threading.Thread(target=writer, args=(v,)) for v in versions] + [
        threading.Thread(target=reader)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert warnings_in(caplog) == []  # a reader never mistook a replaced entry for a damaged one
    final = cache.load(key)
    assert final is not None
    assert final.times in ([v.times for v in versions])
    assert_same(final, versions[0] if final.times == versions[0].times else versions[1])
    for hit in hits:
        assert_same(hit, versions[0] if hit.times == versions[0].times else versions[1])
    assert [p.name for p in entry_dir(cache.root, key).parent.iterdir()] == [key]
    assert list((cache.root / TMP_DIR).iterdir()) == []


def test_unwritable_root_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "a-file"
    root.write_text("not a directory")
    cache = FeatureCache(root, max_bytes=MiB)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache.store(key_of(60), make_features())
    warning = warnings_in(caplog)[0]
    assert "could not cache the vision features" in warning and re.search(r"\): \w+Error", warning), warning
    assert cache.load(key_of(60)) is None
    assert cache.total_bytes() == 0


def test_permission_denied_is_logged_not_raised(
    cache: FeatureCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulated (chmod does not stop root, who runs CI): the write itself is refused.
    def refused(path: Path, data: bytes) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(feature_cache, "_write_file", refused)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache.store(key_of(61), make_features())
    warning = warnings_in(caplog)[0]
    assert "could not cache the vision features" in warning and "PermissionError" in warning, warning
    assert cache.load(key_of(61)) is None


def test_disk_full_leaves_no_trace(
    cache: FeatureCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache.store(key_of(70), make_features())
    before = cache.total_bytes()

    def full(path: Path, data: bytes) -> None:
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_cache, "_write_file", full)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache.store(key_of(71), make_features())
    cache.store(key_of(70), make_features(seed=1))
    assert len(warnings_in(caplog)) == 2
    assert cache.load(key_of(71)) is None
    loaded = cache.load(key_of(70))  # the old entry survives a failed replacement
    assert loaded is not None
    assert_same(loaded, make_features())
    assert cache.total_bytes() == before
    assert list((cache.root / TMP_DIR).iterdir()) == []


def test_a_full_disk_is_named_in_the_warning(
    cache: FeatureCache, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import qwen3vl_summarizer.feature_cache as feature_cache

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_cache, "_write_file", full)
    with caplog.at_level("WARNING"):
        cache.store(key_of(1), make_features())
    assert any(
        "could not cache the vision features" in w and "the disk is full" in w for w in warnings_in(caplog)
    )
    assert cache.load(key_of(1)) is None


# --- transcripts beside the features -------------------------------------------------------------------


def test_transcripts_are_counted_and_evicted_with_the_features(tmp_path: Path) -> None:
    from qwen3vl_summarizer.feature_cache import TRANSCRIPTS_DIR

    size = entry_size(tmp_path)
    cache = FeatureCache(tmp_path / "cache", max_bytes=2 * size)
    text = "x" * (size * 6 // 10)  # a transcript 0.6 times the size of a features entry
    cache.store_text("old.json", text)
    assert cache.total_bytes() == len(text), "a transcript counts against max_bytes"
    a, b = key_of(20), key_of(21)
    cache.store(a, make_features(d=64))
    assert cache.load_text("old.json") == text  # used: now more recent than a
    cache.store(b, make_features(d=64))  # 2.6 entries' worth is over 2: the least recent, a, goes
    assert cache.load(a) is None and cache.load_text("old.json") == text and cache.load(b) is not None
    cache.store_text("new.json", text)  # 2.2 is over again: the least recent now is old.json
    assert cache.load_text("old.json") is None and cache.load_text("new.json") == text
    assert cache.total_bytes() <= cache.max_bytes
    cache.clear()
    assert cache.total_bytes() == 0 and not list((cache.root / TRANSCRIPTS_DIR).glob("*"))


def test_the_transcript_cache_lives_in_the_feature_cache(tmp_path: Path) -> None:
    from qwen3vl_summarizer.options import load_options
    from qwen3vl_summarizer.speech import SpeechSegment, Transcript
    from qwen3vl_summarizer.transcripts import TranscriptCache

    opts = load_options(overrides={"cache": {"dir": str(tmp_path / "c"), "max_gb": 1.0}}, environ={})
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"not really a video, but it has content")
    store = TranscriptCache.of(opts.cache)
    key = store.key(video, opts.speech)
    transcript = Transcript((SpeechSegment(1.0, 2.0, "hello"),), "asr:tiny.en", "en")
    store.store(key, transcript)
    assert store.load(key) == transcript
    assert store.features.total_bytes() == (tmp_path / "c" / "transcripts" / f"{key}.json").stat().st_size
    assert store.key(video, opts.replace(speech={"language": "de"}).speech) != key
    assert TranscriptCache.of(opts.replace(cache={"enabled": False}).cache) is None
