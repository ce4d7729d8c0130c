"""The web demo: ask a referring model questions from a browser (Gradio), watching it reason.

    python scripts/web_demo.py --model outputs/demo/sft/final --detector tiny   # http://127.0.0.1:7860

The page takes an image (an upload, or one of a few SynthRef scenes generated at start-up), a
category, a referring expression, and the candidate boxes as pasted JSON or from the detector the
demo was started with. It shows the numbered candidates at once, then the trace while the model
writes it (plan, steps, the summary's ✅ / ❌ / ⚠ lines), then :func:`rexthinker.inference.draw_result`'s
picture, the answer as JSON in original-image pixels and the time taken. Bad input gets a message
on the page, never a stack trace.

Every answer comes from :meth:`rexthinker.inference.Referrer.stream`, the library's one inference
path (prompt builder, frame checks, read-back), so it equals ``scripts/infer.py``'s for the same
input. :func:`answer` is the request -> views function the page calls; it needs no browser.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rexthinker.detect.base import Detector
from rexthinker.inference import Referrer, Result, draw_result, parse_boxes
from rexthinker.viz import draw_sample

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a demo on a closed network

MAX_IMAGE_PIXELS = 25_000_000  # larger uploads are refused (the model sees at most ~1 MP anyway)
MAX_FILE_SIZE = "20mb"
MAX_BOXES = 200


class InputError(ValueError):
    """A request the demo refuses; the message is shown on the page as it is."""


@dataclass
class View:
    """What the page shows at one moment of an answer."""

    picture: Image.Image | None = None
    trace: str = ""  # Markdown
    answer: str = ""  # JSON text
    status: str = ""  # Markdown
    result: Result | None = None  # the answer read back, once it is complete

    def values(self) -> tuple:
        return self.picture, self.trace, self.answer, self.status


# --------------------------------------------------------------------------------------------------
# Reading a request


def load_image(path: str | os.PathLike | None) -> Image.Image:
    """The uploaded image as RGB, or :class:`InputError` for no file, a non-image or a huge image."""
    if path is None:
        raise InputError("Upload an image, or pick one of the examples.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} MP); this demo takes up to "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP. Downscale it and upload it again."
                )
            return image.convert("RGB")
    except Image.DecompressionBombError:
        raise InputError(f"The image is far larger than this demo takes ({MAX_IMAGE_PIXELS / 1e6:.0f} MP at most).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{Path(path).name} is not an image this demo can read (PNG, JPEG, WebP, ...).") from None


def read_boxes(text: str, image_size: tuple[int, int]) -> list[list[float]]:
    """Pasted candidate boxes: ``[[x0, y0, x1, y1], ...]`` or ``{"person": [...]}`` in image pixels."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"The candidate boxes are not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}).") from None
    try:
        boxes = parse_boxes(data)
    except ValueError:
        raise InputError(
            'The candidate boxes must be a list of [x0, y0, x1, y1] number lists, e.g. [[10, 20, 110, 220], [150, 30, 260, 240]], '
            'or {"person": [...]}.'
        ) from None
    if len(boxes) > MAX_BOXES:
        raise InputError(f"{len(boxes)} candidate boxes; this demo takes up to {MAX_BOXES}.")
    width, height = image_size
    for k, (x0, y0, x1, y1) in enumerate(boxes, 1):
        if not (x0 < x1 and y0 < y1):
            raise InputError(f"Candidate box {k} {[x0, y0, x1, y1]} is empty: it needs x0 < x1 and y0 < y1.")
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise InputError(f"Candidate box {k} {[x0, y0, x1, y1]} lies outside the {width} x {height} image.")
    return boxes


def read_request(image_path, category: str, referring: str, boxes_text: str, detector: Detector | None):
    """``(image, category, referring, candidates)``; candidates are the pasted boxes, else ``detector``."""
    category, referring = (category or "").strip(), (referring or "").strip()
    if not referring:
        raise InputError("Type a referring expression, e.g. “the person in a red shirt”.")
    if not category:
        raise InputError("Type the category of the candidates, e.g. “person”.")
    image = load_image(image_path)
    if (boxes_text or "").strip():
        return image, category, referring, read_boxes(boxes_text, image.size)
    if detector is None:
        raise InputError("Paste the candidate boxes as JSON: this demo was started without a detector (--detector).")
    return image, category, referring, detector


# --------------------------------------------------------------------------------------------------
# Answering


