"""The reference trainer's per-rank weights, merged (contracts §7).

The reference trainer (EasyR1, FSDP) saves ``model_world_size_{W}_rank_{r}.pt`` for ``r = 0..W-1``,
each a state dict in which a tensor is either replicated (every rank holds all of it) or sharded
along one dimension (rank ``r`` holds the ``r``-th slice). Where a file stores DTensors, their
placement says which; where it stores plain tensors, the placement follows from shapes: the model
built from ``huggingface/config.json`` gives each tensor's full shape, a rank holding the full shape
holds a replica, and ranks whose slices differ from the full shape in exactly one dimension, and add
up to it there, hold shards along that dimension.

What the reference merger did and this one refuses: a tensor missing from one rank file reused the
tensor of the previous key (here: an error naming the key and the file); replicas that disagree
were not noticed (here: an error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from rexthinker.convert.keys import ConversionError, Rule, rename_all, shown

RANK_FILE = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")


def rank_files(folder: Path) -> list[Path]:
    """The complete, ordered set of rank files in ``folder`` (one world size, every rank once)."""
    found = {}
    for path in Path(folder).iterdir():
        if m := RANK_FILE.match(path.name):
            found[(int(m.group(1)), int(m.group(2)))] = path
    if not found:
        raise ConversionError(f"{folder}: no model_world_size_<W>_rank_<r>.pt files")
    sizes = sorted({w for w, _ in found})
    if len(sizes) > 1:
        raise ConversionError(f"{folder}: rank files of several world sizes {sizes}; keep one checkpoint per folder")
    world = sizes[0]
    absent = [r for r in range(world) if (world, r) not in found]
    if absent or len(found) != world:
        raise ConversionError(f"{folder}: world size {world} but rank file(s) {absent or sorted(r for _, r in found)} missing or extra")
    return [found[(world, r)] for r in range(world)]


@dataclass(frozen=True)
class Placement:
    kind: str  # "replicate" or "shard"
    dim: int | None = None


def _local(value) -> tuple[torch.Tensor, Placement | None]:
    """A plain tensor, and the placement a DTensor declares (None for a plain tensor)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(value, DTensor):
        return value, None
    placements = value.placements
    if len(placements) != 1:
        raise ConversionError(f"a DTensor on a {len(placements)}-D device mesh; only 1-D (FSDP) meshes are supported")
    p = placements[0]
    if p.is_replicate():
        return value.to_local(), Placement("replicate")
    if p.is_shard():
        return value.to_local(), Placement("shard", p.dim)
    raise ConversionError(f"unsupported DTensor placement {p}")


def fits(placement: Placement, full: torch.Size, local: list[torch.Size]) -> bool:
    """Whether slices of these shapes, placed this way, assemble a tensor of shape ``full``."""
    if placement.kind == "replicate":
        return all(tuple(s) == tuple(full) for s in local)
    dim = placement.dim
    if any(len(s) != len(full) for s in local) or not 0 <= dim < len(full):
        return False
    others_full = all(s[d] == full[d] for s in local for d in range(len(full)) if d != dim)
    return others_full and sum(s[dim] for s in local) == full[dim]


def infer_placement(full: torch.Size, local: list[torch.Size]) -> Placement | None:
    """Replicated, sharded along one dimension, or None when the shapes fit neither."""
    if fits(Placement("replicate"), full, local):
        return Placement("replicate")
    candidates = [Placement("shard", d) for d in range(len(full)) if fits(Placement("shard", d), full, local)]
    return candidates[0] if len(candidates) == 1 else None


def merge(folder: Path, shapes: dict[str, torch.Size], rules: tuple[Rule, ...]
          ) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, int]]:  # fmt: skip
    """Merged tensors under model names (``rules``: the family's reference layout), the file name of
    each, and how many were sharded per dim."""
    import torch.distributed.tensor  # noqa: F401  (registers DTensor, which files written by FSDP2 hold)

    files = rank_files(folder)
    states, mappings = [], []
    for path in files:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        if not isinstance(state, dict):
            raise ConversionError(f"{path.name}: expected a state dict, found {type(state).__name__}")
        states.append(state)
        mappings.append(rename_all(state.keys(), rules, path.name))
    names = list(states[0])
    for r, (path, state) in enumerate(zip(files, states)):
        for name in names:
            if name not in state:
                raise ConversionError(f"{path.name} lacks {shown(name, mappings[0][name])}, which rank 0 holds")
        for name in state:
            if name not in states[0]:
                raise ConversionError(f"{files[0].name} lacks {shown(name, mappings[r][name])}, which rank {r} holds")
    merged, sources, counts = {}, {}, {"replicated": 0}
    for name in names:
        target = mappings[0][name]
        sources[target] = name
        if target not in shapes:  # reported with every other unexpected name by Skeleton.complete
            merged[target] = states[0][name]
            continue
        parts = [_local(state[name]) for state in states]
        tensors = [t for t, _ in parts]
        declared = {p for _, p in parts}
        local = [t.shape for t in tensors]
        if len(declared) > 1:
            raise ConversionError(f"{shown(name, target)}: ranks declare different placements {sorted(map(str, declared))}")
        placement = declared.pop() or infer_placement(shapes[target], local)
        if placement is None or not fits(placement, shapes[target], local):
            raise ConversionError(
                f"{shown(name, target)}: rank shapes {[tuple(t.shape) for t in tensors]} do not assemble "
                f"the full shape {tuple(shapes[target])} (declared placement: {placement})"
            )
        if placement.kind == "replicate":
            for r, t in enumerate(tensors[1:], start=1):
                if not torch.equal(t, tensors[0]):
                    raise ConversionError(f"{shown(name, target)}: replicated, but rank {r} holds other values than rank 0")
            merged[target] = tensors[0]
            counts["replicated"] += 1
        else:
            merged[target] = torch.cat(tensors, dim=placement.dim)
            key = f"sharded on dim {placement.dim}"
            counts[key] = counts.get(key, 0) + 1
    return merged, sources, counts
