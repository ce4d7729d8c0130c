"""LoRA adapters on the language model (peft), and the merged weights everything outside the learner sees.

With ``model.lora.r > 0`` the policy is wrapped in a peft ``PeftModel`` (:func:`attach`): every base
weight is frozen (vision tower, projector, language model, head) and only the low-rank adapters of
``lora.target_modules`` in the language model's blocks train, ``A`` (r x in) and ``B`` (out x r, zero
at the start, so the first policy is the base model). Anything that leaves the learner is one plain
model with the adapters merged, ``W + alpha / r * B @ A`` (:func:`merge`, computed from a state dict,
the trained adapters untouched): the Hugging Face export, the weight sync to vLLM, the converter. The
GRPO reference policy is the same model with the adapters switched off (:class:`BasePolicy`).

Learner states hold the adapters only (the frozen base is ``model.path``); a checkpoint also carries
``adapter/`` in peft's format (``PeftModel.from_pretrained(base, folder)`` loads it).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LANGUAGE_BLOCKS = r"model\.language_model\.layers\.\d+\.(?:.*\.)?"  # modules LoRA may adapt (not the vision tower)
LIVE_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.default\.weight$")  # PeftModel.state_dict()
FILE_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$")  # adapter_model.safetensors


@dataclass
class LoraConfig:
    """``model.lora``: low-rank adapters instead of full fine-tuning (off while ``r`` is 0)."""

    r: int = 0  # adapter rank; 0: no LoRA, the freeze settings decide what trains
    alpha: float = 16.0  # the adapter's update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter's input while training
    target_modules: list[str] = field(default_factory=lambda: list(TARGETS))  # linear layers of the language model's blocks

    @property
    def enabled(self) -> bool:
        return self.r > 0

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def lora_problem(cfg: LoraConfig, freeze_vision: bool, freeze_projector: bool, freeze_llm: bool) -> str | None:
    """Why ``cfg`` cannot be used with these freeze settings; None when it can. With LoRA only the
    adapters train: the vision tower and projector stay frozen (the reference policy and the merged
    export are base + adapters), and ``freeze_llm`` would leave nothing to train."""
    if cfg.r < 0:
        return f"model.lora.r must be 0 (off) or positive, got {cfg.r}"
    if not cfg.enabled:
        return None
    if not cfg.target_modules:
        return "model.lora.target_modules is empty: name the language model's linear layers to adapt"
    if not (freeze_vision and freeze_projector):
        return "model.lora trains adapters only: keep model.freeze_vision and model.freeze_projector true"
    if freeze_llm:
        return "model.lora adapts the language model: model.freeze_llm=true would leave nothing to train"
    return None


def attach(model, cfg: LoraConfig):
    """``model`` with LoRA adapters on ``cfg.target_modules`` of its language model and every base
    weight frozen; ``model`` itself when ``cfg.r`` is 0. A target name that no layer has is an error."""
    if not cfg.enabled:
        return model
    import peft

    names = "|".join(map(re.escape, cfg.target_modules))
    pattern = rf"{LANGUAGE_BLOCKS}(?:{names})"
    found = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if re.fullmatch(pattern, name)}
    missing = sorted(set(cfg.target_modules) - found)
    if missing:
        raise ValueError(f"model.lora.target_modules {missing}: no layer of the language model's blocks has that name")
    spec = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=pattern, bias="none")
    return peft.get_peft_model(model, spec)


def is_lora(model) -> bool:
    peft = sys.modules.get("peft")  # a model can only be a PeftModel once peft was imported
    return peft is not None and isinstance(model, peft.PeftModel)


def scaling(model) -> float:
    spec = model.peft_config["default"]
    return spec.lora_alpha / spec.r


def base_model(model):
    """The transformers model under a PeftModel (its own modules, adapters inside), or ``model``."""
    return model.get_base_model() if is_lora(model) else model


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of a PeftModel state dict (what a learner state holds)."""
    return {k: v for k, v in state.items() if LIVE_KEY.match(k)}


def split(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """A PeftModel state dict as ``(base, adapters)``: the base weights under the plain model's names,
    and ``{module name: {"A": .., "B": ..}}``."""
    base, adapters = {}, {}
    for key, tensor in state.items():
        if m := LIVE_KEY.match(key):
            adapters.setdefault(m.group(1), {})[m.group(2)] = tensor
        elif key.startswith("base_model.model."):
            base[key.removeprefix("base_model.model.").replace(".base_layer.", ".")] = tensor
        else:
            raise KeyError(f"{key!r} is not a PeftModel state dict name")
    return base, adapters


def merge(base: dict[str, torch.Tensor], adapters: dict[str, dict[str, torch.Tensor]], scale: float) -> dict[str, torch.Tensor]:
    """A new state dict: ``base`` with ``W + scale * B @ A`` for every adapted module (computed in
    fp32, stored in W's dtype). Neither ``base`` nor the adapters are modified."""
    merged = dict(base)
    for module, ab in adapters.items():
        key = f"{module}.weight"
        if key not in base or set(ab) != {"A", "B"}:
            raise KeyError(f"adapter of {module!r}: needs lora_A, lora_B and the base weight {key!r}, found {sorted(ab)}")
        weight = base[key]
        delta = ab["B"].to(device=weight.device, dtype=torch.float32) @ ab["A"].to(device=weight.device, dtype=torch.float32)
        merged[key] = (weight.float() + scale * delta).to(weight.dtype)
    return merged


def merged_state_dict(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """The plain model's weights (its own names) from a PeftModel state dict, adapters merged."""
    return merge(*split(state), scale)


def read_adapter(folder: Path) -> tuple[dict[str, dict[str, torch.Tensor]], float]:
    """``(adapters, scale)`` of a peft adapter folder (``adapter_config.json`` +
    ``adapter_model.safetensors``) holding plain LoRA; any other kind is a ValueError."""
    from safetensors.torch import load_file

    folder = Path(folder)
    spec = json.loads((folder / "adapter_config.json").read_text())
    unsupported = {k: spec.get(k) for k in ("use_dora", "use_rslora", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save")
                   if spec.get(k)}  # fmt: skip
    if spec.get("peft_type") != "LORA" or spec.get("bias", "none") != "none" or unsupported:
        raise ValueError(f"{folder}: only plain LoRA adapters merge here (peft_type LORA, bias none), this one has "
                         f"peft_type={spec.get('peft_type')}, bias={spec.get('bias')}, {unsupported}")  # fmt: skip
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(folder / "adapter_model.safetensors")).items():
        m = FILE_KEY.match(key)
        if not m:
            raise ValueError(f"{folder}: {key!r} is not a LoRA adapter tensor")
        adapters.setdefault(m.group(1), {})[m.group(2)] = tensor
    return adapters, spec["lora_alpha"] / spec["r"]


class BasePolicy:
    """The base model under a LoRA policy: the same modules run with the adapters switched off
    (peft's ``disable_adapter``) and in eval mode. It stands in for a separate reference model; its
    weights are the learner's (sharded with them under ZeRO-3, so every rank must run it in step)."""

    lockstep = True

    def __init__(self, model):
        self.module = model  # the PeftModel (``experience`` reaches the transformers model through it)

    @torch.no_grad()
    def __call__(self, **inputs):
        was_training = self.module.training
        self.module.eval()
        try:
            with self.module.disable_adapter():
                return self.module(**inputs)
        finally:
            self.module.train(was_training)
