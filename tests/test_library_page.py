"""The library on the page (issue 20): a reload brings the page back, the Library tab lists, searches,
opens and deletes, the library answers questions with citations that open the video, each login has its
own library (page and API), and a server killed during a summary keeps what it had shown.

Headless Chromium (Debian's) on the tiny random model, its answers scripted where a test needs a shape
(chapters, a Chinese word, a citation): what is tested is the page's mechanics, never the model's wording.
Every wait is on an element, a text, a row or a log line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.apps import serve
from tests.test_browser import ARTIFACTS, TIMEOUT_MS, shot
from tests.videos import write_video

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent

# The summary (scripted): chapters for the timeline, a Chinese two-character word for the search.
SUMMARY = """## Chapters
### [00:00–00:09] The test card and a pangram
- [00:02] The speaker reads a pangram about a fox.

### [00:09–00:17] 注意力机制 and a reminder
- [00:09] A reminder to water the garden.

### [00:17–00:22] Closing times
"""
ANSWER = "At [00:09] the speaker asks to water the plants."


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory):
    yield from serve(tiny_model_dir, tmp_path_factory.mktemp("library-page") / "library.db")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 22-second narrated test card with its three sentences as a subtitle track (tests/narration.py)."""
    from tests import narration

    if (missing := narration.missing_tools()) is not None:
        pytest.skip(missing)
    return narration.build_media(tmp_path_factory.mktemp("library-media"))


SAVED = "localStorage.getItem('qwen3vl-library-video')"  # what the browser keeps (web/page.py SAVED_KEY)


def summarize_on_page(page, url: str, video: Path) -> None:
    """Upload and summarize ``video``; returns once the browser has saved it for a reload."""
    page.goto(url)
    page.locator("#player input[type=file]").set_input_files(str(video))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('frames at')")
    saved = page.evaluate(SAVED)
    page.get_by_role("button", name="Summarize").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')")
    page.wait_for_function(f"{SAVED} !== {json.dumps(saved)}")


def ask_on_page(page, question: str, answer_words: str) -> None:
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    page.locator("#chat").get_by_text(answer_words).wait_for()
    page.wait_for_function("document.querySelector('#question textarea').value === ''")


def open_library_tab(page) -> None:
    page.get_by_role("tab", name="Library").click()
    page.wait_for_function("document.querySelector('#library-paging')?.innerText.includes('Page')")


def player_at(page, seconds: float) -> None:
    """Wait until the player holds a video positioned at ``seconds`` (±0.3)."""
    page.wait_for_function(
        f"(v => v && v.readyState >= 1 && Math.abs(v.currentTime - {seconds}) < 0.3)"
        "(document.querySelector('#player video'))"
    )
    page.evaluate("document.querySelector('#player video').pause()")


def view(page) -> dict:
    """What the Video tab shows, to compare before and after a reload."""
    return {
        "summary": page.inner_text("#summary").strip(),
        "chat": page.inner_text("#chat").strip(),
        "transcript": page.locator("#transcript li").all_inner_texts(),
        "spans": page.locator("#timeline a.timeline-span").count(),
        "cards": page.locator("#timeline .timeline-card img").count(),
        # the file names (a restored Markdown file also holds the follow-ups: its size differs)
        "downloads": [w for w in page.inner_text("#downloads").split() if w.startswith((".", "mov_text"))],
    }


