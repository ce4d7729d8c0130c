"""From rollouts to learner inputs: token sequences, masks, micro-batches, per-token log-probs.

A sequence is the *processor's* prompt ids (image tokens expanded, exactly what vLLM computed
internally from the same text and image) followed by the completion's token ids. The HF forward
gets ``mm_token_type_ids`` too: without them Qwen2.5-VL's rope positions drift (~1e-2 in log-prob).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rexthinker.grpo.algorithm import entropy_from_logits, token_logprobs


@dataclass
class EncodedPrompt:
    """A prompt run through the processor once and reused by every completion of its group."""

    input_ids: torch.Tensor  # (P,)
    mm_token_type_ids: torch.Tensor  # (P,)
    pixel_values: torch.Tensor  # (patches, dim)
    image_grid_thw: torch.Tensor  # (1, 3)


def encode_prompt(processor, prompt: str, image) -> EncodedPrompt:
    enc = processor(text=[prompt], images=[image], return_tensors="pt")
    return EncodedPrompt(enc["input_ids"][0], enc["mm_token_type_ids"][0], enc["pixel_values"], enc["image_grid_thw"])


@dataclass
class TokenSequence:
    prompt: EncodedPrompt
    response_ids: list[int]

    @property
    def length(self) -> int:
        return self.prompt.input_ids.numel() + len(self.response_ids)


def micro_batches_by_tokens(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Split sequence indices into micro-batches whose *padded* size (rows x longest) stays within
    ``max_tokens``; sequences are sorted by length first so padding is small. A sequence longer than
    the budget gets a micro-batch of its own. Deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, current, longest = [], [], 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def collate(seqs: Sequence[TokenSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded model inputs plus ``response_mask`` marking completion tokens (as targets)."""
    length = max(s.length for s in seqs)
    n = len(seqs)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    mm_types = torch.zeros((n, length), dtype=torch.long)
    response_mask = torch.zeros((n, length), dtype=torch.bool)
    for row, s in enumerate(seqs):
        p = s.prompt.input_ids.numel()
        ids = torch.cat([s.prompt.input_ids, torch.tensor(s.response_ids, dtype=torch.long)])
        input_ids[row, : ids.numel()] = ids
        attention[row, : ids.numel()] = 1
        mm_types[row, :p] = s.prompt.mm_token_type_ids
        response_mask[row, p : ids.numel()] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": mm_types,
        "pixel_values": torch.cat([s.prompt.pixel_values for s in seqs]),
        "image_grid_thw": torch.cat([s.prompt.image_grid_thw for s in seqs]),
        "response_mask": response_mask,
    }


def token_logprobs_and_entropy(model, batch: dict[str, torch.Tensor], with_entropy: bool = False):
    """Per-token log-prob of each token given its prefix, aligned with ``input_ids`` (position t
    holds log p(x_t | x_<t); position 0 is 0), in float32; optionally the entropy at each position."""
    inputs = {k: v for k, v in batch.items() if k != "response_mask"}
    logits = model(**inputs).logits[:, :-1]
    out = torch.zeros(batch["input_ids"].shape, dtype=torch.float32, device=logits.device)
    out[:, 1:] = token_logprobs(logits, batch["input_ids"][:, 1:])
    if not with_entropy:
        return out, None
    entropy = torch.zeros_like(out)
    entropy[:, 1:] = entropy_from_logits(logits)
    return out, entropy
