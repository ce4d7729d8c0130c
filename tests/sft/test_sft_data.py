"""SFT features: the prompt is the inference prompt byte for byte, labels cover exactly the
assistant turn, boxes are in the model frame."""

from __future__ import annotations

import torch
from transformers import AutoProcessor

from rexthinker.coords import to_model_frame
from rexthinker.data.sources import open_samples
from rexthinker.generation import render
from rexthinker.prompts import pixel_limits, target_text
from rexthinker.sft.data import END_OF_TURN, build_features, step_batches
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
