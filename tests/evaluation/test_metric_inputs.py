"""What the metric reads: malformed and missing predictions, ground-truth checks, COCO RLE masks
and point predictions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evaluation.metric import evaluate
from evaluation.metric_inputs import GroundTruth, load_predictions
from evaluation.metric_report import markdown_report
from rexthinker.data.sample import RefSample
from rexthinker.rle import compress as compress_rle_counts
from rexthinker.rle import counts as rle_counts
from rexthinker.rle import decode as rle_to_mask
from rexthinker.rle import decode_strings as _decode_count_strings
from rexthinker.rle import encode as mask_to_rle

from .conftest import GOLDEN_GT, GOLDEN_PRED
from .reference_loop import reference_loop_summary


def decode_mask(rle):
    """A mask as the metric reads it (COCO's reading: short runs end in background)."""
    return rle_to_mask(rle, exact=False)


A, B = [0, 0, 10, 10], [20, 20, 30, 30]


def gt_row(sample_id, answers, domain="attribute", **extra) -> dict:
    return {"id": sample_id, "answer_boxes": answers, "candidate_boxes": [A, B], "domain": domain,
            "sub_domain": domain + "_sub", **extra}  # fmt: skip


# --- predictions --------------------------------------------------------------------------------


def test_malformed_rows_are_reported_with_file_and_line_and_scored_as_missing(tmp_path):
    path = tmp_path / "pred.jsonl"
    path.write_text(
        '{"id": "a", "extracted_predictions": [[0, 0, 10, 10]]}\n'
        "not json\n"
        "\n"
        '{"id": "b", "extracted_predictions": [[0, 0, 10]]}\n'
        '{"id": "r1", "extracted_predictions": [[0, 0, 10, 10], "x"]}\n'
        '{"extracted_predictions": []}\n'
        '{"id": "c", "extracted_predictions": [[0, 0, NaN, 10]]}\n'
        '{"id": "d", "extracted_predictions": [[true, 0, 10, 10]]}\n'
        '{"id": "e", "extracted_predictions": null}\n'
        '[1, 2]\n'
        '{"id": "r2", "extracted_predictions": [[], [0, 0, 10, 10]]}\n'
        '{"id": "r3", "extracted_predictions": "None"}\n'
    )  # fmt: skip
    gt = [gt_row(i, [A]) for i in "abcdef"] + [gt_row(f"r{k}", [], "rejection") for k in range(1, 5)]
    result = evaluate(gt, load_predictions(path))
    assert sorted(e.line for e in result.malformed) == [2, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert all(e.file == str(path) for e in result.malformed)
    assert "treated as missing" in str(result.malformed[1])
    assert result.per_sample.matches[:, 0].tolist() == [1, 0, 0, 0, 0, 0]  # malformed rows score nothing
    assert result.missing_ids == ["f", "r4"] and result.missing_rejection_ids == ["r4"]
    # Rejections are judged as the official script does, on the row's emptiness: r1 and r3 predict
    # something (wrong), r2's first entry is empty (right, whatever follows), r4 has no row (right).
    assert (result.rejection_score, result.rejection_total) == (2, 4)
    notes = markdown_report(result)
    assert "10 malformed prediction rows" in notes and f"{path} line 2: not valid JSON" in notes
    assert "2 ground-truth ids have no prediction row (1 of them rejection samples" in notes


def test_empty_spellings_duplicates_and_unknown_ids():
    gt = [gt_row("a", [A]), gt_row("r1", [], "rejection"), gt_row("r2", [], "rejection"), gt_row("r3", [], "rejection")]
    preds = [
        {"id": "a", "extracted_predictions": [[]]},  # no prediction: (0, 0)
        {"id": "r1", "extracted_predictions": [[]]},
        {"id": "r2", "extracted_predictions": []},
        {"id": "r3", "extracted_predictions": [B]},
        {"id": "a", "extracted_predictions": [A]},  # the last row of an id wins
        {"id": "zzz", "extracted_predictions": [A]},
        {"id": 7, "extracted_predictions": []},
    ]
    result = evaluate(gt, preds)
    assert result.rejection_score == 2 and result.rejection_total == 3
    assert result.domains["attribute"].recall_50 == 1.0
    assert result.duplicate_ids == ["a"] and result.unknown_ids == ["zzz", "7"]
    assert evaluate(gt, preds[:4]).domains["attribute"].precision_50 == 0.0


def test_integer_ids_join_string_ids():
    gt = [{**gt_row("1", [A]), "id": 1}]
    assert evaluate(gt, [{"id": "1", "extracted_predictions": [A]}]).all_data.recall_50 == 1.0


def test_densityf1_uses_the_person_count_only_to_zero_it():
    no_people = [{**gt_row("a", [A, B]), "candidate_boxes": []}]
    preds = [{"id": "a", "extracted_predictions": [A, B, [40, 40, 50, 50]]}]
    assert evaluate(no_people, preds).all_data.densityf1_50 == 0.0
    assert evaluate(no_people, preds, mode="corrected").all_data.densityf1_50 == pytest.approx(0.8 * 2 / 3)
    many_people = [{**gt_row("a", [A, B]), "candidate_boxes": [A] * 9}]
    # F1 = 0.8, penalty min(1, 2/3): the image's 9 persons cancel out
    assert evaluate(many_people, preds).all_data.densityf1_50 == pytest.approx(0.8 * 2 / 3)


# --- ground truth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, message",
    [
        ([gt_row("a", [])], "only the rejection domain may be empty"),
        ([gt_row("a", [A]), gt_row("a", [B])], "appears more than once"),
        ([gt_row("a", [[0, 0, 10]])], "finite numbers"),
        ([gt_row("a", [[0, 0, "10", 10]])], "finite numbers"),
        ([{"id": "a", "answer_boxes": [A]}], "needs"),
        ([{**gt_row("a", [A]), "domain": None}], "must be strings"),
    ],
)
def test_bad_ground_truth_fails_loudly(rows, message):
    with pytest.raises(ValueError, match=message):
        GroundTruth(rows)


def test_refsamples_are_accepted():
    samples = [
        RefSample(id=r["id"], image_name="x.png", referring="r", candidate_boxes=r["candidate_boxes"],
                  answer_boxes=r["answer_boxes"], domain=r["domain"], sub_domain=r["sub_domain"])
        for r in GOLDEN_GT
    ]  # fmt: skip
    assert evaluate(samples, GOLDEN_PRED).summary() == evaluate(GOLDEN_GT, GOLDEN_PRED).summary()
    samples[0].box_frame = (448, 448)
    with pytest.raises(ValueError, match="resized frame"):
        evaluate(samples, GOLDEN_PRED)


# --- COCO RLE -----------------------------------------------------------------------------------

# Strings written by pycocotools 2.0.11 (mask.encode) for these masks.
COCO_STRINGS = [
    ([[0, 0, 0, 1], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], "41116OM"),
    ([[1, 1, 1]] * 3, "09"),
    ([[0, 0], [0, 0]], "4"),
    ([[0, 0, 0, 1, 1], [1, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 1], [0, 1, 0, 1, 0], [0, 1, 0, 0, 1]],
     "1154LN1O0OO010O0"),
]  # fmt: skip


@pytest.mark.parametrize("mask, counts", COCO_STRINGS)
def test_coco_strings(mask, counts):
    mask = np.array(mask, dtype=np.uint8)
    rle = {"size": list(mask.shape), "counts": counts}
    assert (decode_mask(rle) == mask).all()
    assert compress_rle_counts(mask_to_rle(mask)["counts"]) == counts
    assert (decode_mask(mask_to_rle(mask)) == mask).all()  # the uncompressed list form
    assert (decode_mask({**rle, "counts": counts.encode()}) == mask).all()


def test_coco_string_with_long_runs():
    rle = {"size": [1000, 800], "counts": "h]S6Tg0T8000`lVb0"}  # rows 120:860, columns 200:203
    expected = np.zeros((1000, 800), dtype=np.uint8)
    expected[120:860, 200:203] = 1
    assert (decode_mask(rle) == expected).all()


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_rle_round_trip(mask):
    runs = mask_to_rle(mask)["counts"]
    rle = {"size": list(mask.shape), "counts": compress_rle_counts(runs)}
    assert rle_counts(rle).tolist() == runs
    assert (decode_mask(rle) == rle_to_mask(mask_to_rle(mask))).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 9))), max_size=6))
