"""What a person sees, in a real headless Chromium (Debian's) driving the app on the tiny random model.

The tiny model writes noise, never a timestamp, so the seek test clicks a link the app made from a time
the *person* typed: the question "What happens at 0:02?" is passed through the same ``link_timestamps``
as the model's answers, rendered by the chat, and clicked with the mouse. That exercises the real link
rendering and the page's seek JavaScript; it does not pretend the model wrote the time.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.videos import write_video

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
TIMEOUT_MS = 120_000  # the first summary loads the model (cold imports take ~15 s on 2 cores)


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_upload_summarize_chat_and_seek(page, served, tmp_path: Path, monkeypatch) -> None:
    url, state = served.url, served.state
    video = tmp_path / "walk.mp4"
    write_video(video, [i * 0.5 for i in range(8)])  # 3.5 s, frames every 0.5 s
    page.goto(url)
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_selector("#player video")
    page.wait_for_function("document.querySelector('#video-info').innerText.includes('Duration')")
    assert "128×96" in page.inner_text("#video-info")
    page.wait_for_function("document.querySelector('#plan').innerText.includes('4 frames at')")

    # The plan line follows the sliders.
    fps = page.locator("#fps input[type=number]")
    fps.fill("2")
    fps.press("Enter")
    page.wait_for_function("document.querySelector('#plan').innerText.includes('8 frames at')")

    # Summarize: record what the summary shows at each change, with the status beside it.
    page.evaluate(
        """() => {
        window.__seen = [];
        const summary = document.querySelector('#summary');
        const status = document.querySelector('#status');
        new MutationObserver(() => window.__seen.push([status.innerText, summary.innerText.trim()]))
            .observe(summary, {subtree: true, childList: true, characterData: true});
    }"""
    )
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
    final = page.inner_text("#summary").strip()
    partial = [text for status, text in page.evaluate("window.__seen") if "Writing" in status and text]
    assert final and partial, "text appeared while the summary was still being written"
    assert all(len(text) <= len(final) for text in partial) and len(partial[0]) < len(final)
    shot(page, "browser-summary.png")

    # A follow-up with a time in it: the time becomes a link; clicking it seeks the player.
    question = page.locator("#question textarea")
    question.fill("What happens at 0:02?")
    question.press("Enter")
    link = page.locator('#chat a[href="#t=2"]')
    link.wait_for()
    page.wait_for_function("document.querySelector('#question textarea').value === ''")
    page.wait_for_function("document.querySelector('#chat').innerText.split('What happens at').length > 1")
    assert page.evaluate("document.querySelector('#player video').currentTime") == 0
    page.evaluate(  # where the seek lands (the player then plays on from there)
        """() => { const v = document.querySelector('#player video');
        v.addEventListener('seeking', () => { window.__seekedTo = v.currentTime; }, {once: true}); }"""
    )
    link.click()
    page.wait_for_function("window.__seekedTo !== undefined")
    assert abs(page.evaluate("window.__seekedTo") - 2.0) < 0.25, "the player moved to 00:02"
    assert question.input_value() == "What is happening at 00:02?", "the chat box is pre-filled"
    page.evaluate("document.querySelector('#player video').pause()")
    shot(page, "browser-chat-seek.png")

    # Stop while the summary is being written: the status says so and the video stays loaded.
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Writing')")
    page.get_by_role("button", name="Stop").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Stopped')")
    shot(page, "browser-stopped.png")

    # Closing the tab frees this page's cached video.
    assert len(state.jobs) == 1
    dropped, drop = threading.Event(), state.jobs.drop
    monkeypatch.setattr(state.jobs, "drop", lambda key: (drop(key), dropped.set()))
    page.close()
    assert dropped.wait(60), "the page's unload handler ran"
    assert len(state.jobs) == 0, "the unload handler freed the session"


def test_broken_file_shows_an_error(page, served, tmp_path: Path) -> None:
    url = served.url
    broken = tmp_path / "holiday.mp4"
    broken.write_bytes(b"not a video at all " * 100)
    page.goto(url)
    page.locator("#player input[type=file]").set_input_files(str(broken))
    message = page.locator("#status").get_by_text("holiday.mp4 is not a video FFmpeg can read")
    message.wait_for()
    assert "/gradio/" not in message.inner_text()
    # A file the summary cannot read leaves the player (no "the summary still works" note under it, no
    # Gradio "Video not playable" toast): the status line alone says why.
    page.wait_for_function("!document.querySelector('#player video')")
    assert page.inner_text("#player-note-text") == ""
    toasts = page.get_by_test_id("toast-body").all_inner_texts()
    assert not any("not playable" in t for t in toasts), toasts
    shot(page, "browser-broken-file.png")
    # Summarize then asks for a video (a new toast, the status line), and the page keeps working.
    for close in page.locator("[data-testid=toast-close]").all():
        close.click()
    page.wait_for_function("!document.querySelector('[data-testid=toast-body]')")
    page.get_by_role("button", name="Summarize").click()
    page.get_by_test_id("toast-body").get_by_text("No video yet").wait_for()
    page.locator("#status").get_by_text("No video yet").wait_for()  # the toast comes before the status


def test_a_file_the_browser_cannot_play_gets_a_note(page, served, tmp_path: Path) -> None:
    url = served.url
    old = tmp_path / "old.avi"
    write_video(old, [i * 0.5 for i in range(8)], codec="mpeg4")  # MPEG-4 Part 2 in AVI: no browser plays it
    page.goto(url)
    page.locator("#player input[type=file]").set_input_files(str(old))
    page.wait_for_function("document.querySelector('#player-note-text').innerText.includes('cannot play')")
    page.wait_for_function("document.querySelector('#plan').innerText.includes('4 frames at')")  # still read
    assert no_toast_says(page, "not playable"), "Gradio's toast does not contradict the note"
    shot(page, "browser-cannot-play.png")

    page.locator("#player button[aria-label='Clear']").click()
    page.wait_for_function("document.querySelector('#player-note-text').innerText === ''")
    new = tmp_path / "new.mp4"
    write_video(new, [i * 0.5 for i in range(8)])
    page.locator("#player input[type=file]").set_input_files(str(new))
    page.wait_for_function("document.querySelector('#player video')?.readyState >= 1")
    assert page.inner_text("#player-note-text") == ""


def test_an_error_is_one_status_line_and_leaves_the_page_usable(page, served, tmp_path: Path) -> None:
    """No error badge over the other panels, the question box stays typable, and the message stays."""
    video = tmp_path / "clip.mp4"
    # Not the content of test_app's short.mp4, whose first summary must read the video (no cached features).
    write_video(video, [i * 0.5 for i in range(8)], size=(128, 80))
    page.goto(served.url)
    question = page.locator("#question textarea")
    # Asking before any summary: a lasting line in the status area, not a badge over the chat.
    question.fill("What is shown?")
    question.press("Enter")
    page.wait_for_function("document.querySelector('#status').innerText.includes('No video has been read')")
    shot(page, "browser-error-line.png")
    assert page.locator(".error").count() == 0, "no error badge is painted over any panel"
    question.fill("Typing still works")
    assert question.input_value() == "Typing still works"
    page.get_by_test_id("toast-body").first.wait_for(state="detached")  # the toast's life is over...
    assert "No video has been read" in page.inner_text("#status")  # ...and the status line is still there

    # A summary, then a new upload: the old summary, chat and status go with the old video.
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('4 frames at')")
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
    page.get_by_text("Last turn statistics").click()  # open the accordion: the stats say when a turn ends
    question.fill("And then?")
    question.press("Enter")
    page.wait_for_function("document.querySelector('#stats')?.innerText.includes('follow-up')")
    assert page.locator("#chat .message").count() >= 2
    other = tmp_path / "other.mp4"
    write_video(other, [i * 0.5 for i in range(6)], size=(160, 96))
    page.locator("#player button[aria-label='Clear']").click()
    page.locator("#player input[type=file]").set_input_files(str(other))
    page.wait_for_function("document.querySelector('#video-info').innerText.includes('160×96')")
    page.wait_for_function("!document.querySelector('#status').innerText.includes('Done')")
    assert page.locator("#chat .message").count() == 0, "the old chat is cleared"
    assert "The summary appears here" in page.inner_text("#summary")
    shot(page, "browser-new-upload-cleared.png")


# The README's picture: the tiny model writes noise, so the session answers with this Markdown (of the
# narration clip's subtitles); everything else on the page is the app's own.
README_SUMMARY = """## Overview
A 22-second test card (FFmpeg's *testsrc2*: colour bars, a moving gradient and a running clock) with three
spoken sentences, each also a subtitle.

## Chapters
### [00:00–00:09] The test card and a pangram
- [00:02] The speaker reads "The quick brown fox jumps over the lazy dog."

### [00:09–00:17] A reminder
- [00:09] "Please remember to water the garden."

### [00:17–00:22] Closing times
- [00:17] "The library closes early & late."

## Summary
A synthetic clip for testing: the picture never changes its layout, only the clock and the gradient move,
and the three sentences are unrelated to each other and to the picture.
"""


def test_the_transcript_panel_lists_what_is_said_and_seeks(page, served, tmp_path_factory, scripted) -> None:
    """Subtitles inside the upload (mov_text) become the transcript panel: each time a link that seeks the
    player, and a filter box that keeps the lines with a word; they are marked on the timeline too. Also
    takes the README's screenshot (docs/screenshot.png is a copy of artifacts/readme-screenshot.png)."""
    from tests import narration

    if (missing := narration.missing_tools()) is not None:
        pytest.skip(missing)
    media = narration.build_media(tmp_path_factory.mktemp("browser-speech"))
    scripted.enqueue(README_SUMMARY)
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(served.url)
    page.locator("#player input[type=file]").set_input_files(str(media.mp4_mov_text))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('frames at')")
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
    page.get_by_text("Transcript: what is said").click()
    page.wait_for_function("document.querySelectorAll('#transcript li').length === 3")
    lines = page.locator("#transcript li").all_inner_texts()
    assert [line.split(" ", 1)[1] for line in lines] == [c[2] for c in narration.CUES]
    assert "subtitles in the video" in page.inner_text("#transcript")
    # Where speech is, under the chapters: one mark per line, at its time.
    marks = page.locator("#timeline a.timeline-said")
    assert [marks.nth(i).get_attribute("href") for i in range(marks.count())] == ["#t=2", "#t=9.25", "#t=17"]
    transcript_links = page.locator("#transcript").get_by_role("link", name="Play from 00:09", exact=True)
    assert transcript_links.count() == 1, "the transcript's link is named for what it does"
    page.evaluate("window.scrollTo(0, document.querySelector('#player').getBoundingClientRect().top"
                  " + window.scrollY - 12)")  # fmt: skip
    page.wait_for_function("document.querySelector('#player video').readyState >= 2")  # a picture shows
    page.evaluate("() => new Promise((drawn) => requestAnimationFrame(() => requestAnimationFrame(drawn)))")
    page.screenshot(path=str(ARTIFACTS / "readme-screenshot.png"))

    seeked = """() => { const v = document.querySelector('#player video'); window.__seekedTo = undefined;
        v.addEventListener('seeking', () => { window.__seekedTo = v.currentTime; }, {once: true}); }"""
    page.evaluate(seeked)
    page.locator('#transcript a[href^="#t=9"]').click()
    page.wait_for_function("window.__seekedTo !== undefined")
    assert abs(page.evaluate("window.__seekedTo") - 9.0) < 0.3, "the player moved to the line's time"
    page.evaluate("document.querySelector('#player video').pause()")
    page.evaluate(seeked)
    marks.nth(2).click()
    page.wait_for_function("window.__seekedTo !== undefined")
    assert abs(page.evaluate("window.__seekedTo") - 17.0) < 0.3, "the mark moved the player to 00:17"
    page.evaluate("document.querySelector('#player video').pause()")

    page.locator("#transcript-filter textarea, #transcript-filter input").first.fill("garden")
    page.wait_for_function(
        "[...document.querySelectorAll('#transcript li')].filter(li => li.style.display !== 'none').length === 1"
    )
    shot(page, "browser-transcript.png")


# The tiny model writes noise, never chapters: the timeline test gives the summary it is drawn from.
CHAPTERS = """### [00:00–00:03] Arrival at the <b>park</b>
- people arrive

### [00:03–00:06] A walk & a talk

### [00:06] Goodbye
"""


def test_a_time_range_and_the_chapter_timeline_that_seeks(page, served, tmp_path: Path, monkeypatch) -> None:
    """From/To read only that range (the plan line follows them); the finished summary's chapters become a
    bar of spans over the whole video and cards with the thumbnail read nearest each start; clicking a span
    or a card seeks the player."""
    from qwen3vl_summarizer.summarize import VideoJob
    from qwen3vl_summarizer.video import probe

    video = tmp_path / "walk.mp4"
    write_video(video, [i * 0.5 for i in range(20)], size=(320, 180))  # 10 s
    page.goto(served.url)
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('10 frames at')")
    assert "Chapters appear here once the video is summarised" in page.inner_text("#timeline")

    page.locator("#range-from input, #range-from textarea").first.fill("0:02")
    page.locator("#range-to input, #range-to textarea").first.fill("8")
    page.wait_for_function("document.querySelector('#plan').innerText.includes('00:02–00:08: 6 frames at')")
    monkeypatch.setattr(VideoJob, "summary_text", property(lambda self: CHAPTERS))
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")

    spans = page.locator("#timeline a.timeline-span")
    assert spans.count() == 3
    styles = [spans.nth(i).get_attribute("style") for i in range(3)]
    # Placed on the whole video (~9.5 s); the last chapter ends where the range does (8 s).
    duration = probe(video).duration
    for style, (start, end) in zip(styles, [(0, 3), (3, 6), (6, 8)], strict=True):
        assert f"left: {start / duration:.2%}; width: {(end - start) / duration:.2%}" in style
    assert spans.nth(0).get_attribute("data-title") == "Arrival at the <b>park</b>", "a title is text"
    cards = page.locator("#timeline .timeline-card")
    assert cards.count() == 3 and page.locator("#timeline .timeline-card img").count() == 3
    times = [
        float(page.locator("#timeline .timeline-card img").nth(i).get_attribute("data-t")) for i in range(3)
    ]
    assert times == [2.0, 4.0, 6.0], "the frame read nearest each start (none before 2 s was read)"
    assert "00:06–00:08" in cards.nth(2).inner_text()
    box = page.locator("#timeline .timeline-bar").bounding_box()
    assert box["width"] > 300 and box["height"] >= 16, "the bar is visible under the player"
    page.locator("#timeline").screenshot(path=str(ARTIFACTS / "browser-timeline-only.png"))
    shot(page, "browser-timeline.png")

    seeked = """() => { const v = document.querySelector('#player video'); window.__seekedTo = undefined;
        v.addEventListener('seeking', () => { window.__seekedTo = v.currentTime; }, {once: true}); }"""
    page.evaluate(seeked)
    spans.nth(1).click()
    page.wait_for_function("window.__seekedTo !== undefined")
    assert abs(page.evaluate("window.__seekedTo") - 3.0) < 0.25, "the span moved the player to 00:03"
    assert page.locator("#question textarea").input_value() == "What is happening at 00:03?"
    page.evaluate("document.querySelector('#player video').pause()")
    page.evaluate(seeked)
    image = cards.nth(2).locator("img").bounding_box()
    page.mouse.click(image["x"] + image["width"] / 2, image["y"] + image["height"] / 2)  # on the thumbnail
    page.wait_for_function("window.__seekedTo !== undefined")
    assert abs(page.evaluate("window.__seekedTo") - 6.0) < 0.25, "the card moved the player to 00:06"
    page.evaluate("document.querySelector('#player video').pause()")

    # Another page reads the same range from the feature cache (no frame decoded while summarising): the
    # cards still get their thumbnails, decoded by seeking to those frames alone.
    page.reload()
    page.locator("#status").get_by_text("from the library").wait_for()  # the reload brings the summary back
    page.locator("#player button[aria-label='Clear']").click()
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('10 frames at')")
    page.locator("#range-from input, #range-from textarea").first.fill("0:02")
    page.locator("#range-to input, #range-to textarea").first.fill("8")
    page.wait_for_function("document.querySelector('#plan').innerText.includes('00:02–00:08: 6 frames at')")
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
    page.get_by_text("Last turn statistics").click()
    page.wait_for_function("document.querySelector('#stats')?.innerText.includes('read_video')")
    assert '"read_video":false' in "".join(page.inner_text("#stats").split()), "the features were cached"
    images = page.locator("#timeline .timeline-card img")
    assert [float(images.nth(i).get_attribute("data-t")) for i in range(images.count())] == [2.0, 4.0, 6.0]


# The seed article's own example answer to "按时间顺序划分章节，并标注起止时间": chapters titled first, their
# ranges after them in round brackets, Chinese chapter markers in 【】, key points under each.
SEED_ANSWER_ZH = """【章节一：AI发展现状】(00:00 - 12:30)
- 核心观点：当前AI进入"应用爆发期"，但基础理论进展缓慢
【章节二：多模态挑战】(12:31 - 28:45)
- 核心观点：跨模态对齐仍是瓶颈
"""


def test_the_seeds_chinese_chapters_make_a_timeline(page, served, tmp_path: Path, scripted) -> None:
    """The seed's example answer, shown as the summary of a 30-minute video, gives a timeline of its two
    chapters (spans placed at their ranges, cards with their Chinese titles), the chapter downloads, and
    seek links for its times and for the 第25分钟 of the seed's follow-up question."""
    from qwen3vl_summarizer.video import probe

    video = tmp_path / "talk.mp4"
    write_video(video, [i * 60.0 for i in range(31)], size=(320, 180))  # one frame a minute, 30 minutes
    duration = probe(video).duration
    asked = "请详细说明第25分钟提到的'具身AI'概念"  # the seed's own follow-up question
    # The summary is the seed's answer; the follow-up's answer has no time, so the link is the question's.
    scripted.enqueue(SEED_ANSWER_ZH, "具身AI指能在物理世界中感知和行动的智能体。")
    page.goto(served.url)
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('frames at')")
    page.locator("#fps input[type=number]").fill("0.1")  # 180 frames: the tiny model reads them in seconds
    page.locator("#fps input[type=number]").press("Enter")
    page.wait_for_function(
        "(m => m && parseInt(m[1].replace(',', '')) < 200)"
        "(document.querySelector('#plan').innerText.match(/([\\d,]+) frames at/))"
    )
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")

    spans = page.locator("#timeline a.timeline-span")
    assert spans.count() == 2
    assert [spans.nth(i).get_attribute("data-title") for i in range(2)] == ["AI发展现状", "多模态挑战"]
    for i, (start, end) in enumerate([(0, 750), (751, 1725)]):
        left, width = start / duration, (end - start) / duration
        assert f"left: {left:.2%}; width: {width:.2%}" in spans.nth(i).get_attribute("style")
    cards = page.locator("#timeline .timeline-card").all_inner_texts()
    assert "AI发展现状" in cards[0] and "00:00–12:30" in cards[0]
    assert "多模态挑战" in cards[1] and "12:31–28:45" in cards[1]
    assert page.locator('#summary a[href="#t=751"]').count() == 1, "the answer's times are seek links"
    assert "no chapter times" not in page.inner_text("#status")
    downloads = "".join(page.inner_text("#downloads").split())
    assert all(f"talk.summary.{ext}" in downloads for ext in ("srt", "vtt", "txt")), "the chapter files"
    # The seed's follow-up questions: their Chinese times are seek links too.
    question = page.locator("#question textarea")
    question.fill(asked)
    question.press("Enter")
    page.locator('#chat a[href="#t=1500"]').wait_for()
    page.wait_for_function("document.querySelector('#question textarea').value === ''")
    page.locator("#timeline").screenshot(path=str(ARTIFACTS / "browser-timeline-seed-zh-only.png"))
    shot(page, "browser-timeline-seed-zh.png")


def no_toast_says(page, words: str) -> bool:
    return not any(words in text for text in page.get_by_test_id("toast-body").all_inner_texts())


def test_an_mpeg_ts_upload_is_read_and_summarised(page, served, tmp_path: Path) -> None:
    """Gradio's video field takes only what Chromium types video/*, and it types .ts as a Qt translation:
    the page retypes the extensions of the containers PyAV reads, and lists them in the file picker."""
    video = tmp_path / "offset_start.ts"
    write_video(video, [5.0 + i * 0.5 for i in range(8)])  # MPEG-TS whose first picture is at 5 s
    page.goto(served.url)
    page.wait_for_function("document.querySelector('#player input[type=file]')?.accept.includes('.ts')")
    accept = page.locator("#player input[type=file]").get_attribute("accept")
    assert all(ext in accept.split(", ") for ext in (".ts", ".m2ts", ".mts", ".mkv", ".avi"))
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('4 frames at')")
    assert no_toast_says(page, "Invalid file type")
    assert "00:04" in page.inner_text("#video-info")  # 3.5 s read, on the video's own clock
    # Chromium plays no MPEG-TS: the page's note says so once, and Gradio's toast does not contradict it.
    page.wait_for_function("document.querySelector('#player-note-text').innerText.includes('cannot play')")
    assert "The summary and the questions still work" in page.inner_text("#player-note-text")
    page.keyboard.press("Control+Enter")  # the keyboard shortcut for Summarize
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
    assert page.inner_text("#summary").strip()
    assert no_toast_says(page, "not playable")


def test_the_plan_line_and_the_context_field(page, served, tmp_path: Path) -> None:
    """A typed context length is taken (snapped into range on leaving the field) and the plan follows;
    a split plan tells the total from one part; Auto shows the length it picks."""
    video = tmp_path / "thirty.mp4"
    write_video(video, [i * 0.5 for i in range(60)])  # 30 s
    page.goto(served.url)
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('30 frames at')")
    page.get_by_label("Auto context (what fits the device)").uncheck()
    field = page.get_by_label("number input for Context length (tokens)")
    page.wait_for_function("!document.querySelector('[aria-label^=\"number input for Context\"]').disabled")
    field.fill("5000")
    page.wait_for_function("document.querySelector('#plan').innerText.includes('of 5,000)')")
    field.fill("2500")
    page.wait_for_function("document.querySelector('#plan').innerText.includes('split into')")
    plan = page.inner_text("#plan")
    # The whole's tokens, then one part's (its share of the context) and one part's KV cache.
    assert re.search(r" [\d,]+ tokens in all; split into 2 segments of up to [\d,]+ tokens each "
                     r"\(\d+% of 2,500\), KV cache [\d.]+ GiB per segment in ", plan), plan  # fmt: skip
    field.fill("500")
    field.press("Tab")  # leaving the field: the smallest context a run may use
    page.wait_for_function(
        "document.querySelector('[aria-label^=\"number input for Context\"]').value === '1024'"
    )
    page.wait_for_function("document.querySelector('#plan').innerText.includes('1,024 tokens cannot hold')")
    assert no_toast_says(page, "less than"), "no Gradio range error"
    page.get_by_label("Auto context (what fits the device)").check()
    engine = served.state.engines.engine
    opts = served.options.context
    auto = engine.context_length(replace(opts, max_context="auto")) if engine else opts.max_context_cap
    page.wait_for_function(
        f"document.querySelector('[aria-label^=\"number input for Context\"]').value === '{auto}'"
    )
    assert field.is_disabled()
    shot(page, "browser-plan-context.png")


def test_the_phone_layout(browser, served, tmp_path: Path) -> None:
    """At 420 px the model row stays one line, and a time link far below the player brings it into view."""
    page = browser.new_page(viewport={"width": 420, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(served.url)
        # Gradio adds page.css after the first paint: measure once its rule for the row applies.
        page.wait_for_function(
            "(row => row && getComputedStyle(row).flexWrap === 'nowrap')(document.querySelector('#model-row'))"
        )
        menu = page.locator("#model-row .block").first.bounding_box()
        button = page.locator("#load-model").bounding_box()
        assert button["height"] < 80 and button["x"] > menu["x"] + menu["width"] - 1, (menu, button)
        assert menu["y"] <= button["y"] and button["y"] + button["height"] <= menu["y"] + menu["height"] + 1
        assert page.locator("#model-status").bounding_box()["height"] < 100
        video = tmp_path / "walk.mp4"
        write_video(video, [i * 0.5 for i in range(8)], size=(128, 80))
        page.locator("#player input[type=file]").set_input_files(str(video))
        page.wait_for_function("document.querySelector('#plan').innerText.includes('4 frames at')")
        page.get_by_role("button", name="Summarize").click()
        page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
        question = page.get_by_role("textbox", name="Question about the video")
        question.fill("What happens at 0:02?")
        question.press("Enter")
        link = page.get_by_role("link", name="Play from 00:02").first
        link.wait_for()
        page.wait_for_function(
            "document.querySelector('#chat').innerText.split('What happens at').length > 1"
        )
        # The answer is complete: the chat's links are no longer re-rendered under the click.
        assert served.state.cancels.wait_all(timeout=TIMEOUT_MS / 1000)
        link.scroll_into_view_if_needed()
        assert page.locator("#player video").bounding_box()["y"] < -300, "the player is far above"
        link.click()
        page.wait_for_function(
            "(() => { const r = document.querySelector('#player video').getBoundingClientRect();"
            " return r.top >= -1 && r.bottom <= window.innerHeight + 1; })()"
        )
        page.evaluate("document.querySelector('#player video').pause()")
        page.screenshot(path=str(ARTIFACTS / "browser-phone-seek.png"))
    finally:
        page.close()


LONG_SUMMARY = "\n\n".join(f"### [00:0{i % 4}] Part {i}\n- line {i}" for i in range(60))


def test_summary_box_keys_and_screen_readers(page, served, tmp_path: Path, scripted) -> None:
    """A long summary scrolls inside its box (the chat stays near) and copies with one button; the status
    and the summary are live regions; the question box has a name; Ctrl+Enter summarizes and asks."""
    from web import page as layout

    scripted.enqueue(LONG_SUMMARY, "Part 59 is the last one.")  # the summary, then the answer in the chat
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    video = tmp_path / "walk.mp4"
    write_video(video, [i * 0.5 for i in range(8)], size=(128, 80))
    page.goto(served.url)
    assert "Ctrl" in page.inner_text("#keys-hint") and "Enter" in page.inner_text("#keys-hint")
    for selector in ("#status", "#summary"):
        page.wait_for_function(f"document.querySelector('{selector}').getAttribute('aria-live') === 'polite'")
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('4 frames at')")
    page.get_by_label("Prompt", exact=True).focus()
    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
    assert page.locator("#summary").bounding_box()["height"] <= layout.SUMMARY_MAX_HEIGHT + 60
    assert page.get_by_role("link", name="Play from 00:03").count() >= 1
    page.locator("#summary button[aria-label*='opy']").first.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "Part 59" in copied
    shot(page, "browser-long-summary.png")

    question = page.get_by_role("textbox", name="Question about the video")
    question.fill("What is shown?")
    question.press("Control+Enter")
    page.wait_for_function("document.querySelector('#chat').innerText.includes('Part 59')")
    assert page.locator("#chat .message").count() >= 1


def test_the_page_speaks_the_browsers_language(browser, served, tmp_path: Path) -> None:
    """A browser that asks for Chinese gets the page in Chinese: its fixed texts (Gradio's I18n, from
    navigator.language), what the handlers write (from Accept-Language), the page script's texts, and a
    Chinese prompt to start from; an English one gets it in English."""
    from web.handlers import prompt_text
    from web.i18n import TEXTS

    video = tmp_path / "walk.mp4"
    write_video(video, [i * 0.5 for i in range(8)])
    for locale, lang in (("zh-CN", "zh"), ("en-US", "en")):
        texts = TEXTS[lang]
        context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(served.url)
            page.get_by_role("button", name=texts["summarize"], exact=True).wait_for()
            assert page.get_by_role("button", name=texts["load_model"]).count() == 1
            assert texts["no_summary_note"] in page.inner_text("#timeline")
            starting_prompt = "general.zh" if lang == "zh" else "general"
            prompt = page.get_by_label(texts["prompt"], exact=True).first
            page.wait_for_function(
                "([box, text]) => box.value === text",
                arg=[prompt.element_handle(), prompt_text(starting_prompt)],
            )
            page.get_by_role("button", name=texts["stop"], exact=True).click()  # a handler's own words
            page.locator("#status").get_by_text(texts["nothing_to_stop"]).wait_for()
            page.locator("#player input[type=file]").set_input_files(str(video))
            page.wait_for_function("document.querySelector('#plan').innerText.includes('4 frames at')")
            assert texts["duration"] in page.inner_text("#video-info")
            page.get_by_role("button", name=texts["summarize"], exact=True).click()
            page.locator("#status").get_by_text(texts["done"].split("{")[0]).wait_for()  # "Done: read 55..."
            page.evaluate("document.querySelector('#question textarea').value = ''")
            page.evaluate("""() => { const a = document.createElement('a'); a.href = '#t=2'; a.textContent = '00:02';
                document.querySelector('#status').appendChild(a); a.click(); }""")  # a seek link, as a summary's
            asked = texts["ask_about_time"].format(time="00:02")
            page.wait_for_function("(text) => document.querySelector('#question textarea').value === text",
                                   arg=asked)  # fmt: skip
            page.wait_for_function(
                "(name) => document.querySelector('#summary').getAttribute('aria-label') === name",
                arg=texts["summary"],
            )
            page.screenshot(path=str(ARTIFACTS / f"browser-language-{lang}.png"), full_page=True)
        finally:
            context.close()
