"""Padding micro-batches of token features: right padding, ignored labels, mixed text and image rows."""

from __future__ import annotations

import torch

from rexthinker.train.features import IGNORE, Features, collate


def _features(ids: list[int], n_label: int, patches: int | None = None) -> Features:
    input_ids = torch.tensor(ids)
    labels = torch.full_like(input_ids, IGNORE)
    labels[len(ids) - n_label :] = input_ids[len(ids) - n_label :]
    image = patches is not None
    return Features(
        input_ids=input_ids, labels=labels, mm_token_type_ids=torch.tensor([1 if i == 9 else 0 for i in ids]),
        pixel_values=torch.full((patches, 4), float(len(ids))) if image else None,
        image_grid_thw=torch.tensor([[1, 1, patches]]) if image else None,
    )  # fmt: skip


def test_collate_right_pads_and_counts_dropped_samples():
    batch = collate([_features([5, 9, 9, 6, 7], 2, patches=2), None, _features([5, 8, 3], 1)], pad_id=0)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 9, 9, 6, 7], [5, 8, 3, 0, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[IGNORE, IGNORE, IGNORE, 6, 7], [IGNORE, IGNORE, 3, IGNORE, IGNORE]]))
    assert torch.equal(batch["mm_token_type_ids"], torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]))
    assert int(batch["skipped"]) == 1
    # only the image row contributes pixels
    assert torch.equal(batch["pixel_values"], torch.full((2, 4), 5.0))
    assert torch.equal(batch["image_grid_thw"], torch.tensor([[1, 1, 2]]))


def test_text_only_batches_carry_no_pixel_entries():
    batch = collate([_features([1, 2], 1), _features([3], 1)], pad_id=7)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels", "mm_token_type_ids", "skipped"]
    assert torch.equal(batch["input_ids"], torch.tensor([[1, 2], [3, 7]]))
    assert int(batch["skipped"]) == 0


def test_images_are_concatenated_in_row_order():
    batch = collate([_features([9, 1], 1, patches=1), _features([9, 9, 9, 2], 1, patches=3)], pad_id=0)
    assert torch.equal(batch["pixel_values"][:, 0], torch.tensor([2.0, 4.0, 4.0, 4.0]))
    assert torch.equal(batch["image_grid_thw"], torch.tensor([[1, 1, 1], [1, 1, 3]]))


def test_a_micro_batch_with_nothing_kept_only_reports_skipped():
    assert collate([None, None], pad_id=0) == {"skipped": torch.tensor(2)}