def test_a_reload_brings_everything_back_and_the_library_finds_it(page, served, media, scripted) -> None:
    scripted.enqueue(SUMMARY, ANSWER)
    summarize_on_page(page, served.url, media.mp4_mov_text)
    ask_on_page(page, "What happens at 0:09?", "water the plants")
    page.get_by_text("Transcript: what is said").click()
    page.wait_for_function("document.querySelectorAll('#transcript li').length === 3")
    before = view(page)
    assert before["spans"] == 3 and before["cards"] == 3 and before["downloads"]
    shot(page, "library-before-reload.png")

    page.reload()
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('Closing times')")
    page.get_by_text("Transcript: what is said").click()
    page.wait_for_function("document.querySelectorAll('#transcript li').length === 3")
    page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('on cpu')")
    after = view(page)
    assert after == before, "summary, chat, transcript, timeline and downloads are back"
    assert "frames at" in page.inner_text("#plan"), "the plan line of the run"
    assert "not loaded" not in page.inner_text("#model-status"), "the model line says what the server holds"
    assert "Opened mov_text.mp4 from the library" in page.inner_text("#status")
    page.wait_for_function("document.querySelector('#player video')?.readyState >= 1")  # the file is there
    assert page.inner_text("#library-note") == ""
    shot(page, "library-after-reload.png")

    # The Library tab lists it: poster, name, duration, date, questions.
    open_library_tab(page)
    row = page.locator(".library-video").filter(has_text="mov_text.mp4")
    row.wait_for()
    assert "questions: 1" in row.inner_text() and "00:22" in row.inner_text()
    assert row.locator("img.library-poster").count() == 1
    shot(page, "library-tab.png")

    # Search: a word said (transcript), a Chinese two-character word (summary); a hit opens the video there.
    search = page.locator("#library-search textarea, #library-search input").first
    search.fill("机制")
    search.press("Enter")
    hit = page.locator(".library-hit").filter(has_text="注意力")
    hit.wait_for()
    assert "summary" in hit.inner_text() and hit.locator("mark").inner_text() == "机制"
    search.fill("garden")
    search.press("Enter")
    said = page.locator(".library-hit").filter(has_text="said")
    said.first.wait_for()
    assert said.first.locator("mark").inner_text().lower() == "garden"
    assert said.first.locator("a").get_attribute("href").endswith("&t=9.25")
    shot(page, "library-search.png")
    # The README's screenshot (docs/library.png is a copy of artifacts/readme-library.png): a search with
    # its hits over the list of videos, at the size of the README's other screenshot.
    page.set_viewport_size({"width": 1400, "height": 900})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "readme-library.png"))
    said.first.locator("a").click()
    page.get_by_role("tab", name="Video", selected=True).wait_for()
    player_at(page, 9.25)


def test_ask_the_library_cites_with_links_that_open_the_video(page, served, media, scripted) -> None:
    from qwen3vl_summarizer.library import NOTHING_FOUND

    scripted.enqueue(SUMMARY)
    summarize_on_page(page, served.url, media.mp4_mov_text)
    open_library_tab(page)
    question = page.locator("#library-question textarea")
    question.fill("When does the library close?")
    scripted.enqueue("It closes early and late [mov_text.mp4 @ 00:17].")
    question.press("Enter")
    link = page.locator('#library-answer a[href^="#open="]')
    link.wait_for()
    assert link.inner_text() == "mov_text.mp4 @ 00:17"
    page.wait_for_function("document.querySelector('#library-status').innerText.includes('Answered from')")
    assert scripted.asked[-1].question.count("[mov_text.mp4 @ 00:17]") >= 1, "the passage was given to cite"
    shot(page, "library-ask.png")
    link.click()
    page.get_by_role("tab", name="Video", selected=True).wait_for()
    player_at(page, 17)

    # Nothing relevant: said plainly, the model is not asked.
    asked = len(scripted.asked)
    page.get_by_role("tab", name="Library").click()
    question.fill("xylophone zeppelin")
    question.press("Enter")
    page.locator("#library-answer").get_by_text(NOTHING_FOUND).wait_for()
    assert len(scripted.asked) == asked


def upload_copy(media, tmp_path: Path, name: str) -> Path:
    """A copy of the narrated clip with its own content (fingerprint), so that its library video is new."""
    import shutil

    video = tmp_path / name
    shutil.copy(media.mp4_mov_text, video)
    with open(video, "ab") as f:
        f.write(name.encode())
    return video


def delete_upload(served, name: str) -> int:
    """Delete the server's copy of the upload ``name``; its library id."""
    library = served.state.library_for(None)
    video_id = next(v["id"] for v in library.list_videos() if v["name"] == name)
    Path(library.video(video_id)["path"]).unlink()
    return video_id


