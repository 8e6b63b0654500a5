"""Library benchmark: a synthetic library of many hours of transcripts and summaries, English and Chinese.

    python bench/bench_library.py                       # 1,000 hours (45-minute videos), in a temp folder
    python bench/bench_library.py --hours 50            # quicker
    python bench/bench_library.py --db /tmp/lib.db      # keep (and on a second run, reuse) the database
    python bench/bench_library.py --segmenters          # CJK: bigrams vs jieba (when installed), recall and speed

Each video is 45 minutes: a transcript line every LINE_S seconds and a summary of SUMMARY_LINES timed
lines, written through the library's own calls (``add_video``, ``start_run``, ``write_transcript``,
``write_summary``, ``finish_run``: the triggers index every line, CJK as bigrams). Half the videos are
English, half Chinese. Words are drawn from a Zipf law over VOCABULARY pseudo-words per language, like
natural text, so search meets posting lists of every length: a query's cost depends mostly on how many
passages hold its terms. A few real words (机制, 延迟, "checkpointing") are mixed in at a known rate.

Reported (one JSON line on stdout; bench/RESULTS_library.md records the figures with the machine):
- build: hours, videos, passages, seconds to build, database bytes per hour of video (after a checkpoint);
- write: seconds to record one more 45-minute video's transcript and summary into the full library
  (p50/p95 over --writes videos);
- list: seconds for the first page of the video list (DEFAULT_PAGE videos, newest first);
- search: p50/p95/max seconds per query class (--queries each): the most common words (Zipf ranks 0-10,
  listed newest first: more than library.COMMON_PASSAGES passages hold them), common words (ranks 10-100),
  content words (ranks 100-5,000), rare words (5,000+), two-word AND, Chinese two-character words,
  Chinese four-character phrases, and the real two-character words 机制/延迟; plus the hits found;
- ask: seconds to retrieve the passages for a question (``Library.retrieve``: any of its words, BM25),
  English questions with three content words and Chinese ones with three words (--queries each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3vl_summarizer import library  # noqa: E402
from qwen3vl_summarizer.library import Library  # noqa: E402

VIDEO_S = 45 * 60  # seconds per synthetic video
LINE_S = 5.0  # a transcript line every this many seconds (speech at ~150 words a minute: ~12 words)
SUMMARY_LINES = 30  # timed lines per summary
VOCABULARY = 20_000  # pseudo-words per language
ZIPF_S = 1.05  # the Zipf exponent of word frequencies
EN_WORDS_PER_LINE = (8, 16)
ZH_WORDS_PER_LINE = (6, 12)  # two-character words, no spaces
REAL_WORDS_RATE = 0.01  # share of lines that carry one of the real words below
REAL_EN = ("checkpointing", "gradient", "latency")
REAL_ZH = ("机制", "延迟", "注意力")
SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "er")]
HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)]


def vocabularies(seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    english: list[str] = []
    seen: set[str] = set()
    while len(english) < VOCABULARY:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            english.append(word)
    chinese: list[str] = []
    seen = set(REAL_ZH)
    while len(chinese) < VOCABULARY:
        word = rng.choice(HANZI) + rng.choice(HANZI)
        if word not in seen:
            seen.add(word)
            chinese.append(word)
    return english, chinese


class Text:
    """Lines of Zipf-distributed words of one language."""

    def __init__(self, words: list[str], real: tuple[str, ...], joiner: str, per_line: tuple[int, int],
                 rng: random.Random):  # fmt: skip
        self.words = words
        self.real = real
        self.joiner = joiner
        self.per_line = per_line
        self.rng = rng
        self.weights = [1 / (rank + 1) ** ZIPF_S for rank in range(len(words))]
        self.cumulative = list(_accumulate(self.weights))

    def line(self) -> str:
        n = self.rng.randint(*self.per_line)
        words = self.rng.choices(self.words, cum_weights=self.cumulative, k=n)
        if self.rng.random() < REAL_WORDS_RATE:
            words[self.rng.randrange(n)] = self.rng.choice(self.real)
        text = self.joiner.join(words)
        return text[0].upper() + text[1:] + ("." if self.joiner == " " else "。")


def _accumulate(values: list[float]):
    total = 0.0
    for v in values:
        total += v
        yield total


def video_text(text: Text) -> tuple[list[tuple[float, float, str]], str]:
    """One video's transcript segments and summary Markdown."""
    segments = [(t, t + LINE_S, text.line()) for t in _frange(0.0, VIDEO_S, LINE_S)]
    lines = ["## Summary", ""]
    for i in range(SUMMARY_LINES):
        t = i * VIDEO_S / SUMMARY_LINES
        lines.append(f"- [{int(t // 60):02d}:{int(t % 60):02d}] {text.line()}")
    return segments, "\n".join(lines)


