"""SFT features: the prompt is the inference prompt byte for byte, labels cover exactly the
assistant turn, boxes are in the model frame."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoProcessor

from rexthinker.coords import to_model_frame
from rexthinker.data.sources import open_samples
from rexthinker.generation import render
from rexthinker.prompts import pixel_limits, target_text
from rexthinker.sft.data import END_OF_TURN, build_features, step_batches
from rexthinker.sft.trainer import label_weight, token_loss_sum
from rexthinker.train.features import IGNORE, collate


def test_prompt_tokens_equal_inference_tokens_and_labels_cover_the_assistant_turn(tiny_model_path, sft_data):
    processor = AutoProcessor.from_pretrained(tiny_model_path)
    samples = open_samples([str(sft_data / "train")])
    for sample in [samples[i] for i in range(6)]:
        features = build_features(sample, processor)
        (_, info, prompt, image), = list(render([sample], processor))
        inference = processor(text=[prompt], images=[image], return_tensors="pt")["input_ids"][0]
        n = inference.numel()
        assert torch.equal(features.input_ids[:n], inference)
        assert (features.labels[:n] == IGNORE).all() and (features.labels[n:] != IGNORE).all()
        labelled = processor.tokenizer.decode(features.labels[n:])
        assert labelled == target_text(sample, info) + END_OF_TURN
        # The whole conversation is what the chat template renders for an assistant turn.
        lo, hi = pixel_limits(processor)
        conversation = processor.tokenizer.decode(features.input_ids)
        assert conversation.endswith("<|im_start|>assistant\n" + labelled)
        assert features.mm_token_type_ids.sum() == (features.input_ids == processor.image_token_id).sum()


def test_target_boxes_are_in_the_model_frame(tiny_model_path, sft_data):
    processor = AutoProcessor.from_pretrained(tiny_model_path)
    samples = open_samples([str(sft_data / "train")])
    sample = next(s for s in (samples[i] for i in range(len(samples))) if s.answer_boxes)
    (_, info, _, image), = list(render([sample], processor))
    assert info.model_size != sample.image_size  # the test is only meaningful when the frame changes
    expected = sorted(to_model_frame(b, sample.image_size, info.model_size) for b in sample.answer_boxes)
    assert sorted(info.answer_boxes) == expected
    text = target_text(sample, info)
    for box in expected:
        assert str(box) in text


def test_qwen3_vl_features_hold_0_1000_hints_and_targets(sft_data):
    from rexthinker.models import tiny
    from rexthinker.models.families import QWEN3_VL

    processor = AutoProcessor.from_pretrained(tiny.get("tiny", "qwen3_vl"))
    samples = open_samples([str(sft_data / "train")])
    sample = next(s for s in (samples[i] for i in range(len(samples))) if s.answer_boxes)
    features = build_features(sample, processor, family=QWEN3_VL)
    frame = QWEN3_VL.box_frame(*sample.image_size, *pixel_limits(processor))
    (_, info, prompt, _), = list(render([sample], processor, family=QWEN3_VL))
    assert info.hint_boxes == [frame.encode(b, sample.image_size) for b in sample.candidate_boxes]
    assert str(info.hint_boxes) in prompt
    labelled = processor.tokenizer.decode(features.labels[features.labels != IGNORE])
    assert labelled == target_text(sample, info) + END_OF_TURN
    for box in (frame.encode(b, sample.image_size) for b in sample.answer_boxes):
        assert str(box) in labelled


def test_qwen3_5_trains_on_the_turn_after_the_think_its_template_opens(sft_data):
    """Qwen3.5's generation prompt ends with ``<think>\\n``: the labels start after it, so the whole
    sequence holds exactly one ``<think>`` after the generation prompt (the prompt's), and the prompt
    is the inference prompt token for token. The opened think put back in front of the labelled text is
    a well-formed completion in the 0-1000 frame."""
    from rexthinker.contracts.completion import parse_completion
    from rexthinker.generation import assistant_turn
    from rexthinker.models import tiny
    from rexthinker.models.families import QWEN3_5

    processor = AutoProcessor.from_pretrained(tiny.get("tiny", "qwen3_5"))
    think, end_think = processor.tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    header = processor.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    samples = open_samples([str(sft_data / "train")])
    for sample in [samples[i] for i in range(4)]:
        features = build_features(sample, processor, family=QWEN3_5)
        (_, info, prompt, image), = list(render([sample], processor, family=QWEN3_5))
        assert prompt.endswith("<|im_start|>assistant\n<think>\n")
        inference = processor(text=[prompt], images=[image], return_tensors="pt")["input_ids"][0]
        n = inference.numel()
        assert torch.equal(features.input_ids[:n], inference)
        assert (features.labels[:n] == IGNORE).all() and (features.labels[n:] != IGNORE).all()
        ids = features.input_ids.tolist()
        start = max(i for i in range(len(ids)) if ids[i : i + len(header)] == header) + len(header)  # after the generation prompt
        assert ids[start:].count(think) == 1 and ids[start] == think and start < n
        assert features.labels[n:].tolist().count(think) == 0 and features.labels[n:].tolist().count(end_think) == 1
        labelled = processor.tokenizer.decode(features.labels[n:])
        assert labelled == target_text(sample, info).removeprefix("<think>") + END_OF_TURN
        completion = parse_completion(assistant_turn(prompt, labelled.removesuffix(END_OF_TURN)))
        assert completion.strict_layout and completion.think == "\n" + sample.think
        assert completion.boxes == info.answer_boxes and info.frame.kind == "relative_1000"


def test_collate_pads_and_counts_skipped(tiny_model_path, sft_data):
    processor = AutoProcessor.from_pretrained(tiny_model_path)
    samples = open_samples([str(sft_data / "train")])
    a, b = build_features(samples[0], processor), build_features(samples[1], processor)
    batch = collate([a, None, b], processor.tokenizer.pad_token_id)
    assert int(batch["skipped"]) == 1
    length = max(a.input_ids.numel(), b.input_ids.numel())
    assert batch["input_ids"].shape == (2, length)
    assert int(batch["attention_mask"].sum()) == a.input_ids.numel() + b.input_ids.numel()
    assert batch["pixel_values"].shape[0] == a.pixel_values.shape[0] + b.pixel_values.shape[0]
    assert collate([None], 0) == {"skipped": torch.tensor(1)}


def test_step_batches_partition_each_step_across_ranks():
    steps = [step_batches(20, seed=3, micro=2, accum=2, rank=r, world=2) for r in range(2)]
    seen = set()
    for _ in range(2):  # 2 steps x 8 samples
        parts = [next(g) for g in steps]
        ids = [i for _, _, micro in parts for m in micro for i in m]
        assert len(ids) == len(set(ids)) == 8
        seen |= set(ids)
    assert len(seen) == 16



def test_length_grouped_steps_see_every_sample_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(100, 800, size=203).tolist()  # 203: a tail of 3 that fills no step of 8
    epochs = {}
    for window in (0, 4):
        ranks = [step_batches(203, seed=5, micro=2, accum=2, rank=r, world=2, lengths=lengths, window=window) for r in range(2)]
        steps = [[next(g) for _ in range(2 * 25)] for g in ranks]  # two epochs of 25 steps
        for epoch in (0, 1):
            ids = [i for rank in steps for e, _, micro in rank if e == epoch for m in micro for i in m]
            assert len(ids) == len(set(ids)) == 200  # each sample once, across ranks and micro-batches
        epochs[window] = [[i for rank in steps for m in rank[k][2] for i in m] for k in range(25)]  # epoch 0, per step
        again = step_batches(203, seed=5, micro=2, accum=2, rank=0, world=2, lengths=lengths, window=window)
        assert [next(again) for _ in range(25)] == steps[0][:25]  # a restart draws the same steps
    spread = {w: np.mean([np.ptp([lengths[i] for i in step]) for step in epochs[w]]) for w in epochs}
    assert spread[4] < spread[0] / 3


def test_loss_weights_weigh_the_matched_spans_of_the_answer(tiny_model_path, sft_data):
    processor = AutoProcessor.from_pretrained(tiny_model_path)
    samples = open_samples([str(sft_data / "train")])
    sample = samples[0]
    (_, info, _, _), = list(render([sample], processor))
    text = target_text(sample, info)
    attributes, marks = re.findall(r"Person \d+[^:\n]*: ([^→\n]+) →", text), re.findall(r"→ (⚠|❌|✅)", text)
    assert attributes and marks
    weights = {r"Person \d+[^:\n]*: ([^→\n]+) →": 5.0, r"→ (⚠|❌|✅)": 4.0}
    plain, weighted = build_features(sample, processor), build_features(sample, processor, weights=weights)
    assert plain.weights is None and torch.equal(plain.input_ids, weighted.input_ids)
    labelled = weighted.labels != IGNORE
    assert (weighted.weights[~labelled] == 0).all() and set(weighted.weights[labelled].tolist()) == {1.0, 4.0, 5.0}
    decode = processor.tokenizer.decode
    five = decode(weighted.input_ids[weighted.weights == 5.0])
    assert all(attribute in five for attribute in attributes) and "Person" not in five
    assert re.findall("⚠|❌|✅", decode(weighted.input_ids[weighted.weights == 4.0])) == marks  # a token may hold more

    batch = collate([weighted, plain], processor.tokenizer.pad_token_id)  # an item without weights weighs 1 a label
    assert torch.equal(batch["weights"][1, : plain.input_ids.numel()], plain.labels.ne(IGNORE).float())
    labels, w = batch["labels"], batch["weights"]
    logits = torch.randn(*labels.shape, 64, generator=torch.Generator().manual_seed(0))
    labels = labels.clamp(max=63).masked_fill(batch["labels"] == IGNORE, IGNORE)
    each = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="none")
    assert torch.allclose(token_loss_sum(logits, labels, w), (each * w[:, 1:].flatten()).sum())
    assert torch.allclose(token_loss_sum(logits, labels, labels.ne(IGNORE).float()), token_loss_sum(logits, labels))
    assert label_weight(dict(batch, labels=labels)) == pytest.approx(float(w[:, 1:][labels[:, 1:] != IGNORE].sum()))
    assert label_weight({"labels": labels}) == int((labels[:, 1:] != IGNORE).sum())
