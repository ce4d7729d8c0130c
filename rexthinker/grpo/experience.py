"""From rollouts to learner inputs: token sequences, masks, micro-batches, per-token log-probs.

A sequence is the *processor's* prompt ids (image tokens expanded, exactly what vLLM computed
internally from the same text and image) followed by the completion's token ids. The HF forward
gets ``mm_token_type_ids`` too: without them Qwen2.5-VL's rope positions drift (~1e-2 in log-prob).

Two layouts of a micro-batch give the same log-probs:

- :func:`collate`: every row is prompt + response, right-padded; one forward.
- :func:`collate_shared` (GRPO's default): the n responses of a group share their prompt, so each
  distinct prompt (and its image) is run once, left-padded, with the KV cache kept; the responses
  then run on that cache, expanded to their rows. Gradients flow through the cache into the shared
  prompt pass. With 8 responses of ~180 tokens after a ~300-token prompt this is about half the
  tokens and an eighth of the vision-tower work of the first layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rexthinker.grpo.algorithm import entropy_from_logits, token_logprobs
from rexthinker.models import lora


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


def _pack(order: Sequence[int], cost, max_tokens: int) -> list[list[int]]:
    """Greedy micro-batches of ``order``: an item joins the current batch while ``cost(batch)`` stays
    within ``max_tokens``; an item over the budget on its own gets a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and cost(current + [i]) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def micro_batches_by_tokens(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Split sequence indices into micro-batches whose *padded* size (rows x longest) stays within
    ``max_tokens``; sequences are sorted by length first so padding is small. A sequence longer than
    the budget gets a micro-batch of its own. Deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return _pack(order, lambda batch: len(batch) * max(lengths[i] for i in batch), max_tokens)


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


def response_chunks(width: int, chunk: int = 0) -> list[tuple[int, int]]:
    """The column spans ``(start, stop)`` the responses of a :func:`collate_shared` batch run in:
    ``chunk`` columns each, or one span of all ``width`` columns when 0."""
    step = chunk or width
    return [(start, min(start + step, width)) for start in range(0, width, step)]


def response_cost(lengths: Sequence[int], chunk: int = 0) -> int:
    """Response tokens :func:`_shared_chunks` computes for rows of these lengths: each chunk runs
    its columns for the rows still going at its start (every row in the first)."""
    spans = response_chunks(max(max(lengths, default=0), 1), chunk)
    return sum((stop - start) * (sum(1 for n in lengths if n > start) if start else len(lengths)) for start, stop in spans)


def micro_batches_shared(seqs: Sequence[TokenSequence], indices: Sequence[int], max_tokens: int, chunk: int = 0) -> list[list[int]]:
    """Micro-batches for :func:`collate_shared`: rows of one prompt stay together (sorted by prompt,
    then length) and a micro-batch grows while ``distinct prompts x longest prompt`` plus the
    response tokens computed with ``chunk`` (:func:`response_cost`) stays within ``max_tokens``. A
    group too large for the budget is split; a single sequence over it gets a micro-batch of its
    own. Deterministic."""
    first_seen: dict[int, int] = {}
    for i in indices:
        first_seen.setdefault(id(seqs[i].prompt), len(first_seen))
    order = sorted(indices, key=lambda i: (first_seen[id(seqs[i].prompt)], len(seqs[i].response_ids), i))

    def cost(batch: list[int]) -> int:
        prompts = {id(seqs[i].prompt): seqs[i].prompt.input_ids.numel() for i in batch}
        return len(prompts) * max(prompts.values()) + response_cost([len(seqs[i].response_ids) for i in batch], chunk)

    return _pack(order, cost, max_tokens)


def collate_shared(seqs: Sequence[TokenSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """The prompt-sharing layout: ``prompt_*`` holds each distinct prompt once, left-padded (so every
    prompt's last token is in the last column); ``response_*`` holds the responses right-padded (at
    least one column, so a micro-batch of empty responses still runs the same passes); ``group``
    maps each row to its prompt. ``response_mask`` is :func:`collate`'s, so callers read results the
    same way whichever layout made them."""
    prompts = list({id(s.prompt): s.prompt for s in seqs}.values())
    slot = {id(p): u for u, p in enumerate(prompts)}
    width = max(p.input_ids.numel() for p in prompts)
    p_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    p_attention = torch.zeros((len(prompts), width), dtype=torch.long)
    p_types = torch.zeros((len(prompts), width), dtype=torch.long)
    for u, p in enumerate(prompts):
        n = p.input_ids.numel()
        p_ids[u, width - n :] = p.input_ids
        p_attention[u, width - n :] = 1
        p_types[u, width - n :] = p.mm_token_type_ids
    length = max(max(len(s.response_ids) for s in seqs), 1)
    r_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    r_attention = torch.zeros((len(seqs), length), dtype=torch.long)
    response_mask = torch.zeros((len(seqs), max(s.length for s in seqs)), dtype=torch.bool)
    for row, s in enumerate(seqs):
        r_ids[row, : len(s.response_ids)] = torch.tensor(s.response_ids, dtype=torch.long)
        r_attention[row, : len(s.response_ids)] = 1
        response_mask[row, s.prompt.input_ids.numel() : s.length] = True
    return {
        "prompt_input_ids": p_ids,
        "prompt_attention_mask": p_attention,
        "prompt_mm_token_type_ids": p_types,
        "pixel_values": torch.cat([p.pixel_values for p in prompts]),
        "image_grid_thw": torch.cat([p.image_grid_thw for p in prompts]),
        "response_input_ids": r_ids,
        "response_attention_mask": r_attention,
        "group": torch.tensor([slot[id(s.prompt)] for s in seqs], dtype=torch.long),
        "response_mask": response_mask,
    }


def _hf_model(model):
    """The transformers model behind a :class:`~rexthinker.train.learner.Learner`, a LoRA model
    (or its :class:`~rexthinker.models.lora.BasePolicy`), or itself."""
    return lora.base_model(getattr(model, "module", model))


def _shared_chunks(model, batch: dict[str, torch.Tensor], chunk: int = 0):
    """The :func:`collate_shared` forward: the prompts once, then the responses on their cache,
    ``chunk`` columns at a time (all at once when 0). A chunk runs only the rows still going at its
    first column, so a short response stops costing compute after its last chunk instead of being
    padded to the longest one. Yields ``(rows, start, logits)``: the logits (len(rows), columns,
    vocab) predicting ``response_input_ids[rows, start:start + columns]``."""
    p_attention = batch["prompt_attention_mask"]
    positions, _ = _hf_model(model).model.get_rope_index(
        batch["prompt_input_ids"], batch["prompt_mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
        attention_mask=p_attention,
    )  # fmt: skip
    prompt_out = model(
        input_ids=batch["prompt_input_ids"], attention_mask=p_attention, position_ids=positions,
        mm_token_type_ids=batch["prompt_mm_token_type_ids"], pixel_values=batch["pixel_values"],
        image_grid_thw=batch["image_grid_thw"], use_cache=True, logits_to_keep=1,
    )  # fmt: skip
    group = batch["group"]
    cache = prompt_out.past_key_values
    cache.reorder_cache(group)  # one copy of a prompt's keys/values per response row (differentiable)
    following = positions.masked_fill(p_attention[None] == 0, -1).amax(dim=(0, 2)) + 1  # first position after each prompt
    r_ids, r_attention = batch["response_input_ids"], batch["response_attention_mask"]
    lengths, width = r_attention.sum(dim=1), r_ids.shape[1]
    rows = torch.arange(len(group), device=r_ids.device)
    attention, first, last = p_attention[group], following[group], prompt_out.logits[group][:, -1:]
    for start, stop in response_chunks(width, chunk):
        alive = (lengths[rows] > start).nonzero().flatten()
        if start and alive.numel() == 0:
            break
        if start and alive.numel() < rows.numel():  # drop the finished rows from the cache and the masks
            cache.reorder_cache(alive)
            rows, attention, last = rows[alive], attention[alive], last[alive]
        attention = torch.cat([attention, r_attention[rows, start:stop]], dim=1)
        r_positions = first[rows][:, None] + torch.arange(start, stop, device=r_ids.device)
        out = model(
            input_ids=r_ids[rows, start:stop], attention_mask=attention, position_ids=r_positions[None].expand(3, -1, -1),
            past_key_values=cache, use_cache=stop < width,
        )  # fmt: skip
        yield rows, start, torch.cat([last, out.logits[:, :-1]], dim=1)
        last = out.logits[:, -1:]


def token_logprobs_and_entropy(model, batch: dict[str, torch.Tensor], with_entropy: bool = False, chunk: int = 0,
                               temperature: float = 1.0):  # fmt: skip
    """Per-token log-prob of each token given its prefix, aligned with the :func:`collate` layout
    (position t holds log p(x_t | x_<t); position 0 is 0), in float32; optionally the entropy at
    each position. A :func:`collate_shared` batch gives the same values at ``response_mask``
    positions (and zeros elsewhere); its responses run ``chunk`` columns at a time (see
    :func:`_shared_chunks`), which changes the cost, not the values. ``temperature``: the
    distribution the responses were sampled from, ``softmax(logits / temperature)`` (1, or 0 for
    greedy: the logits as they are)."""
    scale = 1.0 / temperature if temperature > 0 else 1.0
    if "group" in batch:
        r_ids = batch["response_input_ids"]
        lp = torch.zeros(r_ids.shape, dtype=torch.float32, device=r_ids.device)
        ent = torch.zeros_like(lp) if with_entropy else None
        for rows, start, logits in _shared_chunks(model, batch, chunk):
            logits = logits * scale if scale != 1.0 else logits
            stop = start + logits.shape[1]
            lp[rows, start:stop] = token_logprobs(logits, r_ids[rows, start:stop])
            if with_entropy:
                ent[rows, start:stop] = entropy_from_logits(logits)
        mask, r_mask = batch["response_mask"], batch["response_attention_mask"].bool()
        out = torch.zeros(mask.shape, dtype=torch.float32, device=lp.device)
        out[mask] = lp[r_mask]
        if not with_entropy:
            return out, None
        entropy = torch.zeros_like(out)
        entropy[mask] = ent[r_mask]
        return out, entropy
    inputs = {k: v for k, v in batch.items() if k != "response_mask"}
    logits = model(**inputs).logits[:, :-1]
    logits = logits * scale if scale != 1.0 else logits
    out = torch.zeros(batch["input_ids"].shape, dtype=torch.float32, device=logits.device)
    out[:, 1:] = token_logprobs(logits, batch["input_ids"][:, 1:])
    if not with_entropy:
        return out, None
    entropy = torch.zeros_like(out)
    entropy[:, 1:] = entropy_from_logits(logits)
    return out, entropy