def _frange(start: float, stop: float, step: float):
    t = start
    while t < stop:
        yield t
        t += step


def record(lib: Library, n: int, text: Text) -> None:
    segments, summary = video_text(text)
    video = lib.add_video(f"synthetic-{n}", f"video {n:05d}.mp4", duration=float(VIDEO_S),
                          streams={"codec": "h264", "width": 1280, "height": 720})  # fmt: skip
    run = lib.start_run(video, "summarize", {"model": "Qwen/Qwen3-VL-2B-Instruct", "fps": 1.0})
    lib.write_transcript(run, segments, "asr:synthetic", "zh" if text.joiner == "" else "en")
    lib.write_summary(run, summary, {"prefill_tokens": 160_000, "generated_tokens": 700}, float(VIDEO_S))
    lib.finish_run(run)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2)}  # fmt: skip


# Two-character words inside longer words and phrases: (sentence, query). A segmenter finds the query when
# every token of the query is a token of the sentence (bigrams: the query's bigram phrase).
SEGMENTER_CASES = [
    ("注意力机制是模型的核心", "机制"), ("这个注意力机制很重要", "注意"), ("网络延迟降低了一半", "延迟"),
    ("我们讨论了反向传播算法", "传播"), ("梯度检查点节省显存", "检查"), ("大语言模型的推理延迟", "推理"),
    ("自注意力机制", "机制"), ("多头注意力", "注意"), ("视频理解任务", "理解"), ("发布日期推迟到三月", "日期"),
    ("会议决定推迟发布", "发布"), ("混合专家模型", "专家"), ("预训练语言模型", "训练"), ("低延迟推理引擎", "延迟"),
    ("卷积神经网络", "神经"), ("强化学习算法", "学习"), ("数据并行训练", "并行"), ("量化感知训练", "感知"),
    ("知识蒸馏方法", "蒸馏"), ("位置编码机制", "编码"),
]  # fmt: skip


