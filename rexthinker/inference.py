"""Ask a checkpoint one referring question, or many, and read its answer back in original pixels.

    from rexthinker.inference import Referrer, draw_result
    referrer = Referrer("IDEA-Research/Rex-Thinker-GRPO-7B")           # vLLM; backend="hf" for transformers
    result = referrer.refer(image, "helmet", "the fourth helmet from left", boxes=[[x0, y0, x1, y1], ...])
    print(result.raw)                       # <think>...</think><answer>...</answer>
    result.answer_boxes_original            # the answer in the image's own pixels
    draw_result(result, image).save("out.png")
    for text, result in referrer.stream(image, "helmet", "the fourth helmet from left", boxes):
        ...                                 # the completion so far; result is None until the end (backend="hf" streams)

``boxes`` are the candidates (box hints) in original pixels, or a detector
(:mod:`rexthinker.detect`) that proposes them. The prompt is built by :mod:`rexthinker.prompts`:
hints go into the box frame of the checkpoint's family (:func:`rexthinker.models.families.model_family`:
model-input pixels for Qwen2.5-VL, 0-1000 for Qwen3-VL) with truncation, answers come back with that
frame's :meth:`~rexthinker.coords.BoxFrame.decode`, and :mod:`rexthinker.generation` checks that the
model saw the image in the model-input frame. :meth:`Referrer.generate` does the same for many
samples at once; the HumanRef runner (``evaluation/run_humanref.py``) uses it and
:func:`prediction_row`.

Defaults are the reference demo's: the training user text, THINK_PROMPT as the system message,
pixel limits 16*28*28 .. 1280*28*28, greedy decoding.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from rexthinker.contracts.completion import ParsedCompletion, parse_completion
from rexthinker.contracts.trace import Trace, parse_trace
from rexthinker.coords import to_original_frame
from rexthinker.data.sample import RefSample, encode_png
from rexthinker.detect.base import Detector
from rexthinker.generation import Generation, hf_generate, new_engine, vllm_generate
from rexthinker.models.families import model_family
from rexthinker.prompts import PromptInfo
from rexthinker.train import dist
from rexthinker.viz import ANSWER_COLOR, HINT_COLOR, MARK_COLORS, TEXT_COLOR, draw_mark, draw_marked_text, font, wrap_marked_text

BACKENDS = ("vllm", "hf")

Box = list[float]


@dataclass
class Result:
    """One answer, read back.

    ``answer_boxes_model`` are the boxes as the model wrote them (its box frame), empty for a
    rejection or an unreadable answer (``completion.problems`` says which);
    ``answer_boxes_original`` the same boxes in original pixels. ``answer_candidates[i]`` is the
    1-based hint ("Person k") that answer box ``i`` copies verbatim, or None. ``trace`` is the parsed
    reasoning (None without a think block).
    """

    sample_id: str
    category: str
    referring: str
    think: str | None
    answer_boxes_model: list[Box]
    answer_boxes_original: list[Box]
    answer_candidates: list[int | None]
    candidates_original: list[Box]  # in prompt order: candidates_original[k - 1] is "Person k"
    trace: Trace | None
    completion: ParsedCompletion
    info: PromptInfo
    raw: str
    prompt: str
    num_tokens: int

    @property
    def is_rejection(self) -> bool:
        return self.completion.answer.ok and not self.answer_boxes_model

    @property
    def unfaithful(self) -> bool:
        """The summary's ✅ set and the answer name different candidates (contracts §1.3)."""
        if self.trace is None or self.trace.summary is None or not self.completion.answer.ok:
            return False
        answered = {k for k in self.answer_candidates if k is not None}
        return None in self.answer_candidates or answered != set(self.trace.checked)


def interpret(generation: Generation) -> Result:
    """Parse a completion and map its answer back to original pixels."""
    sample, info = generation.sample, generation.info
    completion = parse_completion(generation.text)
    boxes = completion.answer.boxes if completion.answer.ok else []
    rank = {tuple(float(v) for v in box): k for k, box in enumerate(info.hint_boxes, 1)}
    candidates = [list(map(float, sample.candidate_boxes[i])) for i in info.order]
    if sample.box_frame is not None:  # boxes stored in another frame (a GRPO row): show them in pixels
        candidates = [to_original_frame(b, sample.box_frame, info.image_size) for b in candidates]
    return Result(
        sample_id=sample.id,
        category=sample.category,
        referring=sample.referring,
        think=completion.think,
        answer_boxes_model=[list(b) for b in boxes],
        answer_boxes_original=[info.frame.decode(b, info.image_size) for b in boxes],
        answer_candidates=[rank.get(tuple(b)) for b in boxes],
        candidates_original=candidates,
        trace=parse_trace(completion.think) if completion.think is not None else None,
        completion=completion,
        info=info,
        raw=generation.text,
        prompt=generation.prompt,
        num_tokens=generation.num_tokens,
    )


