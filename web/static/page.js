// The page's script, run once when the page loads (gr.Blocks.launch(js=...), web/page.py). Its settings and
// texts come from the JSON block #qwen3vl-page in the page's head (web/i18n.py page_config), in the
// browser's language as Gradio picks it (navigator.language), English when the page has no such language.
() => {
  if (window.__qwen3vlPage) return;
  window.__qwen3vlPage = true;

  const config = JSON.parse(document.getElementById("qwen3vl-page")?.textContent || "{}");
  const extensions = config.extensions || [];
  const lang = (navigator.language || "").toLowerCase().split("-")[0];
  const texts = (config.texts || {})[lang] || (config.texts || {})[config.default] || {};
  const say = (key, value) => (texts[key] || key).replace(/\{(time|name)\}/, value);

  // Seek links. Clicking ``[03:25](#t=205)`` (made by link_timestamps, and the timeline's spans and cards)
  // moves the player there and plays; when the question box is empty it is pre-filled with a question
  // about that moment.
  document.addEventListener("click", (event) => {
    const link = event.target.closest ? event.target.closest('a[href^="#t="]') : null;
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    const seconds = parseFloat(link.getAttribute("href").slice(3));
    const video = document.querySelector("#player video");
    if (video && Number.isFinite(seconds)) {
      video.currentTime = seconds;
      video.play().catch(() => {});
      const box = video.getBoundingClientRect();  // a link far below it (a phone): bring the player up
      if (box.top < 0 || box.bottom > window.innerHeight) {
        video.scrollIntoView({ block: "nearest" });
      }
    }
    const box = document.querySelector("#question textarea");
    if (box && !box.value.trim()) {
      box.value = say("ask_about_time", link.textContent.trim());
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }, true);

  // The library (web/library_tab.py). A link ``#open=ID&t=SECONDS`` (a video in the list, a search hit, a
  // citation in an answer) opens that video on the Video tab, and the player goes to that time once it has
  // the video; a list's Delete button asks first. Both go to the server through the hidden target box and
  // its "open" or "delete" button. "Delete everything" asks first too.
  let pendingSeek = null;
  const toServer = (button, target) => {
    const box = document.querySelector("#library-target textarea, #library-target input");
    const press = document.querySelector(button);
    if (!box || !press) return;
    box.value = target;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    press.click();
  };
  const seekPending = () => {
    const video = document.querySelector("#player video");
    if (pendingSeek === null || !video || video.readyState < 1) return;
    video.currentTime = pendingSeek;
    pendingSeek = null;
  };
  document.addEventListener("click", (event) => {
    const link = event.target.closest ? event.target.closest('a[href^="#open="]') : null;
    if (link) {
      event.preventDefault();
      event.stopPropagation();
      const target = link.getAttribute("href").slice(6);
      const t = parseFloat((target.split("&t=")[1]) || "");
      pendingSeek = Number.isFinite(t) ? t : null;
      toServer("#library-open", target);
      return;
    }
    const remove = event.target.closest ? event.target.closest("button.library-delete") : null;
    if (remove) {
      event.preventDefault();
      event.stopPropagation();
      if (window.confirm(say("confirm_delete", remove.dataset.name))) toServer("#library-delete", remove.dataset.id);
      return;
    }
    const everything = event.target.closest ? event.target.closest("#library-delete-all") : null;
    if (everything && !window.confirm(say("confirm_delete_all"))) {
      event.preventDefault();
      event.stopPropagation();  // Gradio's own click never hears of it
    }
  }, true);
  document.addEventListener("loadedmetadata", (event) => {
    if (event.target.closest && event.target.closest("#player video")) seekPending();
  }, true);
  window.__qwen3vlSeekPending = () => requestAnimationFrame(() => requestAnimationFrame(seekPending));  // same video

  // The player's note. Only the browser knows what it can play: Chromium plays H.264, VP9 and AV1 in MP4,
  // MOV and MKV, but not AVI or MPEG-TS files, MPEG-4 Part 2, or HEVC without a hardware decoder. When the
  // player fails (an error, or a picture 0 pixels wide) the page says so under it; the summary reads the
  // file itself and still works. That note is the page's one word on it: Gradio's own "Video not playable"
  // toast is kept from firing (the error stops at the document, before the player's listener).
  const note = (text) => {
    const el = document.querySelector("#player-note-text");
    if (el) el.innerText = text;
  };
  const inVideo = (event) => event.target.closest && event.target.closest("#player video");
  // media events do not bubble, so listen while they descend (capture)
  document.addEventListener("loadstart", (event) => { if (inVideo(event)) note(""); }, true);
  document.addEventListener("error", (event) => {
    if (!inVideo(event)) return;
    event.stopPropagation();
    note(say("cannot_play"));
  }, true);
  document.addEventListener("loadedmetadata", (event) => {
    const video = inVideo(event);
    if (video) note(video.videoWidth ? "" : say("cannot_play"));
  }, true);

  // Upload types. Gradio's video upload accepts only what the browser types video/*, and Chromium types an
  // MPEG-TS file (.ts) as a Qt translation (text/...): files with the extensions of the containers FFmpeg
  // reads are retyped, and the file picker lists those extensions.
  const isVideo = (file) => file.type.startsWith("video/")
    || !extensions.some((ext) => file.name.toLowerCase().endsWith(ext));
  const retyped = (files) => {
    const list = new DataTransfer();
    for (const file of files) {
      list.items.add(isVideo(file) ? file : new File([file], file.name, { type: "video/mp2t" }));
    }
    return list.files;
  };
  const inPlayer = (event) => event.target.closest && event.target.closest("#player");
  // Before Gradio's own listeners (capture): a picked file gets a video type...
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!inPlayer(event) || input.type !== "file" || [...input.files].every(isVideo)) return;
    input.files = retyped(input.files);
  }, true);
  // ...and a dropped one goes through the file input the same way.
  document.addEventListener("drop", (event) => {
    const files = event.dataTransfer ? [...event.dataTransfer.files] : [];
    const input = inPlayer(event) && document.querySelector("#player input[type=file]");
    if (!input || files.every(isVideo)) return;
    event.preventDefault();
    event.stopPropagation();
    input.files = retyped(files);
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }, true);

  // The transcript's filter box hides the lines that do not hold all its words (no round trip).
  const filter = () => {
    const box = document.querySelector("#transcript-filter textarea, #transcript-filter input");
    const words = ((box && box.value) || "").toLowerCase().split(/\s+/).filter(Boolean);
    for (const item of document.querySelectorAll("#transcript li")) {
      const text = item.innerText.toLowerCase();
      item.style.display = words.every((w) => text.includes(w)) ? "" : "none";
    }
  };
  document.addEventListener("input", (event) => {
    if (event.target.closest && event.target.closest("#transcript-filter")) filter();
  }, true);

  // For screen readers: the status line and the summary are live regions (read out as they change), and
  // every seek link is named for what it does ("Play from 01:30").
  const label = () => {
    for (const [id, key] of [["status", "status"], ["summary", "summary"], ["model-status", "model"]]) {
      const el = document.getElementById(id);
      if (el && !el.hasAttribute("aria-live")) {
        el.setAttribute("role", id === "summary" ? "region" : "status");
        el.setAttribute("aria-live", "polite");
        el.setAttribute("aria-label", say(key));
      }
    }
    for (const link of document.querySelectorAll('a[href^="#t="]:not([aria-label])')) {
      link.setAttribute("aria-label", say("play_from", link.textContent.trim()));
    }
  };

  // Whatever Gradio redraws: the file picker lists the extensions, the labels are set, and a cleared
  // player has no note.
  const widen = () => {
    const input = document.querySelector("#player input[type=file]");
    if (input && extensions.length && !input.accept.includes(extensions[0])) {
      input.accept += ", " + extensions.join(", ");
    }
  };
  let hadVideo = false;
  const redrawn = () => {
    widen();
    label();
    const hasVideo = Boolean(document.querySelector("#player video"));
    if (hadVideo && !hasVideo) note("");  // the video was cleared: no note about it
    hadVideo = hasVideo;
  };
  new MutationObserver(redrawn).observe(document.body, { childList: true, subtree: true, characterData: true });
  redrawn();

  // Keys: Ctrl+Enter (or Cmd+Enter) presses Ask in the question box, else the visible tab's main button
  // (Summarize, Describe).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.isComposing) return;
    const asking = event.target.closest && event.target.closest("#question");
    const ids = asking ? ["#ask"] : ["#summarize", "#describe"];
    const button = ids.map((id) => document.querySelector(id)).find((el) => el && el.offsetParent);
    if (!button) return;
    event.preventDefault();
    event.stopPropagation();  // not also Gradio's own Enter in the question box
    button.click();
  }, true);
}
