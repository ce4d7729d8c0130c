"""Builders shared by the converter tests: the reference trainer's rank files, and readers of a written folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def legacy_name(name: str) -> str:
    """The name a transformers 4.x Qwen2.5-VL state dict (the reference trainer's) uses."""
    if name.startswith("model.visual."):
        return name.removeprefix("model.")
    return name.replace("model.language_model.", "model.", 1)


def placement_plan(state: dict[str, torch.Tensor]) -> dict[str, int | None]:
    """Shard dim per tensor (None: replicated): 1-D replicated, 2-D alternating dim 0 / dim 1, others dim 0."""
    plan, two_d = {}, 0
    for name, tensor in state.items():
        if tensor.ndim == 1:
            plan[name] = None
        elif tensor.ndim == 2:
            plan[name] = two_d % 2
            two_d += 1
        else:
            plan[name] = 0
    return plan


def write_reference(model_dir: Path, actor: Path, world: int = 2) -> dict[str, torch.Tensor]:
    """``actor/model_world_size_{world}_rank_{r}.pt`` + ``actor/huggingface/`` from an HF folder.

    Tensors are plain (the placement is not written down), under legacy names, with ``lm_head.weight``
    stored beside the embedding it is tied to, as an FSDP state dict has it. Returns the full tensors
    under the model's in-memory names."""
    from transformers import AutoModelForImageTextToText

    full = {k: v.clone() for k, v in AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).state_dict().items()}
    plan = placement_plan(full)
    for r in range(world):
        local = {}
        for name, tensor in full.items():
            dim = plan[name]
            local[legacy_name(name)] = tensor.clone() if dim is None else torch.tensor_split(tensor, world, dim=dim)[r].clone()
        actor.mkdir(parents=True, exist_ok=True)
        torch.save(local, actor / f"model_world_size_{world}_rank_{r}.pt")
        torch.save({"note": "optimizer state, ignored by the converter"}, actor / f"optim_world_size_{world}_rank_{r}.pt")
    hf = actor / "huggingface"
    hf.mkdir()
    for file in Path(model_dir).iterdir():
        if file.suffix != ".safetensors" and file.name != "rexthinker_tiny.json":
            shutil.copy(file, hf / file.name)
    return full


def stored_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder, dtype="auto").state_dict()


def config_dtype(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["dtype"]