def prediction_row(result: Result) -> dict:
    """A HumanRef prediction row (contracts §1.1): original-pixel boxes, ``[]`` for a rejection or an
    unreadable answer, plus the raw completion and the prompt."""
    return {
        "id": result.sample_id,
        "extracted_predictions": result.answer_boxes_original,
        "raw_response": result.raw,
        "prompt": result.prompt,
    }


# --------------------------------------------------------------------------------------------------
# The model


def load_processor(model: str | os.PathLike, min_pixels: int, max_pixels: int):
    """The checkpoint's processor, resizing images within ``[min_pixels, max_pixels]``."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(model), size={"shortest_edge": min_pixels, "longest_edge": max_pixels})


class Referrer:
    """A checkpoint and its processor, loaded once, answering referring questions.

    ``backend``: ``"vllm"`` (an ``LLM`` engine) or ``"hf"`` (``model.generate``). ``engine`` reuses an
    already built ``vllm.LLM`` or transformers model instead of loading one; a vLLM engine built with
    other pixel limits is fine (the limits travel with each request). ``engine_kwargs`` go to
    ``vllm.LLM`` (``max_model_len``, ``gpu_memory_utilization``, ...). ``family`` names the model family
    whose box frame the prompts use; by default the checkpoint's own, and a frame the checkpoint's
    folder records must agree (:func:`~rexthinker.models.families.model_family`). ``min_pixels`` /
    ``max_pixels`` default to that family's training limits (:attr:`Family.train_pixels`: 16 to 1280
    image tokens, 28 x 28 pixels each for Qwen2.5-VL, 32 x 32 for Qwen3-VL and Qwen3.5).
    """

    def __init__(
        self, model: str | os.PathLike, backend: str = "vllm", *, template: str = "train", instruction: str = "system",
        min_pixels: int | None = None, max_pixels: int | None = None, max_new_tokens: int = 2048,
        batch_size: int = 8, engine=None, engine_kwargs: dict | None = None, seed: int = 0, family: str | None = None,
    ):  # fmt: skip
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model_path = str(model)
        self.family = model_family(model, family)
        self.backend = backend
        self.template = template
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        default_min, default_max = self.family.train_pixels
        self.min_pixels = default_min if min_pixels is None else min_pixels
        self.max_pixels = default_max if max_pixels is None else max_pixels
        self.processor = load_processor(model, self.min_pixels, self.max_pixels)
        self.engine = engine if engine is not None else self._load(engine_kwargs or {}, seed)

    def _load(self, engine_kwargs: dict, seed: int):
        if self.backend == "hf":
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=dist.compute_dtype())
            return model.to(dist.device()).eval()
        # the pixel limits travel with each request (vllm_generate), so the engine needs none
        return new_engine(self.model_path, seed=seed, extra=engine_kwargs)

    def generate(self, samples: Sequence[RefSample], progress: bool = False) -> list[Generation]:
        """Greedy completions for ``samples`` (HumanRef-style: candidate boxes are the hints)."""
        kwargs = dict(template=self.template, instruction=self.instruction, progress=progress, family=self.family)
        if self.backend == "hf":
            return hf_generate(
                self.engine, self.processor, samples, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                **kwargs,
            )  # fmt: skip
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        return vllm_generate(self.engine, self.processor, samples, params, **kwargs)

    def ask(self, samples: Sequence[RefSample], progress: bool = False) -> list[Result]:
        """:meth:`generate`, each completion read back with :func:`interpret`."""
        return [interpret(g) for g in self.generate(samples, progress)]

    def refer(self, image: Image.Image, category: str, referring: str, boxes=None) -> Result:
        """One question about ``image``. ``boxes``: the candidates in original pixels, a
        :class:`~rexthinker.detect.Detector` to propose them, or None for no candidates."""
        return self.ask([self.query(image, category, referring, boxes)])[0]

    def stream(self, image: Image.Image, category: str, referring: str, boxes=None) -> Iterator[tuple[str, Result | None]]:
        """:meth:`refer`, yielding the completion while it is written: ``(text so far, None)`` per new
        piece, then ``(completion, result)`` with the same result :meth:`refer` gives. The hf backend
        streams; vLLM yields the finished answer once."""
        sample = self.query(image, category, referring, boxes)
        if self.backend != "hf":
            (result,) = self.ask([sample])
            yield result.raw, result
            return
        streamer = _stoppable_streamer(self.processor.tokenizer)
        done: dict = {}

        def run() -> None:
            try:
                done["generation"] = hf_generate(
                    self.engine, self.processor, [sample], max_new_tokens=self.max_new_tokens, template=self.template,
                    instruction=self.instruction, streamer=streamer, family=self.family,
                )[0]  # fmt: skip
            except BaseException as err:  # re-raised below, in the caller's thread
                done["error"] = err
                streamer.end()

        worker = threading.Thread(target=run, name="rexthinker-stream", daemon=True)
        worker.start()
        text = ""
        try:
            for piece in streamer:
                if piece:
                    text += piece
                    yield text, None
        finally:  # the caller stopped listening (a closed page, say): end the generation at the next token
            streamer.stopped = True
            worker.join()
        if "error" in done:
            raise done["error"]
        result = interpret(done["generation"])
        yield result.raw, result

    def query(self, image: Image.Image, category: str, referring: str, boxes=None) -> RefSample:
        """The sample :meth:`refer` asks about: ``image`` with its candidates (boxes, or a detector's)."""
        image = image.convert("RGB")
        if boxes is None:
            candidates = []
        elif isinstance(boxes, Detector):
            candidates = boxes.detect(image, category)
        else:
            candidates = [[float(v) for v in box] for box in boxes]
        bad = [box for box in candidates if len(box) != 4]
        if bad:
            raise ValueError(f"candidate boxes must be [x0, y0, x1, y1]; got {bad[0]}")
        return RefSample(
            id="query", image_name="", referring=referring, candidate_boxes=candidates, answer_boxes=[],
            category=category, image_bytes=encode_png(image), image_size=image.size,
        )  # fmt: skip


def _stoppable_streamer(tokenizer):
    """A ``TextIteratorStreamer`` that ends its ``generate`` call (by raising) once ``stopped`` is set."""
    from transformers import TextIteratorStreamer

    class Streamer(TextIteratorStreamer):
        stopped = False

        def put(self, value):
            if self.stopped:
                raise RuntimeError("the stream's reader stopped listening")
            super().put(value)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def read_boxes_file(path: str | os.PathLike) -> list[Box]:
    """Candidate boxes from a JSON file (see :func:`parse_boxes`)."""
    import json

    with open(path, encoding="utf-8") as fh:
        return parse_boxes(json.load(fh), str(path))


def parse_boxes(data, source: str = "boxes") -> list[Box]:
    """Candidate boxes from parsed JSON: a list of ``[x0, y0, x1, y1]`` (original pixels), or the
    hint's own form ``{"<category>": [[x0, y0, x1, y1], ...]}``. ``source`` names the input in errors."""
    if isinstance(data, dict):
        if len(data) != 1:
            raise ValueError(f"{source}: expected a list of boxes or one {{category: boxes}} entry, got {list(data)}")
        (data,) = data.values()
    ok = isinstance(data, list) and all(
        isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
        for b in data
    )
    if not ok:
        raise ValueError(f"{source}: boxes must be a list of [x0, y0, x1, y1] number lists")
    return [[float(v) for v in b] for b in data]


# --------------------------------------------------------------------------------------------------
# The picture

DISPLAY_SIDE = 720  # both image panels are scaled so their longer side is this many pixels
PANEL_BG = (255, 255, 255)


def draw_result(result: Result, image: Image.Image, display_side: int = DISPLAY_SIDE) -> Image.Image:
    """A picture of one answer: the numbered candidates on the left, each with its summary mark
    (✅ / ❌, drawn as vector shapes) when the trace has one; the predicted boxes on the right, labelled
    with the candidate they copy ("?" when they copy none); under both, the expression, the answer
    and the trace's summary lines with their marks.

    Both panels are scaled to ``display_side`` on their longer side, so labels are equally readable
    on a 300-pixel and on a 4000-pixel image.
    """
    image = image.convert("RGB")
    if image.size != tuple(result.info.image_size):
        raise ValueError(f"image is {image.size} but the result was computed on {tuple(result.info.image_size)}")
    scale = display_side / max(image.size)
    shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    label_size = max(14, round(display_side / 32))
    summary = result.trace.summary if result.trace is not None and result.trace.summary is not None else {}

    left = shown.copy()
    draw = ImageDraw.Draw(left)
    for k, box in enumerate(result.candidates_original, 1):
        _box(draw, left.size, [v * scale for v in box], HINT_COLOR, label_size, str(k), summary.get(k))
    right = shown.copy()
    draw = ImageDraw.Draw(right)
    for box, k in zip(result.answer_boxes_original, result.answer_candidates):
        label = str(k) if k is not None else "?"
        _box(draw, right.size, [v * scale for v in box], ANSWER_COLOR, label_size, label, None, thick=True)
    if not result.answer_boxes_original:
        note = "no target (rejection)" if result.is_rejection else "answer unreadable"
        _banner(draw, note, label_size)

    margin = max(8, label_size // 2)
    title_font = font(label_size)
    text_font = font(max(12, round(label_size * 0.8)))
    width = 2 * shown.width + 3 * margin
    text_width = width - 2 * margin
    header = wrap_marked_text(f"{result.category}: {result.referring}\n{_answer_line(result)}", title_font, text_width)
    body = wrap_marked_text("\n".join(_summary_lines(result)), text_font, text_width)
    title_step = round(title_font.size * 1.3)
    body_step = round(text_font.size * 1.3)
    text_height = len(header) * title_step + margin + len(body) * body_step
    canvas = Image.new("RGB", (width, shown.height + text_height + 3 * margin + title_step), PANEL_BG)
    draw = ImageDraw.Draw(canvas)
    draw.text((margin, margin), "candidates (box hints)", font=title_font, fill=HINT_COLOR)
    draw.text((2 * margin + shown.width, margin), "prediction", font=title_font, fill=ANSWER_COLOR)
    top = 2 * margin + title_step
    canvas.paste(left, (margin, top))
    canvas.paste(right, (2 * margin + shown.width, top))
    y = top + shown.height + margin
    y += draw_marked_text(draw, (margin, y), header, title_font, fill=(20, 20, 120), line_height=title_step)
    draw_marked_text(draw, (margin, y + margin), body, text_font, line_height=body_step, fill=(0, 0, 0))
    return canvas


def _box(draw: ImageDraw.ImageDraw, bounds, box, color, size: int, label: str, mark: str | None, thick=False) -> None:
    """A box with its label tab above it (inside the picture), and the mark, if any, after the label."""
    width = max(2, size // (5 if thick else 8))
    draw.rectangle(box, outline=color, width=width)
    label_font = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), label, font=label_font)
    pad = max(2, size // 6)
    tw, th = right - left + 2 * pad, max(bottom - top, size) + 2 * pad
    total = tw + (th if mark else 0)
    x = min(max(0.0, box[0]), bounds[0] - total)
    y = box[1] - th if box[1] - th >= 0 else min(max(0.0, box[1]), bounds[1] - th)
    draw.rectangle([x, y, x + tw, y + th], fill=color)
    draw.text((x + pad - left, y + (th - (bottom - top)) / 2 - top), label, font=label_font, fill=TEXT_COLOR)
    if mark:  # the summary's verdict on this candidate, on a white square after the number
        draw.rectangle([x + tw, y, x + tw + th, y + th], fill=PANEL_BG, outline=color)
        draw_mark(draw, mark, x + tw + pad / 2, y + pad / 2, th - pad)


def _banner(draw: ImageDraw.ImageDraw, text: str, size: int) -> None:
    label_font = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=label_font)
    pad = size // 3
    draw.rectangle([0, 0, right - left + 2 * pad, bottom - top + 2 * pad], fill=ANSWER_COLOR)
    draw.text((pad - left, pad - top), text, font=label_font, fill=TEXT_COLOR)


def _answer_line(result: Result) -> str:
    word = (result.trace.category if result.trace and result.trace.category else result.category).capitalize()
    if not result.completion.answer.ok:
        return f"answer unreadable: {result.completion.answer.problems[0]}"
    if not result.answer_candidates:
        return "answer: none (rejection)"
    names = [f"{word} {k}" if k is not None else "a box that is no hint" for k in result.answer_candidates]
    line = "answer: " + ", ".join(names)
    if result.unfaithful:
        checked = ", ".join(str(k) for k in sorted(result.trace.checked)) or "none"
        line += f"   (the summary checks {checked}: unfaithful)"
    return line


def _summary_lines(result: Result, limit: int = 40) -> list[str]:
    """The trace's summary section (its candidate lines), or what can be said without one."""
    if result.think is None:
        return ["(no <think> block)"]
    lines = result.think.split("\n")
    headings = [i for i, line in enumerate(lines) if line.lstrip().startswith("#") and "summar" in line.lower()]
    start = headings[-1] if headings else None
    if start is None:
        return ["(the trace has no summary section)"]
    body = [line.strip() for line in lines[start + 1 :] if line.strip()]
    marked = [line for line in body if any(m in line for m in MARK_COLORS)]
    shown = marked or body
    if len(shown) > limit:
        shown = shown[:limit] + [f"... {len(shown) - limit} more lines"]
    return shown


__all__ = [
    "BACKENDS", "Referrer", "Result", "draw_result", "interpret", "load_processor",
    "parse_boxes", "prediction_row", "read_boxes_file",
]  # fmt: skip