def test_many_strings_decode_at_once(masks):
    runs = [mask_to_rle(m)["counts"] for m in masks]
    texts = [compress_rle_counts(r).encode() for r in runs]
    texts.insert(len(texts) // 2, b"")  # an empty string holds no runs
    flat, per_text = _decode_count_strings(texts)
    expected = runs[: len(runs) // 2] + [[]] + runs[len(runs) // 2 :]
    assert per_text.tolist() == [len(r) for r in expected]
    assert flat.tolist() == [c for r in expected for c in r]


@pytest.mark.parametrize("counts", ["4!", "5O", "ÿ"])
def test_bad_rle_strings_raise(counts):
    with pytest.raises(ValueError):
        rle_counts({"size": [2, 2], "counts": counts})


# --- points -------------------------------------------------------------------------------------


def _rle(height, width, rows, cols) -> dict:
    mask = np.zeros((height, width), dtype=bool)
    mask[rows, cols] = True
    return {"size": [height, width], "counts": compress_rle_counts(mask_to_rle(mask)["counts"])}


LEFT = _rle(20, 30, slice(0, 10), slice(0, 10))  # x 0..9, y 0..9
BOTH = _rle(20, 30, slice(0, 10), slice(0, 20))  # x 0..19, y 0..9: contains LEFT
RIGHT = _rle(20, 30, slice(0, 10), slice(10, 20))  # x 10..19


def point_gt(sample_id, masks, domain="attribute"):
    return gt_row(sample_id, [A] * len(masks), domain, answer_segmentations=masks)


def test_point_mode():
    gt = [
        point_gt("a", [LEFT, RIGHT]),
        point_gt("b", [BOTH, LEFT]),  # greedy: BOTH takes the first point (inside LEFT too), LEFT gets nothing
        point_gt("c", [LEFT]),
        point_gt("d", [LEFT]),
        point_gt("r", [], "rejection"),
    ]
    preds = [
        {"id": "a", "extracted_predictions": [[15, 5], [4.5, 5], [25, 5]]},  # 4.5 rounds to 4
        {"id": "b", "extracted_predictions": [[5, 5], [15, 5]]},
        {"id": "c", "extracted_predictions": [[9.5, 5.5], [-1, 5], [5, 30]]},  # 9.5 -> 10 (even): outside
        {"id": "d", "extracted_predictions": []},
        {"id": "r", "extracted_predictions": [[3, 3]]},
    ]
    result = evaluate(gt, preds)
    assert result.kind == "point" and result.thresholds == ()
    assert result.per_sample.matches[:, 0].tolist() == [2, 1, 0, 0]
    assert result.per_sample.precision[:, 0].tolist() == [2 / 3, 0.5, 0.0, 1.0]  # no point: precision 1 (official)
    assert result.rejection_score == 0
    assert result.summary() == reference_loop_summary(gt, preds)
    assert result.all_data.recall_50 is None and result.all_data.recall_point == pytest.approx((1 + 0.5) / 4)
    corrected = evaluate(gt, preds, mode="corrected")
    assert corrected.per_sample.matches[:, 0].tolist() == [2, 2, 0, 0]
    assert corrected.per_sample.precision[:, 0].tolist() == [2 / 3, 1.0, 0.0, 0.0]
    table = markdown_report([result, corrected])
    assert "| attribute | Overall |" in table


def test_point_files_need_masks_and_points_only():
    with pytest.raises(ValueError, match="answer_segmentations"):
        evaluate([gt_row("a", [A])], [{"id": "a", "extracted_predictions": [[1, 2]]}])
    gt = [point_gt("a", [LEFT]), point_gt("b", [LEFT])]
    preds = [{"id": "a", "extracted_predictions": [[1, 2]]}, {"id": "b", "extracted_predictions": [A]}]
    result = evaluate(gt, preds)
    assert result.kind == "point" and result.missing_ids == []
    assert result.per_sample.matches[:, 0].tolist() == [1, 0]
    assert "point file needs [x, y] points" in result.malformed[0].reason and result.malformed[0].line == 2


def test_point_masks_in_both_forms_and_short_rles():
    short = {"size": [2, 2], "counts": [0, 3]}  # 3 of 4 pixels listed (all foreground): (1, 1) is background
    as_list = {"size": [20, 30], "counts": mask_to_rle(decode_mask(RIGHT))["counts"]}
    gt = [point_gt("a", [short, as_list]), point_gt("b", [LEFT])]
    preds = [
        {"id": "a", "extracted_predictions": [[1, 1], [0, 1], [15, 5]]},
        {"id": "b", "extracted_predictions": [[5, 5]]},
    ]
    result = evaluate(gt, preds)
    assert result.per_sample.matches[:, 0].tolist() == [2, 1]
    assert result.summary() == reference_loop_summary(gt, preds)


@pytest.mark.parametrize(
    "rle, message",
    [({"size": [2, 2], "counts": "4!"}, "mask 1: bad RLE"), ({"counts": "4"}, "mask 1: bad RLE")],
)
def test_bad_masks_are_named(rle, message):
    gt = [point_gt("a", [LEFT, rle])]
    with pytest.raises(ValueError, match=message):
        evaluate(gt, [{"id": "a", "extracted_predictions": [[1, 1]]}])


@st.composite
def rles(draw):
    """A mask's RLE in either form, sometimes cut short (the rest of the pixels are background)."""
    mask = draw(arrays(np.bool_, st.tuples(st.integers(1, 6), st.integers(1, 6))))
    runs = mask_to_rle(mask)["counts"]
    runs = runs[: draw(st.integers(0, len(runs)))]
    counts = compress_rle_counts(runs) if draw(st.booleans()) else runs
    return {"size": list(mask.shape), "counts": counts}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(rles(), max_size=3), min_size=1, max_size=4), st.data())
def test_mask_table_agrees_with_decoded_masks(masks_per_sample, data):
    gt = GroundTruth([point_gt(f"s{k}", masks) if masks else gt_row(f"s{k}", [], "rejection")
                      for k, masks in enumerate(masks_per_sample)])  # fmt: skip
    table = gt.masks()
    for sample, masks in enumerate(masks_per_sample):
        for k, rle in enumerate(masks):
            decoded = decode_mask(rle)
            x = np.array(data.draw(st.lists(st.integers(-1, 7), min_size=1, max_size=8)))
            y = np.array(data.draw(st.lists(st.integers(-1, 7), min_size=x.size, max_size=x.size)))
            expected = [0 <= a < decoded.shape[1] and 0 <= b < decoded.shape[0] and decoded[b, a] == 1 for a, b in zip(x, y)]
            mask = np.full(x.size, table.first[sample] + k)
            assert table.contains(mask, x, y).tolist() == expected
