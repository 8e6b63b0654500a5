"""The Library tab's rendering and the browser's saved state, without a browser (web/library_tab.py)."""

from __future__ import annotations

from types import SimpleNamespace

from qwen3vl_summarizer.library import Hit, Library, mark
from web import library_tab


def hit(
    video_id: int, name: str, start: float | None, text: str, query: str, kind: str = "transcript"
) -> Hit:
    snippet, spans = mark(text, query)
    return Hit(video_id, name, 1, kind, start, None, text, snippet, spans, -1.0)


def test_citations_of_the_passages_videos_become_links_that_open_them() -> None:
    hits = [
        hit(3, "lecture 3.mp4", 725.0, "gradient checkpointing", "gradient"),
        hit(7, "talk.mp4", 2.0, "x", "x"),
    ]
    answer = "Explained in [lecture 3.mp4 @ 12:05] and [talk.mp4 @ 1:00:02]; not in [other.mp4 @ 00:01]. <img src=x>"
    shown = library_tab.cite_links(answer, hits)
    assert "[lecture 3.mp4 @ 12:05](#open=3&t=725)" in shown
    assert "[talk.mp4 @ 1:00:02](#open=7&t=3602)" in shown
    assert "[other.mp4 @ 00:01]" in shown and "#open=" not in shown.split("other.mp4")[1], (
        "an unknown name: text"
    )
    assert "<img" not in shown, "no raw HTML from the model"


def test_a_hit_shows_its_video_time_kind_and_the_match_marked() -> None:
    hits = [
        hit(2, "a<b>.mp4", 9.25, "Please remember to water the <garden>.", "garden"),
        hit(2, "a<b>.mp4", None, "讲解注意力机制的原理", "机制", kind="summary"),
    ]
    html = library_tab.hits_html(hits, "garden", "en")
    assert '<a class="library-hit-link" href="#open=2&t=9.25">a&lt;b&gt;.mp4 @ 00:09</a>' in html
    assert "&lt;<mark>garden</mark>&gt;" in html, "the match marked, the text escaped"
    assert "<mark>机制</mark>" in html and 'href="#open=2"' in html, (
        "a passage without a time opens the video"
    )
    assert "said" in html and "summary" in html
    assert "garden" in library_tab.hits_html(
        [], "garden", "en"
    ) and "library-hit" not in library_tab.hits_html([], "garden", "en")


def test_the_saved_video_is_per_login() -> None:
    alice, nobody = SimpleNamespace(username="alice"), SimpleNamespace(username=None)
    saved = library_tab.with_saved({}, alice, 4)
    saved = library_tab.with_saved(saved, nobody, 9)
    assert saved == {"alice": 4, "": 9}
    assert library_tab.saved_video(saved, alice) == 4 and library_tab.saved_video(saved, nobody) == 9
    assert library_tab.saved_video(saved, SimpleNamespace(username="bob")) is None
    assert library_tab.saved_video({"": "4"}, nobody) is None, "only an id the page wrote"
    assert library_tab.saved_video(None, nobody) is None
    assert library_tab.with_saved(saved, alice, None) == {"": 9}


def test_the_list_escapes_names_and_marks_unfinished_runs(tmp_path) -> None:
    with Library(tmp_path / "library.db") as library:
        video_id = library.add_video("f1", "<b>talk</b>.mp4", duration=65.0)
        library.start_run(video_id, "summarize", {})
        html = library_tab.videos_html(library, library.list_videos(), "en")
        assert "&lt;b&gt;talk&lt;/b&gt;.mp4" in html and "<b>" not in html
        assert "01:05" in html and "questions: 0" in html and "unfinished" in html
        assert f'href="#open={video_id}"' in html and f'data-id="{video_id}"' in html
        assert "library is empty" in library_tab.videos_html(library, [], "en")


def app_state(tmp_path):
    from qwen3vl_summarizer.options import load_options
    from web.handlers import AppState

    options = load_options(overrides={"library": {"path": str(tmp_path / "library.db")}}, environ={})
    return AppState(options)


def test_the_list_pages_twenty_videos_newest_first(tmp_path) -> None:
    state = app_state(tmp_path)
    request = SimpleNamespace(username=None, headers={}, session_hash="page")
    library = state.library_for(None)
    for i in range(25):
        library.add_video(f"f{i}", f"video {i:02d}.mp4", duration=10.0)
    html, paging, page, ticks = library_tab.list_page(state, 0, request)
    assert page == 0 and "Page 1 of 2" in paging and "videos: 25" in paging
    assert html.count('class="library-video"') == 20 and html.index("video 24.mp4") < html.index(
        "video 23.mp4"
    )
    assert len(ticks["choices"]) == 20
    html, paging, page, _ = library_tab.next_page(state, page, request)
    assert page == 1 and html.count('class="library-video"') == 5 and "video 00.mp4" in html
    assert library_tab.next_page(state, page, request)[2] == 1, "no page past the last"
    assert library_tab.previous_page(state, 0, request)[2] == 0
    state.close()


def test_asking_the_ticked_videos_retrieves_only_theirs(tmp_path) -> None:
    with Library(tmp_path / "library.db") as library:
        ids = []
        for name in ("a.mp4", "b.mp4"):
            video_id = library.add_video(name, name, duration=60.0)
            run = library.start_run(video_id, "summarize", {})
            library.write_transcript(run, [(5.0, 8.0, f"gradient checkpointing in {name}")])
            ids.append(video_id)
        assert {h.video_name for h in library_tab._retrieve(library, "gradient checkpointing?", [])} == {
            "a.mp4",
            "b.mp4",
        }
        assert {
            h.video_name for h in library_tab._retrieve(library, "gradient checkpointing?", [ids[1]])
        } == {"b.mp4"}


def test_a_ticked_video_gets_its_passages_however_far_down_it_ranks(tmp_path) -> None:
    """Retrieval filters by the ticked videos in the query itself, not among the best passages of all:
    many better passages elsewhere do not crowd a ticked video out."""
    with Library(tmp_path / "library.db") as library:
        many = library.add_video("many.mp4", "many.mp4", duration=600.0)
        run = library.start_run(many, "summarize", {})
        lines = [(i, i + 1.0, "checkpointing checkpointing checkpointing") for i in range(200)]
        library.write_transcript(run, lines)
        one = library.add_video("one.mp4", "one.mp4", duration=60.0)
        run = library.start_run(one, "summarize", {})
        library.write_transcript(
            run, [(5.0, 8.0, "a long line that mentions checkpointing once, among much else")]
        )
        assert {h.video_name for h in library.retrieve("checkpointing?")} == {"many.mp4"}
        hits = library_tab._retrieve(library, "checkpointing?", [one])
        assert [(h.video_name, h.start) for h in hits] == [("one.mp4", 5.0)]