def answer(referrer: Referrer, image_path, category: str, referring: str, boxes_text: str = "",
           detector: Detector | None = None) -> Iterator[View]:  # fmt: skip
    """The page's answer to one request, as a sequence of views: the candidates, the trace while it
    is written, then the result. Bad input yields one view with the message and nothing else."""
    try:
        image, category, referring, candidates = read_request(image_path, category, referring, boxes_text, detector)
    except InputError as err:
        yield View(status=f"⚠️ **{_escape(str(err))}**")
        return
    start = time.perf_counter()
    sample = referrer.query(image, category, referring, candidates)  # runs the detector once
    boxes = sample.candidate_boxes
    shown = draw_sample(sample, image)
    found = f"{len(boxes)} candidate{'s' if len(boxes) != 1 else ''}"
    if not boxes:
        found = f"no {category} found by the detector" if isinstance(candidates, Detector) else "no candidates"
    yield View(shown, "", "", f"⏳ {found}; the model is thinking…")
    for text, result in referrer.stream(image, category, referring, boxes):
        seconds = time.perf_counter() - start
        if result is None:
            yield View(shown, trace_markdown(text), "", f"⏳ writing… {seconds:.1f} s")
        else:
            picture = draw_result(result, image)
            yield View(picture, trace_markdown(result.raw), answer_json(result, seconds), status_line(result, seconds), result)


def answer_record(result: Result) -> dict:
    """The answer in original-image pixels (boxes rounded to 0.1 px, like ``scripts/infer.py`` prints them)."""
    kind = "unreadable" if not result.completion.answer.ok else "rejection" if result.is_rejection else "boxes"
    return {
        "category": result.category,
        "referring": result.referring,
        "answer": kind,
        "boxes": _rounded(result.answer_boxes_original),
        "candidates": result.answer_candidates,  # the 1-based candidate each box copies (None: no candidate)
        "candidate_boxes": _rounded(result.candidates_original),
        "faithful": not result.unfaithful,
        "tokens": result.num_tokens,
    }


def answer_json(result: Result, seconds: float) -> str:
    """:func:`answer_record` and the time taken, one key a line."""
    record = {**answer_record(result), "seconds": round(seconds, 2)}
    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in record.items()) + "\n}"


def _rounded(boxes) -> list[list[float]]:
    return [[round(v, 1) for v in box] for box in boxes]


def status_line(result: Result, seconds: float) -> str:
    took = f"{seconds:.1f} s, {result.num_tokens} tokens"
    word = _escape(result.category.capitalize())
    if not result.completion.answer.ok:
        return f"❓ **The answer could not be read** ({_escape('; '.join(result.completion.answer.problems))}). {took}"
    if result.is_rejection:
        return f"🚫 **No match**: the model says no {_escape(result.category)} in the image is “{_escape(result.referring)}”. {took}"
    names = ", ".join(f"{word} {k}" if k is not None else "a box that is no candidate" for k in result.answer_candidates)
    notes = [took] + (["The summary's ✅ set differs from the answer (unfaithful trace)."] if result.unfaithful else [])
    icon = "⚠️" if result.unfaithful or None in result.answer_candidates else "🎯"
    return f"{icon} **Answer: {names}**. " + ". ".join(notes)


_HEADING = re.compile(r"^#+\s*")
_ESCAPE = re.compile(r"([\\`*_{}\[\]<>#|])")


def _escape(text: str) -> str:
    return _ESCAPE.sub(r"\\\1", text)


def trace_markdown(text: str) -> str:
    """A completion (or the part written so far) as Markdown: the reasoning's headings as headings,
    its plan and candidate lines as list items with their marks, the raw answer block last."""
    think, _, rest = text.partition("</think>")
    think = think.replace("<think>", "")
    out = []
    for line in think.strip("\n").split("\n"):
        line = line.strip()
        if not line:
            out.append("")
        elif line.startswith("#"):
            out += ["", "#### " + _escape(_HEADING.sub("", line)), ""]
        elif line.startswith("- "):
            out.append("- " + _escape(line[2:]))
        else:
            out.append(_escape(line) + "  ")  # two spaces: a line break
    if rest.strip():
        out += ["", "#### Answer", "", "~~~~", rest.strip().replace("~~~~", "~ ~ ~ ~"), "~~~~"]  # the answer has ``` fences
    return "\n".join(out).strip() or "*(no reasoning written: the completion is empty or white space)*"


# --------------------------------------------------------------------------------------------------
# Examples and the page


