"""Load a Qwen2.5-VL policy and its processor for training, with the freeze settings applied."""

from __future__ import annotations

from pathlib import Path

import torch


def load_policy(path: str, *, freeze_vision: bool = True, freeze_projector: bool = True, freeze_llm: bool = False,
                min_pixels: int | None = None, max_pixels: int | None = None, attn_implementation: str = "sdpa"):  # fmt: skip
    """``(model, processor)``; the model in fp32 (the learner casts it), frozen parts without grad.

    A path that does not exist, or a folder that does not load, fails with a message naming it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not path or (not Path(path).exists() and path.startswith((".", "/"))):
        raise SystemExit(
            f"model.path {path!r} does not exist. Pass a Hugging Face folder, e.g. "
            "model.path=/models/Qwen2.5-VL-7B-Instruct, or build the demo model with "
            "`python -m rexthinker.models.tiny small`."
        )
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation=attn_implementation)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot load model.path {path!r}: {exc}") from None
    set_pixel_limits(processor, min_pixels, max_pixels)
    freeze(model, freeze_vision=freeze_vision, freeze_projector=freeze_projector, freeze_llm=freeze_llm)
    return model, processor


def set_pixel_limits(processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Override the processor's resize limits (None keeps the checkpoint's value)."""
    if min_pixels or max_pixels:
        size = dict(processor.image_processor.size)
        size["shortest_edge"] = min_pixels or size["shortest_edge"]
        size["longest_edge"] = max_pixels or size["longest_edge"]
        processor.image_processor.size = size


def freeze(model, *, freeze_vision: bool, freeze_projector: bool, freeze_llm: bool) -> None:
    """Vision blocks + patch embedding, the patch merger (projector) and the language model (with
    its head) can each be frozen."""
    for name, p in model.model.visual.named_parameters():
        p.requires_grad = not (freeze_projector if name.startswith("merger.") else freeze_vision)
    for p in model.model.language_model.parameters():
        p.requires_grad = not freeze_llm
    for p in model.lm_head.parameters():
        p.requires_grad = not freeze_llm
