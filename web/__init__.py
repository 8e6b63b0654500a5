"""The web page over ``qwen3vl_summarizer`` (``app.py`` at the top starts it).

``page.py`` lays out the components and wires their events; ``handlers.py`` holds the functions the events
call (and the state they share); ``render.py`` writes what the page shows (lines, transcript, timeline);
``policy.py`` says what a request may do (uploads, models, text and image limits); ``i18n.py`` holds the
page's texts in English and Chinese; ``static/`` the page's one script and one stylesheet.
"""