def compare_segmenters() -> dict[str, dict[str, float]]:
    """Recall on SEGMENTER_CASES and speed (characters segmented per second) of the library's bigrams and,
    when it is installed, jieba (default and search mode)."""
    segmenters = {"bigrams": library.index_terms}
    try:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        segmenters |= {"jieba": lambda t: " ".join(jieba.lcut(t)),
                       "jieba search mode": lambda t: " ".join(jieba.lcut_for_search(t))}  # fmt: skip
    except ImportError:
        print("jieba is not installed: only bigrams are measured", file=sys.stderr)
    out = {}
    text = [sentence for sentence, _ in SEGMENTER_CASES] * 500
    for name, segment in segmenters.items():
        found = 0
        for sentence, query in SEGMENTER_CASES:
            tokens = segment(sentence).split()
            wanted = segment(query).split()
            wanted = wanted[:-1] if name == "bigrams" else wanted  # bigrams: the phrase, not the tail
            found += all(w in tokens for w in wanted)
        segment(text[0])  # load a dictionary first
        start = time.perf_counter()
        for sentence in text:
            segment(sentence)
        seconds = time.perf_counter() - start
        out[name] = {
            "recall": found / len(SEGMENTER_CASES),
            "k_chars_per_s": round(sum(map(len, text)) / seconds / 1e3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1000.0, help="hours of video in the library")
    parser.add_argument("--db", help="database file (default: a new one in a temp folder)")
    parser.add_argument("--queries", type=int, default=50, help="queries timed per class")
    parser.add_argument("--writes", type=int, default=20, help="45-minute videos timed when recorded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--segmenters", action="store_true", help="only compare CJK segmenters (bigrams, jieba if installed)"
    )
    args = parser.parse_args()
    if args.segmenters:
        print(json.dumps(compare_segmenters(), ensure_ascii=False))
        return

    rng = random.Random(args.seed)
    english, chinese = vocabularies(args.seed)
    texts = [
        Text(english, REAL_EN, " ", EN_WORDS_PER_LINE, rng),
        Text(chinese, REAL_ZH, "", ZH_WORDS_PER_LINE, rng),
    ]
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="bench-library-")) / "library.db"
    videos = round(args.hours * 3600 / VIDEO_S)
    lib = Library(path)
    have = lib.count_videos()
    t0 = time.perf_counter()
    for n in range(have, videos):
        record(lib, n, texts[n % 2])
        if n % 100 == 99:
            print(f"{n + 1}/{videos} videos, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    build_s = time.perf_counter() - t0
    lib._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    passages = lib._read("SELECT count(*) FROM passages")[0][0]

    writes = []
    for n in range(videos, videos + args.writes):
        start = time.perf_counter()
        record(lib, n, texts[n % 2])
        writes.append(time.perf_counter() - start)

    lists = []
    for _ in range(20):
        start = time.perf_counter()
        page = lib.list_videos(limit=library.DEFAULT_PAGE)
        lists.append(time.perf_counter() - start)
    assert len(page) == library.DEFAULT_PAGE

    def words(vocabulary: list[str], lo: int, hi: int) -> list[str]:
        return [vocabulary[rng.randrange(lo, hi)] for _ in range(args.queries)]

    classes = {
        "en most common (rank 0-10: in 6-40 % of passages)": words(english, 0, 10),
        "en common (rank 10-100)": words(english, 10, 100),
        "en content (rank 100-5000)": words(english, 100, 5000),
        "en rare (rank 5000+)": words(english, 5000, VOCABULARY),
        "en two words AND (rank 100-5000)": [
            f"{a} {b}" for a, b in zip(words(english, 100, 5000), words(english, 100, 5000), strict=True)
        ],
        "zh two-character word (rank 100-5000)": words(chinese, 100, 5000),
        "zh four-character phrase (ranks 0-200)": [
            a + b for a, b in zip(words(chinese, 0, 200), words(chinese, 0, 200), strict=True)
        ],
        "zh real words 机制/延迟/注意力": [rng.choice(REAL_ZH) for _ in range(args.queries)],
        "en real words": [rng.choice(REAL_EN) for _ in range(args.queries)],
    }
    questions = [
        f"Where did anyone explain {a} and {b} with {c}?"
        for a, b, c in zip(words(english, 100, 5000), words(english, 100, 5000), words(english, 10, 5000), strict=True)
    ] + [f"哪个视频讲了{a}{b}和{c}？" for a, b, c in zip(words(chinese, 100, 5000), words(chinese, 100, 5000),
                                                   words(chinese, 10, 5000), strict=True)]  # fmt: skip
    retrieval = []
    for q in questions:
        start = time.perf_counter()
        lib.retrieve(q)
        retrieval.append(time.perf_counter() - start)
    search = {}
    for name, queries in classes.items():
        times, found = [], []
        lib.search(queries[0])  # warm the page cache for this class
        for q in queries:
            start = time.perf_counter()
            hits = lib.search(q, limit=library.DEFAULT_PAGE)
            times.append(time.perf_counter() - start)
            found.append(len(hits))
        search[name] = {**percentiles(times), "mean_hits": round(statistics.mean(found), 1)}
    overall = [v for q in classes.values() for v in q]
    times = []
    for q in overall:
        start = time.perf_counter()
        lib.search(q)
        times.append(time.perf_counter() - start)

    worst = lib._read(
        "SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?",
        (library.match_expression(english[0]),),
    )[0][0]
    result = {
        "hours": round(videos * VIDEO_S / 3600, 1),
        "videos": videos,
        "passages": passages,
        "build_s": round(build_s, 1),
        "db_bytes": size,
        "db_mb_per_hour": round(size / 2**20 / (videos * VIDEO_S / 3600), 3),
        "write_45min_video": percentiles(writes),
        "list_first_page": percentiles(lists),
        "search_all_classes": percentiles(times),
        "search": search,
        "ask_retrieval_any_word": percentiles(retrieval),
        "most_common_word_passages": worst,
        "sqlite": sqlite3.sqlite_version,
        "database": str(path),
    }
    print(json.dumps(result, ensure_ascii=False))
    lib.close()


if __name__ == "__main__":
    main()
