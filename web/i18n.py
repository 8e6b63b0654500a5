"""The page in English and Chinese: one table of texts per language, keyed by name.

The page's fixed texts (labels, buttons, placeholders, headings) are ``gr.I18n`` keys (:data:`I18N`): the
browser translates them to its own language (``navigator.language``; English when it is neither). What the
handlers write (status lines, notes, messages) is translated on the server, in the language the browser asks
for (:func:`browser_language`, from its ``Accept-Language`` header), by :func:`say`. The page's script takes its few
texts from the same table (:func:`page_config`). Errors raised by the library stay in English.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from gradio.i18n import I18nData

LANGUAGES = ("en", "zh")  # the first is the default

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        # The page's fixed texts (gr.I18n keys)
        "heading": "# Qwen3-VL video summarizer\nUpload a video, get a timestamped summary, then ask about it.",
        "model": "Model",
        "model_info": "A Qwen3-VL Instruct checkpoint: hub id, local folder or quantized checkpoint",
        "load_model": "Load model",
        "tab_video": "Video",
        "tab_image": "Image",
        "video_formats": "Video: MP4, MKV, MOV, WebM, AVI, MPEG-TS…",
        "transcript_box": "Transcript: what is said, each time a link",
        "find_word": "Find a word…",
        "prompt_template": "Prompt template",
        "prompt": "Prompt",
        "fps": "Frames per second",
        "range_from": "From",
        "range_to": "To",
        "range_start": "start",
        "range_end": "end",
        "auto_context": "Auto context (what fits the device)",
        "context": "Context length (tokens)",
        "speech": "Speech",
        "language": "Language",
        "language_info": "e.g. en, de, zh; empty = detect",
        "summarize": "Summarize",
        "stop": "Stop",
        "keys_hint": (
            "<small>Keys: <kbd>Ctrl</kbd>+<kbd>Enter</kbd> (<kbd>⌘</kbd>+<kbd>Enter</kbd> on a Mac) summarizes; "
            "<kbd>Enter</kbd> in the question box asks.</small>"
        ),
        "downloads": "Downloads",
        "chat_placeholder": "Follow-up questions: ask about the video below, once it is summarised.",
        "question_placeholder": "Ask about the video…",
        "ask": "Ask",
        "statistics": "Last turn statistics",
        "image": "Image",
        "describe": "Describe",
        # What the handlers write (say())
        "upload_first": "*Upload a video to see how it will be read.*",
        "summary_placeholder": "*The summary appears here, with every time a link into the video.*",
        "transcript_placeholder": "*What is said in the video appears here once it is summarised.*",
        "no_summary_note": "Chapters appear here once the video is summarised.",
        "no_chapters_note": "No chapters: the summary gives no chapter times, so there is no timeline.",
        "stopped": "Stopped. The video stays loaded: ask again or press Summarize.",
        "nothing_to_stop": "Nothing is running.",
        "loading_model": "Loading the model…",
        "writing": "Writing the summary…",
        "no_video": "No video yet: upload one (drag and drop works), then press Summarize.",
        "empty_prompt": "The prompt is empty: pick a template or write what you want.",
        "type_question": "Type a question first.",
        "no_job": (
            "No video has been read for this page yet (or it was unloaded to make room): "
            "upload a video if needed and press Summarize, then ask."
        ),
        "no_image": "No image yet: upload one, then press Describe.",
        "model_not_loaded": "**Model:** not loaded yet; it loads on first use, or press *Load model*.",
        "speech_choice_auto": "Auto: subtitles, else speech recognition",
        "speech_choice_subtitles": "Subtitles only (a file next to it or inside it)",
        "speech_choice_asr": "Speech recognition",
        "speech_choice_off": "Off: frames only",
        "model_loaded": "**Model:** `{model}` on {device}, {dtype}",
        "duration": "Duration",
        "resolution": "Resolution",
        "frame_rate": "Frame rate",
        "codec": "Codec",
        "no_audio": "no audio",
        "stage_segment": "Part",
        "stage_frames": "Decoding frames",
        "stage_vision": "Encoding vision",
        "stage_prefill": "Prefill",
        "tokens_unit": " tokens",
        "merging": "Merging the parts",
        "time_left": "about {seconds} s left",
        "transcribing": "Transcribing the speech {done}/{total}",
        "parts_note": " ({parts} parts, then a merge)",
        "done": "Done: read {read} tokens, wrote {wrote} ({rate} tokens/s)",
        "no_chapter_files": " · no {formats} to download: the summary has no chapter times",
        "empty_transcript": " · the transcript was empty",
        "empty_answer": (
            "The model answered with no text ({tokens} tokens of white space or control tokens). Try another "
            "prompt or template, or a higher frame rate."
        ),
        "speech_pending": "*The speech is being transcribed while the video is read; its lines come with the summary.*",
        "speech_off": "*Speech is off for this summary: the model read the frames only.*",
        "no_audio_track": "*The video has no audio track: the model read the frames only.*",
        "no_speech_source": (
            "*No subtitles were found and no speech model could be loaded (the server's log says why): "
            "the model read the frames only.*"
        ),
        "transcript_heading": "*{lines} lines from {source}*",
        "source_asr": "speech recognition, {detail}",
        "source_sidecar": "subtitle file {detail}",
        "source_embedded": "subtitles in the video, {detail}",
        "source_span": "{source} of {first}–{last} only",
        "nothing_said": "*(nothing was said)*",
        "tab_library": "Library",
        "library_search_placeholder": "Search what was said, summarised or answered in every video…",
        "library_search": "Search",
        "library_prev": "← Newer",
        "library_next": "Older →",
        "library_refresh": "Refresh",
        "library_empty": "The library is empty: every video you summarise here is kept in it.",
        "library_ask_heading": "Ask the library",
        "library_ticked": "Only these videos (none ticked: all of them)",
        "library_ask_placeholder": "A question over your videos, e.g. which one explains attention?",
        "library_delete_all": "Delete everything in the library",
        "library_delete": "Delete",
        "library_delete_one": "Delete {name}",
        "library_questions": "questions: {count}",
        "library_unfinished": "unfinished",
        "library_no_hits": "Nothing in the library matches “{query}”.",
        "library_hits": "{count} passages match “{query}” (best first):",
        "kind_transcript": "said",
        "kind_summary": "summary",
        "kind_chat": "answer",
        "library_no_transcript": "*No transcript was kept for this video.*",
        "library_file_gone": (
            "The uploaded file of {name} is gone, so it cannot be played; questions still work from its cached "
            "features. To watch it, upload the file again."
        ),
        "library_gone": "That video is no longer in the library.",
        "library_opened": "Opened {name} from the library (last used {when}).",
        "library_run_unfinished": "Its summary did not finish ({error}): what was written is shown.",
        "library_no_end": "the server stopped before the end",
        "library_paging": "Page {page} of {pages} · videos: {count}",
        "library_deleted": "Videos deleted from the library: {count}.",
        "library_asking": "Answering from {count} passages of the library…",
        "library_answered": "Answered from passages of: {sources}.",
        "confirm_delete": "Delete {name} from the library, with its summary, questions, transcript and cached features?",
        "confirm_delete_all": "Delete every video in your library, with everything kept about them? This cannot be undone.",
        # The page's script (page_config())
        "cannot_play": (
            "Your browser cannot play this file, so the player stays blank and clicking a time will not move "
            "it. The summary and the questions still work. To watch along, convert it to H.264 MP4, e.g. "
            "ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4, and upload that."
        ),
        "ask_about_time": "What is happening at {time}?",
        "play_from": "Play from {time}",
        "status": "Status",
        "summary": "Summary",
    },
    "zh": {
        "heading": "# Qwen3-VL 视频摘要\n上传视频，得到带时间戳的摘要，再就视频提问。",
        "model": "模型",
        "model_info": "Qwen3-VL Instruct 模型：Hub ID、本地文件夹或量化模型",
        "load_model": "加载模型",
        "tab_video": "视频",
        "tab_image": "图片",
        "video_formats": "视频：MP4、MKV、MOV、WebM、AVI、MPEG-TS…",
        "transcript_box": "字幕稿：视频里说的话，每个时间都是链接",
        "find_word": "查找词语…",
        "prompt_template": "提示词模板",
        "prompt": "提示词",
        "fps": "每秒帧数",
        "range_from": "从",
        "range_to": "到",
        "range_start": "开头",
        "range_end": "结尾",
        "auto_context": "自动上下文（按设备可容纳的长度）",
        "context": "上下文长度（词元）",
        "speech": "语音",
        "language": "语言",
        "language_info": "如 en、de、zh；留空则自动识别",
        "summarize": "生成摘要",
        "stop": "停止",
        "keys_hint": (
            "<small>快捷键：<kbd>Ctrl</kbd>+<kbd>Enter</kbd>（Mac 上 <kbd>⌘</kbd>+<kbd>Enter</kbd>）生成摘要；"
            "在提问框中按 <kbd>Enter</kbd> 提问。</small>"
        ),
        "downloads": "下载",
        "chat_placeholder": "追问：视频摘要完成后，在下方就视频提问。",
        "question_placeholder": "就视频提问…",
        "ask": "提问",
        "statistics": "上一轮统计",
        "image": "图片",
        "describe": "描述",
        "upload_first": "*上传视频后，这里显示模型将如何读取它。*",
        "summary_placeholder": "*摘要显示在这里，其中每个时间都是跳转到视频的链接。*",
        "transcript_placeholder": "*视频摘要完成后，这里显示视频里说的话。*",
        "no_summary_note": "视频摘要完成后，这里显示章节。",
        "no_chapters_note": "没有章节：摘要中没有章节时间，因此没有时间轴。",
        "stopped": "已停止。视频仍已加载：可以再次提问，或按“生成摘要”。",
        "nothing_to_stop": "没有正在运行的任务。",
        "loading_model": "正在加载模型…",
        "writing": "正在撰写摘要…",
        "no_video": "还没有视频：请先上传（可拖放），再按“生成摘要”。",
        "empty_prompt": "提示词为空：请选择模板或写下你的要求。",
        "type_question": "请先输入问题。",
        "no_job": "本页面还没有读取过视频（或为腾出空间已卸载）：如有需要请上传视频并按“生成摘要”，然后再提问。",
        "no_image": "还没有图片：请先上传，再按“描述”。",
        "model_not_loaded": "**模型**：尚未加载；首次使用时加载，或按“加载模型”。",
        "speech_choice_auto": "自动：优先字幕，否则语音识别",
        "speech_choice_subtitles": "仅字幕（同目录的字幕文件或内嵌字幕）",
        "speech_choice_asr": "语音识别",
        "speech_choice_off": "关闭：仅看画面",
        "model_loaded": "**模型**：`{model}`，运行于 {device}，{dtype}",
        "duration": "时长",
        "resolution": "分辨率",
        "frame_rate": "帧率",
        "codec": "编码",
        "no_audio": "无音轨",
        "stage_segment": "分段",
        "stage_frames": "解码帧",
        "stage_vision": "视觉编码",
        "stage_prefill": "预填充",
        "tokens_unit": " 词元",
        "merging": "正在合并各分段",
        "time_left": "约剩 {seconds} 秒",
        "transcribing": "正在转写语音 {done}/{total}",
        "parts_note": "（{parts} 个分段，之后合并）",
        "done": "完成：读取 {read} 个词元，写出 {wrote} 个（每秒 {rate} 个）",
        "no_chapter_files": " · 没有可下载的 {formats}：摘要中没有章节时间",
        "empty_transcript": " · 字幕稿为空",
        "empty_answer": "模型没有写出文字（{tokens} 个空白或控制词元）。请换一个提示词或模板，或提高帧率。",
        "speech_pending": "*正在边读视频边转写语音；字幕稿随摘要一起给出。*",
        "speech_off": "*本次摘要关闭了语音：模型只看了画面。*",
        "no_audio_track": "*视频没有音轨：模型只看了画面。*",
        "no_speech_source": "*没有找到字幕，也无法加载语音模型（原因见服务器日志）：模型只看了画面。*",
        "transcript_heading": "*{lines} 行，来自{source}*",
        "source_asr": "语音识别，{detail}",
        "source_sidecar": "字幕文件 {detail}",
        "source_embedded": "视频内嵌字幕，{detail}",
        "source_span": "{source}，仅 {first}–{last}",
        "nothing_said": "*（没有人说话）*",
        "tab_library": "视频库",
        "library_search_placeholder": "在所有视频的字幕稿、摘要和回答中搜索…",
        "library_search": "搜索",
        "library_prev": "← 较新",
        "library_next": "较旧 →",
        "library_refresh": "刷新",
        "library_empty": "视频库是空的：在这里生成摘要的每个视频都会保存进来。",
        "library_ask_heading": "向视频库提问",
        "library_ticked": "只问这些视频（都不勾选：全部视频）",
        "library_ask_placeholder": "就你的视频提问，例如：哪个视频讲了注意力机制？",
        "library_delete_all": "删除视频库中的全部内容",
        "library_delete": "删除",
        "library_delete_one": "删除 {name}",
        "library_questions": "提问 {count} 个",
        "library_unfinished": "未完成",
        "library_no_hits": "视频库中没有与“{query}”匹配的内容。",
        "library_hits": "{count} 个片段与“{query}”匹配（最相关的在前）：",
        "kind_transcript": "字幕稿",
        "kind_summary": "摘要",
        "kind_chat": "回答",
        "library_no_transcript": "*这个视频没有保存字幕稿。*",
        "library_file_gone": "{name} 上传的文件已不在，无法播放；提问仍可根据缓存的视觉特征回答。如需观看，请重新上传该文件。",
        "library_gone": "这个视频已不在视频库中。",
        "library_opened": "已从视频库打开 {name}（上次使用于 {when}）。",
        "library_run_unfinished": "它的摘要没有完成（{error}）：显示的是已写出的部分。",
        "library_no_end": "服务器在结束前停止了",
        "library_paging": "第 {page}/{pages} 页 · 共 {count} 个视频",
        "library_deleted": "已从视频库删除 {count} 个视频。",
        "library_asking": "正在根据视频库中的 {count} 个片段回答…",
        "library_answered": "回答依据这些视频的片段：{sources}。",
        "confirm_delete": "从视频库删除 {name}，连同它的摘要、提问、字幕稿和缓存的特征？",
        "confirm_delete_all": "删除视频库中的所有视频及其保存的全部内容？此操作无法撤销。",
        "cannot_play": (
            "你的浏览器无法播放此文件，因此播放器保持空白，点击时间也不会跳转。摘要和提问仍然可用。"
            "如需边看边读，请将其转换为 H.264 MP4（例如 ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4）后再上传。"
        ),
        "ask_about_time": "{time} 发生了什么？",
        "play_from": "从 {time} 播放",
        "status": "状态",
        "summary": "摘要",
    },
}

# The browser translates these keys (gr.I18n keys hold no {placeholders}: those are filled by say()).
I18N = gr.I18n(**{lang: {k: v for k, v in texts.items() if "{" not in v} for lang, texts in TEXTS.items()})
PAGE_KEYS = ("cannot_play", "ask_about_time", "play_from", "status", "summary", "model",
             "confirm_delete", "confirm_delete_all")  # fmt: skip


def T(key: str) -> I18nData:  # noqa: N802 (Gradio's idiom: i18n("key"))
    """A fixed text of the page, translated by the browser."""
    return I18N(key)


def browser_language(request: gr.Request | None) -> str:
    """The first of LANGUAGES that the browser's ``Accept-Language`` header names (``zh-CN,zh;q=0.9`` is
    Chinese), by its weights ``q``, then in the header's order; English without a header or a match."""
    header = (request.headers.get("accept-language", "") if request is not None else "") or ""
    ranked = []
    for i, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        try:
            q = float(params.strip().removeprefix("q=")) if params.strip().startswith("q=") else 1.0
        except ValueError:
            q = 0.0
        ranked.append((-q, i, tag.strip().lower().split("-")[0]))
    acceptable = [lang for q, _, lang in sorted(ranked) if q < 0]  # q=0 (or no number): not acceptable
    return next((lang for lang in acceptable if lang in LANGUAGES), LANGUAGES[0])


def say(lang: str, key: str, **values: Any) -> str:
    """The text ``key`` in ``lang`` (English where it has none), its ``{placeholders}`` filled in."""
    text = TEXTS.get(lang, {}).get(key) or TEXTS[LANGUAGES[0]][key]
    return text.format(**values) if values else text


def page_config(extensions: list[str] | tuple[str, ...]) -> str:
    """What the page's script (static/page.js) reads at load: the video extensions its file picker lists and
    its texts in each language, as a JSON data block for the page's head."""
    data = {
        "extensions": list(extensions),
        "texts": {lang: {k: say(lang, k) for k in PAGE_KEYS} for lang in LANGUAGES},
        "default": LANGUAGES[0],
    }
    text = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/json" id="qwen3vl-page">{text}</script>'
