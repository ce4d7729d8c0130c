"""The model input (contracts §2): the instruction prompt, and the one function that turns a sample
into chat messages. The strings are a model interface: released checkpoints were trained on them, so
they are reproduced byte for byte. The hint and answer texts are written by
:mod:`rexthinker.contracts`."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from rexthinker.contracts.answer import answer_json
from rexthinker.contracts.hint import user_text
from rexthinker.coords import MODEL_PIXELS, BoxFrame, model_frame_size
from rexthinker.models.families import QWEN2_5_VL, Family

THINK_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here "
    "</answer>."
)

# --- samples -> chat messages ----------------------------------------------------------------------
# One function builds the model input for SFT, GRPO, evaluation and the demo, so the prompt is
# byte-identical everywhere.

INSTRUCTION_PLACEMENTS = ("system", "user_suffix", "none")
# A trace line stating its candidate's box, "- Person 3 [12, 40, 60, 200]: ..." (SynthRef's trace_boxes).
STATED_BOX = re.compile(r"^[-*\u2022][ \t]*[^\W\d_]+ \d+ \[", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class PromptInfo:
    """What the prompt builder decided, for the stages that come after generation."""

    image_size: tuple[int, int]  # (W, H) original pixels
    model_size: tuple[int, int]  # (W', H') model-input frame: the resized image the vision tower sees
    hint_boxes: list[list[int]]  # box frame, in prompt order ("Person k" = hint_boxes[k-1])
    answer_boxes: list[list[int]]  # box frame, sorted by their position in the hints
    order: list[int]  # order[k] = index in sample.candidate_boxes of the prompt's (k+1)-th hint
    family: Family  # the model family the prompt was written for (its patch size, its box frame)
    frame: BoxFrame  # the frame of the boxes above; frame.decode maps them back to original pixels


def pixel_limits(processor) -> tuple[int, int]:
    """``(min_pixels, max_pixels)`` the processor really resizes with."""
    image_processor = getattr(processor, "image_processor", processor)
    size = dict(getattr(image_processor, "size", {}) or {})
    lo = size.get("shortest_edge", getattr(image_processor, "min_pixels", None))
    hi = size.get("longest_edge", getattr(image_processor, "max_pixels", None))
    if lo is None or hi is None:
        raise ValueError(f"cannot read min/max pixels from {type(image_processor).__name__} (size={size})")
    return int(lo), int(hi)


def prompt_boxes(sample, min_pixels: int, max_pixels: int, shuffle_seed: int | None = None, family: Family = QWEN2_5_VL) -> PromptInfo:
    """Hint and answer boxes in ``family``'s box frame for ``sample``'s image (contracts §1.6): pixels
    of the model-input frame (Qwen2.5-VL), or 0-1000 relative to the image (Qwen3-VL, Qwen3.5).

    Boxes declared in that frame (``sample.box_frame`` equals its size) are used verbatim; boxes in
    any other frame are mapped with truncation and clamping, also when the original image happens to
    be the size of the model frame (a box ending on the image's right edge, x1 = W, becomes W - 1
    there, as every writer of model-frame boxes maps it). ``shuffle_seed`` permutes the hint order
    (the paper's GRPO option); ``PromptInfo.order`` keeps the permutation.
    """
    if sample.image_size is None:
        raise ValueError(f"sample {sample.id!r} has no image_size")
    original = tuple(sample.image_size)
    model = model_frame_size(original[0], original[1], min_pixels, max_pixels, family.factor)
    frame = family.box_frame(original[0], original[1], min_pixels, max_pixels)
    source = tuple(sample.box_frame) if sample.box_frame is not None else original

    def convert(box):
        return [int(v) for v in box] if sample.box_frame is not None and source == frame.size else frame.encode(box, source)

    order = list(range(len(sample.candidate_boxes)))
    if shuffle_seed is not None:
        order = [int(i) for i in np.random.default_rng(shuffle_seed).permutation(len(order))]
    hints = [convert(sample.candidate_boxes[i]) for i in order]
    answers = [convert(box) for box in sample.answer_boxes]
    rank = {tuple(box): k for k, box in enumerate(hints)}
    answers.sort(key=lambda box: rank.get(tuple(box), len(hints)))
    return PromptInfo(original, model, hints, answers, order, family, frame)


def build_messages(
    sample,
    min_pixels: int,
    max_pixels: int,
    template: str = "train",
    instruction: str = "system",
    shuffle_seed: int | None = None,
    image=None,
    family: Family = QWEN2_5_VL,
) -> tuple[list[dict], PromptInfo]:
    """Chat messages (Qwen2.5-VL / TRL / vLLM content-list form) and the :class:`PromptInfo`.

    ``instruction`` places THINK_PROMPT: ``"system"`` (the released model's inference and evaluation
    setting), ``"user_suffix"`` (the released GRPO config: no system message, the instruction without
    its final period after the user text, separated by a space) or ``"none"``. ``image`` defaults to
    the sample's decoded image and is put in the message, so processors and vLLM see the same pixels.
    ``family`` decides the box frame of the hints (:func:`prompt_boxes`).
    """
    if instruction not in INSTRUCTION_PLACEMENTS:
        raise ValueError(f"instruction must be one of {INSTRUCTION_PLACEMENTS}, got {instruction!r}")
    info = prompt_boxes(sample, min_pixels, max_pixels, shuffle_seed, family)
    text = user_text(sample.referring, sample.category, info.hint_boxes, template)
    if instruction == "user_suffix":
        text = f"{text} {THINK_PROMPT.rstrip('.')}"
    messages = []
    if instruction == "system":
        messages.append({"role": "system", "content": [{"type": "text", "text": THINK_PROMPT}]})
    content = [{"type": "image", "image": image if image is not None else sample.load_image()}]
    messages.append({"role": "user", "content": content + [{"type": "text", "text": text}]})
    return messages, info


def target_text(sample, info: PromptInfo) -> str:
    """The assistant turn SFT trains on: ``<think>trace</think><answer>json</answer>``, the answer in
    the prompt's box frame."""
    if info.order != sorted(info.order) and sample.think:
        raise ValueError("a trace names persons in the original hint order; do not shuffle hints for SFT")
    if sample.think and info.frame.kind != MODEL_PIXELS and STATED_BOX.search(sample.think):
        raise ValueError(f"sample {sample.id!r}: its trace states boxes, written in Qwen2.5-VL's model frame, but the "
                         f"prompt is in {info.family.name}'s {info.frame.kind} frame")  # fmt: skip
    return f"<think>{sample.think or ''}</think><answer>{answer_json(info.answer_boxes, sample.referring)}</answer>"
