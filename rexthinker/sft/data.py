"""SFT samples -> token features -> padded batches.

The prompt is tokenised exactly as at inference (the shared prompt builder, the chat template, the
processor with the image), and the assistant turn is tokenised on its own and appended, so prompt
tokens are identical to what the model sees when it generates, and the label mask covers exactly
the assistant tokens: ``<think>…</think><answer>…</answer><|im_end|>\\n``. Where the chat template's
generation prompt already opens the turn (Qwen3.5: ``<think>\\n``), that opening is part of the prompt
and the labels start after it (:func:`rexthinker.generation.to_generate`): the model learns exactly
the tokens it generates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from rexthinker.data.sample import RefSample
from rexthinker.generation import render_request, to_generate
from rexthinker.models.families import QWEN2_5_VL, Family
from rexthinker.prompts import target_text
from rexthinker.train.features import IGNORE, Features, collate

END_OF_TURN = "<|im_end|>\n"


def build_features(sample: RefSample, processor, template: str = "train", instruction: str = "system",
                   weights: dict[str, float] | None = None, family: Family = QWEN2_5_VL) -> Features:  # fmt: skip
    """``weights``: the loss weights of :class:`~rexthinker.sft.config.SFTLossConfig` (None or {}: 1 each);
    ``family``: the model family whose box frame the hints and the answer are written in."""
    request = render_request(sample, processor, template, instruction, family=family)
    enc = processor(text=[request.prompt], images=[request.image], return_tensors="pt")
    target = to_generate(request.prompt, target_text(sample, request.info)) + END_OF_TURN
    tokens = processor.tokenizer(target, add_special_tokens=False, return_tensors="pt", return_offsets_mapping=bool(weights))
    target_ids, prompt_ids = tokens["input_ids"][0], enc["input_ids"][0]
    token_weights = None
    if weights:
        token_weights = torch.cat([torch.zeros(prompt_ids.numel()), span_weights(target, tokens["offset_mapping"][0].tolist(), weights)])
    return Features(
        input_ids=torch.cat([prompt_ids, target_ids]),
        labels=torch.cat([torch.full_like(prompt_ids, IGNORE), target_ids]),
        mm_token_type_ids=torch.cat([enc["mm_token_type_ids"][0], torch.zeros_like(target_ids)]),
        pixel_values=enc["pixel_values"],
        image_grid_thw=enc["image_grid_thw"],
        weights=token_weights,
    )


def span_weights(text: str, offsets: list[list[int]], weights: dict[str, float]) -> torch.Tensor:
    """The loss weight of each token of ``text`` (``offsets``: its character span): 1, or the weight
    of a pattern whose match (its first group, when it has one) the token overlaps; the largest
    such weight when several do."""
    out, hit = torch.ones(len(offsets)), [False] * len(offsets)
    for pattern, weight in weights.items():
        for match in re.finditer(pattern, text):
            a, z = match.span(1 if match.re.groups else 0)
            for j, (x, y) in enumerate(offsets):
                if x < z and y > a:
                    out[j] = max(float(out[j]), weight) if hit[j] else weight
                    hit[j] = True
    return out


class SFTDataset(torch.utils.data.Dataset):
    """Features on demand; a sample longer than ``max_length`` yields ``None`` (counted, skipped)."""

    def __init__(self, samples: Sequence[RefSample], processor, max_length: int, template: str = "train", instruction: str = "system",
                 weights: dict[str, float] | None = None, family: Family = QWEN2_5_VL):  # fmt: skip
        self.samples, self.processor, self.max_length = samples, processor, max_length
        self.template, self.instruction, self.weights, self.family = template, instruction, weights, family

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Features | None:
        features = build_features(self.samples[index], self.processor, self.template, self.instruction, self.weights, self.family)
        return features if features.input_ids.numel() <= self.max_length else None


def epoch_order(num_samples: int, epoch: int, seed: int) -> np.ndarray:
    """The shuffled sample order of one epoch: the same on every rank and every restart."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def step_batches(num_samples: int, seed: int, micro: int, accum: int, rank: int, world: int,
                 lengths: Sequence[int] | None = None, window: int = 0):  # fmt: skip
    """Yield ``(epoch, step_in_epoch, [micro-batch index lists for this rank])`` forever.

    One optimizer step consumes ``micro * accum * world`` samples; an epoch's tail that does not
    fill a whole step is dropped (its samples come first in a later epoch's shuffle, on average).
    With ``window`` > 0 and ``lengths`` (one sort key per sample), each run of ``window`` steps of the
    shuffled epoch is sorted by length before it is cut into steps, and those steps are shuffled
    again: a batch then holds samples of similar length, so little of it is padding, while every
    sample is still seen once per epoch (:func:`length_grouped_order`).
    """
    per_step = micro * accum * world
    if num_samples < per_step:
        raise ValueError(f"{num_samples} training samples cannot fill one step of {per_step} (batch x accum x processes)")
    epoch = 0
    while True:
        order = epoch_order(num_samples, epoch, seed)
        if window > 0 and lengths is not None:
            order = length_grouped_order(order, lengths, per_step, window, seed, epoch)
        for step in range(num_samples // per_step):
            chunk = order[step * per_step : (step + 1) * per_step]
            mine = chunk[rank::world]
            yield epoch, step, [mine[i * micro : (i + 1) * micro].tolist() for i in range(accum)]
        epoch += 1


def length_grouped_order(order: np.ndarray, lengths: Sequence[int], per_step: int, window: int, seed: int, epoch: int) -> np.ndarray:
    """``order`` with each run of ``window * per_step`` samples sorted by ``lengths``, then its
    whole steps shuffled (the same on every rank and every restart). The tail that fills no whole
    step stays last, as :func:`step_batches` drops it."""
    keys = np.asarray(lengths)
    whole = len(order) // per_step * per_step
    span = window * per_step
    runs = [order[a : min(a + span, whole)] for a in range(0, whole, span)]
    steps = [run[np.argsort(keys[run], kind="stable")].reshape(-1, per_step) for run in runs]
    steps = np.concatenate(steps) if steps else np.empty((0, per_step), dtype=order.dtype)
    shuffled = steps[np.random.default_rng([seed, epoch, 1]).permutation(len(steps))]
    return np.concatenate([shuffled.reshape(-1), order[whole:]])


def length_key(sample: RefSample) -> int:
    """A cheap stand-in for a sample's token count, to group similar lengths into a batch: its
    trace's characters plus a hint list's worth per candidate (no tokenizer, no image decode)."""
    return len(sample.think or "") + len(sample.referring) + 20 * len(sample.candidate_boxes)


def steps_per_epoch(num_samples: int, micro: int, accum: int, world: int) -> int:
    return num_samples // (micro * accum * world)


class StepFeatures(torch.utils.data.Dataset):
    """Item ``i``: ``(epoch, [collated micro-batch dicts])`` of the ``i``-th planned optimizer step,
    where ``plan`` holds :func:`step_batches` rows. Built by DataLoader workers ahead of the step."""

    def __init__(self, dataset: SFTDataset, plan: list[tuple[int, int, list[list[int]]]], pad_id: int):
        self.dataset, self.plan, self.pad_id = dataset, plan, pad_id

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> tuple[int, list[dict]]:
        epoch, _, micro_indices = self.plan[i]
        return epoch, [collate([self.dataset[j] for j in idx], self.pad_id) for idx in micro_indices]


def _as_is(item):
    return item


def step_loader(dataset: SFTDataset, plan: list, pad_id: int, workers: int) -> torch.utils.data.DataLoader:
    """The steps of ``plan`` in order; ``workers > 0`` builds their features in that many processes
    (each a few steps ahead), 0 in this one. The batches do not depend on it. Workers are spawned,
    not forked: a fork of a process whose thread pools already ran (a vLLM engine, torch's
    OpenMP) can hang in the child."""
    return torch.utils.data.DataLoader(StepFeatures(dataset, plan, pad_id), batch_size=None, shuffle=False, num_workers=workers,
                                       collate_fn=_as_is, multiprocessing_context="spawn" if workers else None)  # fmt: skip