def test_a_follow_up_after_a_reload_when_the_file_is_gone(page, served, media, tmp_path) -> None:
    """The uploaded file deleted: the reload shows the poster and says so; a question is answered by the
    model from the cached features (the video reopened, not read) and recorded into the same run."""
    summarize_on_page(page, served.url, upload_copy(media, tmp_path, "gone.mp4"))
    video_id = delete_upload(served, "gone.mp4")

    page.reload()
    page.locator("#library-gone-text").get_by_text("is gone").wait_for()
    assert page.locator("#library-note img").count() == 1, "the poster stands in for the player"
    assert page.locator("#player video").count() == 0
    shot(page, "library-file-gone.png")
    page.get_by_text("Last turn statistics").click()
    box = page.locator("#question textarea")
    box.fill("And then?")
    box.press("Enter")
    page.wait_for_function("document.querySelector('#stats')?.innerText.includes('follow-up')")
    stats = "".join(page.inner_text("#stats").split())
    assert '"read_video":false' in stats, "answered from the cached features"
    assert page.inner_text("#chat").strip().startswith("And then?")
    library = served.state.library_for(None)
    runs = library.video(video_id)["runs"]
    assert len(runs) == 1 and [t["question"] for t in runs[0]["turns"]] == ["And then?"], "the same run"
    assert runs[0]["turns"][0]["finished"]

    # A new upload replaces the library video: a question now waits for its summary.
    other = tmp_path / "other.mp4"
    write_video(other, [i * 0.5 for i in range(5)], size=(96, 64))
    page.locator("#player input[type=file]").set_input_files(str(other))
    page.wait_for_function("document.querySelector('#plan').innerText.includes('frames at')")
    page.wait_for_function("document.querySelector('#library-note').innerText === ''")  # the poster went
    box.fill("Is this the old one?")
    box.press("Enter")
    page.locator("#status").get_by_text("No video has been read").wait_for()
    assert len(library.video(video_id)["runs"][0]["turns"]) == 1, "nothing asked of the library video"


def test_a_video_whose_features_are_gone_too_asks_for_the_file(page, served, media, scripted, tmp_path):
    """A scripted summary caches no vision features: with its file deleted, a question says to upload it
    again, in the status line."""
    scripted.enqueue(SUMMARY)
    summarize_on_page(page, served.url, upload_copy(media, tmp_path, "lost.mp4"))
    delete_upload(served, "lost.mp4")
    page.reload()
    page.locator("#library-gone-text").get_by_text("is gone").wait_for()
    box = page.locator("#question textarea")
    box.fill("And then?")
    box.press("Enter")
    page.locator("#status").get_by_text("upload the video again").wait_for()
    assert page.locator(".error").count() == 0, "one status line, no error badge"


def test_delete_one_and_delete_everything(page, served, tmp_path) -> None:
    client = served.client()
    for i in range(2):
        video = tmp_path / f"clip{i}.mp4"
        write_video(video, [j * 0.5 for j in range(5)], size=(144, 80 + 16 * i))  # no other test's content
        served.summarize(client, video).result()
    page.goto(served.url)
    open_library_tab(page)
    rows = page.locator(".library-video")
    page.locator(".library-video").filter(has_text="clip1.mp4").wait_for()
    count = rows.count()
    assert count >= 2
    library = served.state.library_for(None)
    uploads = {v["name"]: Path(library.video(v["id"])["path"]) for v in library.list_videos()}
    assert uploads["clip1.mp4"].exists()
    page.once("dialog", lambda dialog: dialog.accept())
    rows.filter(has_text="clip1.mp4").get_by_role("button", name="Delete clip1.mp4").click()
    page.wait_for_function(f"document.querySelectorAll('.library-video').length === {count - 1}")
    assert "clip1.mp4" not in page.inner_text("#library-videos")
    assert "Videos deleted from the library: 1." in page.inner_text("#library-status")
    assert not uploads["clip1.mp4"].exists() and uploads["clip0.mp4"].exists(), "the uploaded copy went too"
    assert [v["name"] for v in client.predict(api_name="/library_videos")].count("clip1.mp4") == 0
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#library-delete-all").click()
    page.locator("#library-videos").get_by_text("The library is empty").wait_for()
    assert client.predict(api_name="/library_videos") == []
    shot(page, "library-empty.png")


@pytest.fixture(scope="module")
def served_with_logins(tiny_model_dir: Path, tmp_path_factory):
    yield from serve(
        tiny_model_dir,
        tmp_path_factory.mktemp("library-logins") / "library.db",
        auth="alice:a-pass,bob:b-pass",
    )


