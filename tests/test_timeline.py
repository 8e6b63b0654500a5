"""The chapter timeline: spans placed by time, cards with the thumbnail nearest each chapter's start, and
thumbnails kept from the frames a session reads, within bounds."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from qwen3vl_summarizer.timeline import MAX_THUMBNAILS, Thumbnails
from qwen3vl_summarizer.video import Frame
from web.render import NO_CHAPTERS_NOTE, chapter_timeline

MARKDOWN = """# A walk

### [00:00–00:20] Arrival
- people arrive

### [00:20–01:05] The <b>talk</b> & questions
- a talk

### [01:05] Goodbye
"""


class Elements(HTMLParser):
    """Every start tag as (tag, attributes), and the text inside each ``<a>``."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.link_texts: list[str] = []
        self._in_link = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._in_link = True
            self.link_texts.append("")

    def handle_endtag(self, tag):
        if tag == "a":
            self._in_link = False

    def handle_data(self, data):
        if self._in_link:
            self.link_texts[-1] += data

    def having(self, cls: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if cls in a.get("class", "").split()]


def picture(value: int, size: tuple[int, int] = (320, 180)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def test_one_span_per_chapter_placed_by_its_share_of_the_video():
    page = Elements(chapter_timeline(MARKDOWN, duration=100.0))
    spans = page.having("timeline-span")
    assert len(spans) == 3
    styles = [s["style"] for s in spans]
    assert "left: 0.00%; width: 20.00%" in styles[0]
    assert "left: 20.00%; width: 45.00%" in styles[1]
    assert "left: 65.00%; width: 35.00%" in styles[2]  # the last chapter runs to the end of the video
    assert [s["href"] for s in spans] == ["#t=0", "#t=20", "#t=65"]
    assert len({s["style"].rsplit("background: ", 1)[1] for s in spans}) == 3, "each its own colour"
    # A seek link's text is the start time: the page's seek script asks "What is happening at 00:20?".
    links = [text for text in page.link_texts]
    assert links == ["00:00", "00:20", "01:05", "00:00", "00:20", "01:05"]  # spans, then cards
    # Titles are text, never markup.
    assert spans[1]["data-title"] == "The <b>talk</b> & questions"  # as the parser unescapes it
    html = chapter_timeline(MARKDOWN, duration=100.0)
    assert "<b>" not in html and "The &lt;b&gt;talk&lt;/b&gt; &amp; questions" in html
    cards = page.having("timeline-card")
    assert len(cards) == 3 and "00:20–01:05" in html


def test_cards_show_the_thumbnail_nearest_each_chapters_start():
    thumbnails = Thumbnails(interval_s=4.0)
    for i in range(0, 100):  # a frame every second, one kept per 4-second slot: 0, 4, 8, ...
        thumbnails.add(float(i), picture(i))
    assert thumbnails.times == [float(t) for t in range(0, 100, 4)]
    markdown = "- [00:00] One\n- [00:21] Two\n- [00:58] Three\n- [01:30] Four\n"
    page = Elements(chapter_timeline(markdown, duration=100.0, thumbnails=thumbnails))
    images = [a for tag, a in page.tags if tag == "img"]
    # 21 s is nearest 20 s; 58 s and 90 s are as near the frame before as after: the later one, in which
    # the chapter has begun.
    assert [float(a["data-t"]) for a in images] == [0.0, 20.0, 60.0, 92.0]
    assert thumbnails.nearest(58.0)[0] == 60.0 and thumbnails.nearest(21.0)[0] == 20.0
    data = base64.b64decode(images[1]["src"].removeprefix("data:image/jpeg;base64,"))
    with Image.open(io.BytesIO(data)) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (160, 90)  # 160 px wide, the aspect kept
        assert abs(int(np.asarray(jpeg).mean()) - 20) <= 3, "the frame shown at 20 s"


def test_no_chapters_is_one_line_and_no_thumbnail_is_a_blank_card():
    assert chapter_timeline("Just a paragraph about the video.", duration=60.0) == (
        f'<p class="timeline-note">{NO_CHAPTERS_NOTE}</p>'
    )
    page = Elements(chapter_timeline("- [00:10] Only one\n", duration=60.0, thumbnails=Thumbnails()))
    assert not [tag for tag, _ in page.tags if tag == "img"] and page.having("timeline-blank")


def test_a_range_ends_its_last_chapter_at_the_range_end_on_the_whole_videos_bar():
    markdown = "- [01:00:00] Start of the range\n- [01:05:00] Later\n"
    page = Elements(chapter_timeline(markdown, duration=7200.0, end=4200.0))
    styles = [s["style"] for s in page.having("timeline-span")]
    assert "left: 50.00%; width: 4.17%" in styles[0] and "left: 54.17%; width: 4.17%" in styles[1]
    assert "01:05:00–01:10:00" in chapter_timeline(markdown, duration=7200.0, end=4200.0)


def test_thumbnails_stay_within_their_bounds():
    long = Thumbnails.for_span(10 * 3600.0)
    assert long.interval_s == 10 * 3600.0 / MAX_THUMBNAILS
    for t in range(0, 10 * 3600, 7):
        long.add(float(t), picture(t % 256, (64, 36)))
    assert len(long) <= MAX_THUMBNAILS + 1
    capped = Thumbnails(interval_s=1.0, max_bytes=20_000)
    noise = np.random.default_rng(0).integers(0, 256, (180, 320, 3), dtype=np.uint8)  # JPEGs of ~10 KB
    kept = [capped.add(float(t), noise) for t in range(50)]
    assert capped.nbytes < 20_000 + 15_000 and not all(kept) and kept.index(False) >= 1
    # Frames read twice (a released session reads again) are not kept twice.
    assert not capped.add(0.5, noise)


def test_tap_passes_the_frames_through_and_keeps_thumbnails_and_damage():
    class Stream:
        damage = "damaged after 00:03"

        def __iter__(self):
            for t in (0.0, 0.5, 2.0, 2.5, 4.0):
                yield Frame(t, t, picture(int(t * 10), (64, 64)))

    thumbnails = Thumbnails(interval_s=2.0)
    tap = thumbnails.tap(Stream())
    assert [f.t for f in tap] == [0.0, 0.5, 2.0, 2.5, 4.0]
    assert thumbnails.times == [0.0, 2.0, 4.0] and tap.damage == "damaged after 00:03"
    with pytest.raises(ValueError):
        Thumbnails(interval_s=0)


def test_speech_is_marked_under_the_chapters_each_mark_a_seek_link():
    from qwen3vl_summarizer.speech import SpeechSegment

    said = [SpeechSegment(2.0, 4.5, "Hello <there>"), SpeechSegment(30.0, 40.0, "later"),
            SpeechSegment(40.1, 45.0, "close after")]  # fmt: skip
    page = Elements(chapter_timeline(MARKDOWN, duration=100.0, speech=said))
    marks = page.having("timeline-said")
    assert [m["href"] for m in marks] == ["#t=2", "#t=30"], "marks closer than 0.3% of the video are one"
    assert (
        "left: 2.00%; width: 2.50%" in marks[0]["style"]
        and "left: 30.00%; width: 15.00%" in marks[1]["style"]
    )
    assert marks[0]["aria-label"] == "Speech at 00:02: Hello <there>" and "and 1 more" in marks[1]["title"]
    assert page.link_texts[3:5] == ["00:02", "00:30"], "the seek script asks about the mark's time"
    # Without chapters: the note, and still the speech.
    html = chapter_timeline("No times here.", duration=100.0, speech=said)
    assert html.startswith(f'<p class="timeline-note">{NO_CHAPTERS_NOTE}</p>') and "timeline-said" in html
    assert "timeline-speech" not in chapter_timeline(MARKDOWN, duration=100.0)


def test_missing_thumbnails_are_read_like_reading_keeps_them(tmp_path):
    """A feature-cache hit decodes no frame: the cards' frames are read by seeking, the same frames a read
    would have kept (the first of each slot), and only those."""
    from qwen3vl_summarizer.timeline import frame_reader
    from tests.videos import read_index, write_video

    video = tmp_path / "ten.mp4"
    write_video(video, [i * 0.5 for i in range(20)], size=(128, 96))  # 10 s, frame i at i / 2 s
    asked = []
    reader = frame_reader(video, 1.0, (128, 96), start=2.0, end=8.0)

    def read(t):
        asked.append(t)
        return reader(t)

    markdown = "- [00:00] One\n- [00:03] Two\n- [00:06] Three\n"
    read_while_summarising = Thumbnails(interval_s=2.0)
    for t in (2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        read_while_summarising.add(t, picture(int(t)))
    expected = Elements(chapter_timeline(markdown, 10.0, read_while_summarising, end=8.0))
    thumbnails = Thumbnails(interval_s=2.0)
    page = Elements(chapter_timeline(markdown, 10.0, thumbnails, end=8.0, read_frame=read))
    times = [a["data-t"] for tag, a in page.tags if tag == "img"]
    assert times == [a["data-t"] for tag, a in expected.tags if tag == "img"] == ["2", "4", "6"]
    assert asked == [0.0, 4.0, 6.0, 8.0], "slot 0 gives the range's first frame; slot 1 is then held"
    assert thumbnails.times == [2.0, 4.0, 6.0]
    image = next(a for tag, a in page.tags if tag == "img")["src"].removeprefix("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(image))) as jpeg:
        assert read_index(np.asarray(jpeg.convert("RGB").resize((128, 96)))) == 4, "the frame at 2 s"