def write_examples(folder: str | os.PathLike, count: int = 4, level: str = "demo", seed: int = 0) -> list[list[str]]:
    """``count`` SynthRef test scenes of ``level`` as PNGs in ``folder`` (one a rejection when there
    is one), each as an example row ``[image, category, referring, candidate boxes JSON]``."""
    from rexthinker.data.synthref import generate, level_config

    samples = generate(4 * count, seed=seed, config=level_config(level), split="test")
    chosen = [s for s in samples if not s.is_rejection][: count - 1] + [s for s in samples if s.is_rejection][:1]
    chosen = (chosen + [s for s in samples if s not in chosen])[:count]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in chosen:
        path = folder / f"{level}-{sample.id}.png"
        if not path.exists():
            sample.load_image().save(path)
        boxes = json.dumps([[round(v) for v in box] for box in sample.candidate_boxes])
        rows.append([str(path), sample.category, sample.referring, boxes])
    return rows


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def header(model: str, backend: str, detector: str | None, host: str, port: int) -> str:
    lines = [
        "# Rex-Thinker: refer to objects by reasoning",
        "Upload an image (or pick an example below), name what the candidates are and which one you mean. "
        "The model numbers the candidates, checks each one step by step, and answers with the boxes that match, "
        "or with none.",
        f"Model `{model}` ({backend} backend); candidates from "
        + (f"the detector `{detector}`, or boxes you paste." if detector else "the boxes you paste (no detector)."),
    ]
    if not is_loopback(host):
        lines.append(f"> ⚠️ **This demo listens on {host}:{port}**: anyone who can reach this machine on that port can use it.")
    return "\n\n".join(lines)


def build_app(referrer: Referrer, *, detector: Detector | None = None, detector_name: str | None = None,
              examples: list[list[str]] = (), host: str = "127.0.0.1", port: int = 7860):  # fmt: skip
    """The Gradio page around :func:`answer`."""
    import gradio as gr

    def submit(image_path, category, referring, boxes_text):
        for view in answer(referrer, image_path, category, referring, boxes_text, detector):
            yield view.values()

    with gr.Blocks(title="Rex-Thinker demo", analytics_enabled=False) as app:
        gr.Markdown(header(referrer.model_path, referrer.backend, detector_name, host, port), elem_id="header")
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], elem_id="image", height=320)
                image.preprocess = _unopened(image.preprocess)
                category = gr.Textbox(label="category", value="person", elem_id="category")
                referring = gr.Textbox(label="referring expression", placeholder="the person in a red shirt", elem_id="referring")
                boxes = gr.Textbox(
                    label="candidate boxes (JSON, image pixels)" + ("; leave empty to use the detector" if detector else ""),
                    placeholder='[[10, 20, 110, 220], [150, 30, 260, 240]]  or  {"person": [[...], ...]}',
                    lines=2, elem_id="boxes",
                )  # fmt: skip
                run = gr.Button("Find it", variant="primary", elem_id="submit")
                gr.Markdown("### Reasoning")
                trace = gr.Markdown(elem_id="trace", container=True, max_height=640)
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="status")
                picture = gr.Image(label="candidates and answer", type="pil", format="png", interactive=False, elem_id="picture")
                answer_box = gr.Code(label="answer (original-image pixels)", language="json", interactive=False, elem_id="answer")
        if examples:
            gr.Examples(examples, [image, category, referring, boxes], label="SynthRef examples (synthetic scenes)")
        inputs = [image, category, referring, boxes]
        outputs = [picture, trace, answer_box, status]
        run.click(submit, inputs, outputs, concurrency_limit=1)
        referring.submit(submit, inputs, outputs, concurrency_limit=1)
    return app


def launch(app, host: str = "127.0.0.1", port: int = 7860, allowed_paths=(), block: bool = True):
    """Serve ``app``; the files in ``allowed_paths`` (the examples) may be served to the page."""
    import gradio as gr

    theme = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts
    return app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, max_file_size=MAX_FILE_SIZE, allowed_paths=[str(p) for p in allowed_paths],
        prevent_thread_lock=not block, ssr_mode=False, theme=theme, footer_links=[], quiet=True,
    )  # fmt: skip


def _unopened(preprocess):
    """An image input's ``preprocess`` that hands an uploaded file over unopened, so :func:`load_image`
    can say what is wrong with a non-image (Gradio's own decoding would fail before the handler).
    An instance patch: a subclass of a Gradio component is served as a custom component."""

    def hand_over(payload):
        return payload.path if payload is not None and payload.path else preprocess(payload)

    return hand_over


__all__ = [
    "InputError", "MAX_IMAGE_PIXELS", "View", "answer", "answer_json", "answer_record", "build_app", "header",
    "is_loopback", "launch", "load_image", "read_boxes", "read_request", "status_line", "trace_markdown",
    "write_examples",
]  # fmt: skip
