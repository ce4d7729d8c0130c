"""Tensor names: one rename table per model family and input layout, and the strict check against the
model's own names.

Every layout's names are brought to the names the model has in memory under transformers 5
(``model.language_model.*``, ``model.visual.*``, ``lm_head.*``) by the rules below, applied in
order to each name. Then :class:`Skeleton` (the model built from ``config.json`` on no memory)
decides: a name the model does not have is an error, a name the model needs and no file holds is an
error, a shape that differs is an error. Nothing is filled in from elsewhere, except the one thing
the model itself declares: a tied tensor (``lm_head.weight`` tied to the input embedding) may be
stored once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from rexthinker.models.families import QWEN2_5_VL, QWEN3_5, QWEN3_VL, Family, family_for_model_type


class ConversionError(ValueError):
    """The checkpoint cannot be converted as it is: the message says which tensor and why."""


@dataclass(frozen=True)
class Rule:
    pattern: str  # a regular expression matched against the whole name (re.sub, first match)
    replacement: str
    why: str


# Transformers writes Qwen2.5-VL files with the names of its 4.x module tree (it still does on save
# in 5.x, for compatibility), and the reference trainer's state dicts carry the same names; in memory,
# 5.x nests the text model under ``model.language_model`` and the vision tower under ``model.visual``.
QWEN25VL_ON_DISK = (
    Rule(r"^visual\.", "model.visual.", "vision tower: visual.* -> model.visual.*"),
    Rule(r"^model\.(?!visual\.|language_model\.)", "model.language_model.", "text model: model.* -> model.language_model.*"),
)
# Qwen3-VL and Qwen3.5 were released with the nested names, which transformers also writes and holds
# in memory: their files need no renaming.
QWEN3_ON_DISK: tuple[Rule, ...] = ()

# Wrapper prefixes FSDP, activation checkpointing and torch.compile put into parameter names.
WRAPPERS = (
    Rule(r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.", r"\1", "drop FSDP/checkpoint/compile wrappers"),
)

# Per model family, per input layout (rexthinker.convert.layouts): the rules that bring the names to the model's.
LAYOUT_RULES: dict[str, dict[str, tuple[Rule, ...]]] = {
    QWEN2_5_VL.name: {
        "hf": QWEN25VL_ON_DISK,  # safetensors written by transformers 4.x or 5.x
        "learner": (),  # our single-process learner.pt: model.state_dict() of transformers 5, as is
        "deepspeed": (),  # our ZeRO states: DeepSpeed records the in-memory parameter names
        "reference": WRAPPERS + QWEN25VL_ON_DISK,  # the reference trainer's per-rank FSDP state dicts
    },
    # The reference trainer trains Qwen2.5-VL only: the Qwen3 families have no reference layout.
    QWEN3_VL.name: {"hf": QWEN3_ON_DISK, "learner": (), "deepspeed": ()},
    QWEN3_5.name: {"hf": QWEN3_ON_DISK, "learner": (), "deepspeed": ()},
}


def layout_rules(family: Family, layout: str) -> tuple[Rule, ...]:
    """The rename rules of ``layout`` for checkpoints of ``family``; a layout the family has none for
    is a :class:`ConversionError`."""
    table = LAYOUT_RULES.get(family.name, {})
    if layout not in table:
        raise ConversionError(f"no {layout!r} layout for {family.name} checkpoints (tensor-name rules for: {', '.join(sorted(table))})")
    return table[layout]


def rename(name: str, rules: tuple[Rule, ...]) -> str:
    for rule in rules:
        name = re.sub(rule.pattern, rule.replacement, name, count=1)
    return name


def rename_all(names, rules: tuple[Rule, ...], where: str) -> dict[str, str]:
    """``{source name: model name}``; two source names landing on one model name is an error."""
    mapping, seen = {}, {}
    for name in names:
        new = rename(name, rules)
        if new in seen:
            raise ConversionError(f"{where}: {seen[new]!r} and {name!r} both map to {new!r}")
        seen[new] = name
        mapping[name] = new
    return mapping


def shown(source: str, target: str) -> str:
    return repr(source) if source == target else f"{source!r} (model name {target!r})"


class Skeleton:
    """The model's tensor names, shapes and tied groups, from a config, without allocating weights."""

    def __init__(self, config):
        from transformers import AutoModelForImageTextToText

        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        self.config = config
        self.family = family_for_model_type(config.model_type)  # whose rename rules its files are read with
        self.shapes: dict[str, torch.Size] = {k: v.shape for k, v in model.state_dict().items()}
        groups: dict[int, list[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        # each tied group: the first name owns the tensor, the others are aliases of it
        self.tied: list[list[str]] = [names for names in groups.values() if len(names) > 1]
        self.aliases = {alias: names[0] for names in self.tied for alias in names[1:]}

    @property
    def stored_names(self) -> set[str]:
        """Names a saved file must hold (tied aliases are stored once, under the owner's name)."""
        return set(self.shapes) - set(self.aliases)

    def complete(self, tensors: dict[str, torch.Tensor], where: str, sources: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
        """Check ``tensors`` (model names) against the model and return every model name -> tensor.

        ``sources`` maps model names back to the names in the files, for error messages."""
        sources = sources or {}
        extra = sorted(set(tensors) - set(self.shapes))
        if extra:
            listed = ", ".join(shown(sources.get(k, k), k) for k in extra[:5])
            raise ConversionError(f"{where}: {len(extra)} unexpected tensor(s) the model built from config.json does not have: {listed}")
        state: dict[str, torch.Tensor] = {}
        for names in self.tied:
            held = [n for n in names if n in tensors]
            for other in held[1:]:
                if not torch.equal(tensors[held[0]], tensors[other]):
                    raise ConversionError(f"{where}: tied tensors {held[0]!r} and {other!r} differ")
            if held:
                for n in names:
                    state[n] = tensors[held[0]]
        missing = sorted(n for n in self.stored_names if n not in tensors and n not in state)
        if missing:
            raise ConversionError(f"{where}: {len(missing)} tensor(s) missing: {', '.join(map(repr, missing[:5]))}")
        for name in self.shapes:
            state.setdefault(name, tensors.get(name))
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(self.shapes[name]):
                raise ConversionError(
                    f"{where}: {shown(sources.get(name, name), name)} has shape {tuple(tensor.shape)}, "
                    f"the model expects {tuple(self.shapes[name])}"
                )
        return state
