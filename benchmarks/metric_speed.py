"""Speed of the HumanRef metric: vectorised ``evaluation.metric`` against a per-box Python loop.

    .venv/bin/python benchmarks/metric_speed.py                  # 6,000 samples, best of 3
    .venv/bin/python benchmarks/metric_speed.py --samples 2000 --repeats 1 --point-samples 300

Generates, from a fixed seed, a HumanRef-like benchmark: the public domain / sub-domain sizes
(scaled to ``--samples``), 4 to 30 candidate persons per image (mean about 8.6), 2.2 targets per
expression on average with a tail past 10, overlapping neighbours (so some predictions reach the
threshold with two targets and the greedy order matters), and a box model that jitters, misses,
adds and duplicates boxes, answers ``[]`` / ``[[]]`` and leaves a few ids out. A point model over
rectangular masks (compressed COCO RLE) is compared with the loop on a subset (``--point-samples``;
the loop decodes every mask, as the official script does, which is slow) and timed alone on all
samples ("vs loop" compares time per sample).

Both implementations run on the same parsed rows in the same process (JSON parsing is not timed);
the script asserts they agree to the last bit before printing the table. Target: the vectorised
metric scores the 6,000-sample benchmark in well under a second for one model. The official script
has no such measurement; this is ours.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere

from evaluation.metric import evaluate  # noqa: E402
from evaluation.metric_inputs import GroundTruth  # noqa: E402
from rexthinker.rle import compress as compress_rle_counts  # noqa: E402
from tests.evaluation.reference_loop import reference_loop_summary  # noqa: E402

# The public benchmark's sub-domains and sizes (6,000 expressions).
SUB_DOMAINS = (
    ("attribute", "1000_attribute_retranslated_with_mask", 1000),
    ("position", "500_inner_position_data_with_mask", 500),
    ("position", "500_outer_position_data_with_mask", 500),
    ("celebrity", "1000_celebrity_data_with_mask", 1000),
    ("interaction", "500_inner_interaction_data_with_mask", 500),
    ("interaction", "500_outer_interaction_data_with_mask", 500),
    ("reasoning", "229_outer_position_two_stage_with_mask", 229),
    ("reasoning", "271_positive_then_negative_reasoning_with_mask", 271),
    ("reasoning", "500_inner_position_two_stage_with_mask", 500),
    ("rejection", "1000_rejection_referring_with_mask", 1000),
)


def _box(rng, width: int, height: int) -> list[float]:
    w = float(rng.uniform(40, 260))
    h = min(height - 2.0, w * float(rng.uniform(1.4, 3.0)))
    x0, y0 = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
    return [round(x0, 2), round(y0, 2), round(x0 + w, 2), round(y0 + h, 2)]


def _neighbour(rng, box: list[float], width: int, height: int) -> list[float]:
    """A person standing close behind ``box``: shifted by a fraction of its size."""
    w, h = box[2] - box[0], box[3] - box[1]
    dx, dy = float(rng.uniform(-0.3, 0.3)) * w, float(rng.uniform(-0.15, 0.15)) * h
    x0 = min(max(box[0] + dx, 0.0), width - w)
    y0 = min(max(box[1] + dy, 0.0), height - h)
    return [round(x0, 2), round(y0, 2), round(x0 + w, 2), round(y0 + h, 2)]


def _jitter(rng, box: list[float], scale: float) -> list[float]:
    w, h = box[2] - box[0], box[3] - box[1]
    noise = rng.normal(0.0, scale, 4) * np.array([w, h, w, h])
    return [round(float(v), 1) for v in np.asarray(box) + noise]


def _n_targets(rng, n_candidates: int) -> int:
    u = rng.random()
    if u < 0.6:
        k = 1
    elif u < 0.95:
        k = int(rng.integers(2, 6))
    elif u < 0.99:
        k = int(rng.integers(6, 11))
    else:
        k = int(rng.integers(11, 20))
    return min(k, n_candidates)


def _rect_rle(box: list[float], width: int, height: int) -> dict:
    """Compressed COCO RLE of the pixels inside ``box`` shrunk by 10% (a crude person mask)."""
    w, h = box[2] - box[0], box[3] - box[1]
    x0, x1 = int(box[0] + 0.1 * w), max(int(box[0] + 0.1 * w) + 1, int(box[2] - 0.1 * w))
    y0, y1 = int(box[1] + 0.1 * h), max(int(box[1] + 0.1 * h) + 1, int(box[3] - 0.1 * h))
    x1, y1 = min(x1, width), min(y1, height)
    counts = [x0 * height + y0]
    for _ in range(x0, x1 - 1):
        counts += [y1 - y0, height - (y1 - y0)]
    counts += [y1 - y0, width * height - (x1 - 1) * height - y1]
    return {"size": [height, width], "counts": compress_rle_counts(counts)}


def make_benchmark(n_samples: int = 6000, seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """Ground-truth rows, box-model predictions and point-model predictions, all deterministic."""
    rng = np.random.default_rng(seed)
    total = sum(n for _, _, n in SUB_DOMAINS)
    sizes = [max(1, round(n * n_samples / total)) for _, _, n in SUB_DOMAINS]
    gt_rows, box_preds, point_preds = [], [], []
    for (domain, sub_domain, _), size in zip(SUB_DOMAINS, sizes):
        for k in range(size):
            width, height = int(rng.integers(900, 2000)), int(rng.integers(900, 2000))
            candidates = [_box(rng, width, height) for _ in range(int(np.clip(rng.poisson(6.6), 2, 24)))]
            for i in range(len(candidates)):
                if rng.random() < 0.3:
                    candidates.append(_neighbour(rng, candidates[i], width, height))
            order = rng.permutation(len(candidates))
            candidates = [candidates[i] for i in order]
            if domain == "rejection":
                targets = []
            else:
                chosen = rng.choice(len(candidates), _n_targets(rng, len(candidates)), replace=False)
                targets = [candidates[i] for i in chosen]
            sample_id = f"{sub_domain}-{k:05d}"
            gt_rows.append({
                "id": sample_id, "image_name": f"{sample_id}.jpg", "referring": "the person", "candidate_boxes": candidates,
                "answer_boxes": targets, "answer_segmentations": [_rect_rle(b, width, height) for b in targets],
                "domain": domain, "sub_domain": sub_domain,
            })  # fmt: skip
            boxes = _box_prediction(rng, candidates, targets)
            if boxes is not None:
                box_preds.append({"id": sample_id, "extracted_predictions": boxes})
                point_preds.append({"id": sample_id, "extracted_predictions": _points_from(rng, boxes)})
    for j in rng.choice(len(box_preds), len(box_preds) // 200, replace=False):  # a few ids twice
        box_preds.append(dict(box_preds[int(j)]))
    return gt_rows, box_preds, point_preds


def _box_prediction(rng, candidates: list, targets: list) -> list | None:
    u = rng.random()
    if u < 0.02:
        return None  # the id is missing from the file
    if not targets:
        if u < 0.45:
            return []
        if u < 0.5:
            return [[]]
        return [candidates[int(i)] for i in rng.choice(len(candidates), int(rng.integers(1, 3)), replace=False)]
    if u < 0.03:
        return [[]]
    if u < 0.08:
        return [list(c) for c in candidates]  # the "every person" baseline
    boxes = [_jitter(rng, t, 0.03) if rng.random() < 0.7 else list(t) for t in targets if rng.random() < 0.85]
    for _ in range(int(rng.poisson(0.5))):
        boxes.append(_jitter(rng, candidates[int(rng.integers(len(candidates)))], 0.05))
    if len(targets) >= 2 and rng.random() < 0.2:  # a box between two targets
        a, b = targets[0], targets[1]
        boxes.append([round((p + q) / 2, 1) for p, q in zip(a, b)])
    if boxes and rng.random() < 0.03:
        boxes.append(list(boxes[0]))  # a duplicated box
    return [boxes[int(i)] for i in rng.permutation(len(boxes))]


def _points_from(rng, boxes: list) -> list:
    points = []
    for box in boxes:
        if len(box) == 4:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            points.append([round(cx + float(rng.normal(0, 15)), 1), round(cy + float(rng.normal(0, 30)), 1)])
    return points if points or boxes != [[]] else [[]]


def _best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--point-samples", type=int, default=1000, help="subset scored in point mode (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    gt_rows, box_preds, point_preds = make_benchmark(args.samples, args.seed)
    made = time.perf_counter() - start
    scored = [r for r in gt_rows if r["domain"] != "rejection"]
    print(
        f"{len(gt_rows)} samples ({len(gt_rows) - len(scored)} rejection), "
        f"{sum(len(r['candidate_boxes']) for r in gt_rows) / len(gt_rows):.1f} candidates and "
        f"{sum(len(r['answer_boxes']) for r in scored) / len(scored):.2f} targets per expression, "
        f"{sum(len(p['extracted_predictions']) for p in box_preds)} predicted boxes; generated in {made:.1f} s\n"
    )

    rows = []
    t_loop, loop = _best_time(lambda: reference_loop_summary(gt_rows, box_preds), args.repeats)
    t_ref, ref = _best_time(lambda: evaluate(gt_rows, box_preds, mode="reference"), args.repeats)
    assert ref.summary() == loop, "vectorised metric and per-box loop disagree (box mode)"
    t_cor, _ = _best_time(lambda: evaluate(gt_rows, box_preds, mode="corrected"), args.repeats)
    gt = GroundTruth(gt_rows)
    t_pre, _ = _best_time(lambda: evaluate(gt, box_preds, mode="reference"), args.repeats)
    n = len(gt_rows)
    rows += [
        ("per-box Python loop", "box", "reference", n, t_loop),
        ("evaluation.metric", "box", "reference", n, t_ref),
        ("evaluation.metric", "box", "corrected", n, t_cor),
        ("evaluation.metric, GroundTruth reused", "box", "reference", n, t_pre),
    ]
    if args.point_samples:
        gt_sub = gt_rows[:: max(1, len(gt_rows) // args.point_samples)][: args.point_samples]
        keep = {r["id"] for r in gt_sub}
        pts = [p for p in point_preds if p["id"] in keep]
        t_ploop, ploop = _best_time(lambda: reference_loop_summary(gt_sub, pts), args.repeats)
        t_pvec, pvec = _best_time(lambda: evaluate(gt_sub, pts, mode="reference"), args.repeats)
        assert pvec.summary() == ploop, "vectorised metric and per-box loop disagree (point mode)"
        # from raw rows: a reused GroundTruth would keep the masks decoded by the previous repeat
        t_pall, _ = _best_time(lambda: evaluate(gt_rows, point_preds, mode="reference"), args.repeats)
        rows += [
            ("per-box Python loop", "point", "reference", len(gt_sub), t_ploop),
            ("evaluation.metric", "point", "reference", len(gt_sub), t_pvec),
            ("evaluation.metric", "point", "reference", n, t_pall),
        ]
    print("both implementations agree to the last bit\n")

    print(f"| implementation | predictions | mode | samples | seconds (best of {args.repeats}) | samples/s | vs loop |")
    print("|---|---|---|---|---|---|---|")
    loops = {kind: t / s for name, kind, _, s, t in rows if name.startswith("per-box")}
    for name, kind, mode, samples, seconds in rows:
        speedup = loops[kind] / (seconds / samples)
        print(f"| {name} | {kind} | {mode} | {samples} | {seconds:.4f} | {samples / seconds:,.0f} | {speedup:.1f}x |")
    r = ref.all_data
    print(
        f"\nreference All Data: R@0.5 {r.recall_50:.3f}  R {r.recall_50_95:.3f}  P@0.5 {r.precision_50:.3f}  "
        f"P {r.precision_50_95:.3f}  DF1@0.5 {r.densityf1_50:.3f}  DF1 {r.densityf1_50_95:.3f}; "
        f"rejection {ref.rejection_score}/{ref.rejection_total}"
    )


if __name__ == "__main__":
    main()
