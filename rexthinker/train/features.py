"""Token features of one chat and their padded batches: what SFT and the base pre-training
(``rexthinker.models.base``) feed the learner. Labels are ``IGNORE`` outside the trained turns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class Features:
    input_ids: torch.Tensor  # (T,)
    labels: torch.Tensor  # (T,), IGNORE outside the assistant turn
    mm_token_type_ids: torch.Tensor  # (T,), 1 on image tokens
    pixel_values: torch.Tensor | None  # (patches, C*T*P*P); None for a text-only chat
    image_grid_thw: torch.Tensor | None  # (1, 3)
    weights: torch.Tensor | None = None  # (T,) float loss weight of each labelled token (None: 1 each)


def collate(items: list[Features | None], pad_id: int) -> dict[str, torch.Tensor] | None:
    """Right-pad a micro-batch; ``skipped`` counts samples dropped for length. Text-only features
    (no pixels) may be mixed with image ones."""
    kept = [f for f in items if f is not None]
    if not kept:
        return {"skipped": torch.tensor(len(items))}
    length = max(f.input_ids.numel() for f in kept)

    def pad(name: str, value: int) -> torch.Tensor:
        out = torch.full((len(kept), length), value, dtype=torch.long)
        for row, f in enumerate(kept):
            seq = getattr(f, name)
            out[row, : seq.numel()] = seq
        return out

    input_ids = pad("input_ids", pad_id)
    attention = torch.zeros_like(input_ids)
    for row, f in enumerate(kept):
        attention[row, : f.input_ids.numel()] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": pad("labels", IGNORE),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "skipped": torch.tensor(len(items) - len(kept)),
    }
    if any(f.weights is not None for f in kept):  # 0 on padding; 1 on a labelled token of an item without weights
        weights = torch.zeros(input_ids.shape, dtype=torch.float32)
        for row, f in enumerate(kept):
            weights[row, : f.input_ids.numel()] = f.weights if f.weights is not None else (f.labels != IGNORE).float()
        batch["weights"] = weights
    images = [f for f in kept if f.pixel_values is not None]
    if images:  # a batch of text-only chats carries no pixel entries at all
        batch["pixel_values"] = torch.cat([f.pixel_values for f in images])
        batch["image_grid_thw"] = torch.cat([f.image_grid_thw for f in images])
    return batch
