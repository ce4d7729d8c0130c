"""Load a policy (any registered model family) and its processor for training, with the freeze settings applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from rexthinker.config import ConfigError
from rexthinker.models.families import family_for_model_type
from rexthinker.models.lora import LoraConfig, lora_problem


@dataclass
class ModelConfig:
    """The ``model`` section of every training stage."""

    path: str = ""  # a Hugging Face folder (or hub id on machines with a hub): the policy to start from
    freeze_vision: bool = True  # vision blocks + patch embedding
    freeze_projector: bool = True  # the patch merger feeding the language model
    freeze_llm: bool = False  # the language model and its head
    min_pixels: int | None = None  # override the processor's limits (the reference used 16*28*28 ..)
    max_pixels: int | None = None  # (.. 1280*28*28); None keeps the checkpoint's processor values
    attn_implementation: str = "sdpa"
    lora: LoraConfig = field(default_factory=LoraConfig)  # adapters instead of full training (rexthinker.models.lora)

    def __post_init__(self) -> None:
        problem = lora_problem(self.lora, self.freeze_vision, self.freeze_projector, self.freeze_llm)
        if problem:
            raise ConfigError(problem)


def check_model_path(path: str) -> None:
    """Fail at once, before any process is launched, when ``path`` is neither a local folder nor a
    model already in the local Hugging Face cache (a hub download from 8 processes at start-up, or
    on a machine without network, would hang instead)."""
    if path and Path(path).is_dir():
        if not (Path(path) / "config.json").is_file():
            raise SystemExit(f"model.path {path!r} is a folder without config.json: not a Hugging Face model folder")
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        raise SystemExit(
            f"model.path {path!r} is not a local folder and not in the local Hugging Face cache. Download it first "
            f"(`huggingface-cli download {path or '<repo>'}`) or pass a folder, e.g. model.path=/models/Qwen2.5-VL-7B-Instruct; "
            "for the demo model: `python -m rexthinker.models.tiny small`."
        ) from None


def load_policy(path: str, cfg: ModelConfig | None = None):
    """``(model, processor)`` of the checkpoint at ``path`` with the settings of ``cfg`` (its pixel
    limits, attention and frozen parts; defaults when None); the model in fp32 (the learner casts it),
    frozen parts without grad. ``path`` is given apart from ``cfg.path`` because a run also loads its
    current weights from elsewhere (rollout engines, the reference model).

    A path that does not exist, or a folder that does not load, fails with a message naming it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = cfg or ModelConfig()
    check_model_path(path)
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation=cfg.attn_implementation)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot load model.path {path!r}: {exc}") from None
    set_pixel_limits(processor, cfg.min_pixels, cfg.max_pixels)
    freeze(model, freeze_vision=cfg.freeze_vision, freeze_projector=cfg.freeze_projector, freeze_llm=cfg.freeze_llm)
    return model, processor


def set_pixel_limits(processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Override the processor's resize limits (None keeps the checkpoint's value)."""
    if min_pixels or max_pixels:
        size = dict(processor.image_processor.size)
        size["shortest_edge"] = min_pixels or size["shortest_edge"]
        size["longest_edge"] = max_pixels or size["longest_edge"]
        processor.image_processor.size = size


def freeze(model, *, freeze_vision: bool, freeze_projector: bool, freeze_llm: bool) -> None:
    """Vision blocks + patch embedding, the projector and the language model (with its head) can
    each be frozen. The projector is the model family's: the patch merger (Qwen2.5-VL), plus the
    DeepStack mergers (Qwen3-VL); an unknown family fails here."""
    projector = family_for_model_type(model.config.model_type).projector_prefixes
    for name, p in model.model.visual.named_parameters():
        p.requires_grad = not (freeze_projector if name.startswith(projector) else freeze_vision)
    for p in model.model.language_model.parameters():
        p.requires_grad = not freeze_llm
    for p in model.lm_head.parameters():
        p.requires_grad = not freeze_llm