def test_two_logins_see_their_own_libraries(browser, served_with_logins, tmp_path) -> None:
    from gradio_client import Client

    served = served_with_logins
    alice = Client(served.url, auth=("alice", "a-pass"), verbose=False)
    bob = Client(served.url, auth=("bob", "b-pass"), verbose=False)
    video = tmp_path / "alices.mp4"
    write_video(video, [i * 0.5 for i in range(5)], size=(112, 64))
    served.summarize(alice, video).result()
    mine = alice.predict(api_name="/library_videos")
    assert [v["name"] for v in mine] == ["alices.mp4"]
    assert bob.predict(api_name="/library_videos") == []
    word = served.state.library_for("alice").video(mine[0]["id"])["runs"][0]["summary"].split()[0]
    assert alice.predict(word, api_name="/library_search"), "alice finds her words"
    assert bob.predict(word, api_name="/library_search") == [], "bob does not"
    with pytest.raises(Exception, match="no video"):
        bob.predict(mine[0]["id"], api_name="/library_video")
    with pytest.raises(Exception, match="no video"):
        bob.predict(mine[0]["id"], api_name="/library_open")
    from qwen3vl_summarizer.library import NOTHING_FOUND

    assert bob.predict(word, [], api_name="/library_ask") == {"answer": NOTHING_FOUND, "passages": []}
    answer = alice.predict(word, [], api_name="/library_ask")
    assert {p["video"]["name"] for p in answer["passages"]} == {"alices.mp4"} and answer["answer"]

    # On the page: bob logs in and his Library tab is empty; alice sees her video.
    for user, password, expected in (
        ("bob", "b-pass", "The library is empty"),
        ("alice", "a-pass", "alices.mp4"),
    ):
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served.url)
        page.get_by_label("username").fill(user)
        page.get_by_label("password").fill(password)
        page.get_by_role("button", name="Login").click()
        open_library_tab(page)
        page.locator("#library-videos").get_by_text(expected).wait_for()
        shot(page, f"library-login-{user}.png")
        page.close()


def wait_for(condition, timeout: float = 120.0, what: str = "") -> None:
    """Wait until ``condition()`` holds (a row in the database, a process gone), checking every 50 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_app(model_dir: Path, library: Path, port: int, log: Path) -> subprocess.Popen:
    """``python app.py`` on the tiny model, writing long answers; returns once it serves."""
    env = {**os.environ, "QWEN3VL_LIBRARY__PATH": str(library), "QWEN3VL_GENERATION__MAX_NEW_TOKENS": "4000",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    out = open(log, "w")  # noqa: SIM115 (the process writes it)
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", str(model_dir), "--port",
                                str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    wait_for(lambda: "Running on local URL" in log.read_text() or process.poll() is not None, what="the app")
    assert process.poll() is None, log.read_text()
    return process


def test_a_server_killed_during_a_summary_keeps_what_it_showed(browser, tiny_model_dir, tmp_path) -> None:
    from gradio_client import Client, handle_file

    from qwen3vl_summarizer.library import Library
    from tests.apps import free_port

    library_path = tmp_path / "library.db"
    port = free_port()
    video = tmp_path / "killed.mp4"
    write_video(video, [i * 0.5 for i in range(7)], size=(112, 80))
    process = start_app(tiny_model_dir, library_path, port, tmp_path / "first.log")
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.submit(handle_file(str(video)), "Summarize.", 1.0, True, 8192, str(tiny_model_dir), "off", "",
                      "", "", api_name="/summarize")  # fmt: skip
        library = Library(library_path)

        def written() -> bool:
            videos = library.list_videos()
            return bool(videos) and bool(library.video(videos[0]["id"])["runs"][0]["summary"].strip())

        wait_for(written, what="the summary's first text in the library")
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    run = library.video(library.list_videos()[0]["id"])["runs"][0]
    shown_so_far = run["summary"]
    assert shown_so_far.strip() and not run["finished"], "the text so far, marked unfinished"
    library.close()

    process = start_app(tiny_model_dir, library_path, port, tmp_path / "second.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"http://127.0.0.1:{port}/")
        open_library_tab(page)
        row = page.locator(".library-video").filter(has_text="killed.mp4")
        row.get_by_text("unfinished").wait_for()
        row.locator("a.library-name").click()
        page.get_by_role("tab", name="Video", selected=True).wait_for()
        page.locator("#status").get_by_text("did not finish").wait_for()
        first_words = shown_so_far.split()[0]
        assert first_words in page.inner_text("#summary")
        shot(page, "library-after-kill.png")
        page.close()
    finally:
        process.kill()
        process.wait()
    assert ARTIFACTS.exists()
