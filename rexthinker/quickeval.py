"""A quick held-out evaluation with the default reward: format rate, accuracy-F1, rejection accuracy.

Used after SFT and GRPO and by the demo. It scores greedy generations with the same reward file the
GRPO stage trains on, so the numbers are the training objective's, measured on unseen samples:

- ``format``: share of completions with the strict ``<think>…</think><answer>…</answer>`` layout
  and a readable answer;
- ``accuracy_f1``: mean IoU-matched F1 over samples that have targets;
- ``rejection_acc``: share of no-target samples answered with no box;
- ``acc_50``: RefCOCO-style top-1 accuracy over the samples with exactly one target (their count is
  ``acc_50_samples``; the others are not scored): right when the answer's first box has IoU >= 0.5
  with the target (``rexthinker.boxes.box_iou``; no readable box is wrong);
- ``per_domain``: format, accuracy-F1 and rejection accuracy again for each sample domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rexthinker.boxes import box_iou, detection_f1
from rexthinker.contracts.completion import parse_completion
from rexthinker.generation import Generation
from rexthinker.rewards import RewardFn, load_reward

DEFAULT_REWARD = "rewards/referring.py:compute_score"


@dataclass
class EvalConfig:
    """The ``eval`` section of every training stage: greedy generations on ``data.val``."""

    enabled: bool = False
    num_samples: int = 200  # the first N samples of data.val
    max_new_tokens: int = 1024


def score(generations: Sequence[Generation], reward: str | RewardFn = DEFAULT_REWARD) -> dict[str, float]:
    """The numbers above for ``generations``, scored by ``reward``: a ``path.py:function`` spec, or
    a loaded :class:`~rexthinker.rewards.RewardFn` (the GRPO run's own, with its settings)."""
    fn = load_reward(reward) if isinstance(reward, str) else reward
    scores = fn(
        [g.text for g in generations],
        solution_boxes=[g.info.answer_boxes for g in generations],
        hint_boxes=[g.info.hint_boxes for g in generations],
        category=[g.sample.category for g in generations],
        domain=[g.sample.domain for g in generations],
        image_size=[g.info.frame.size for g in generations],
        prompt=[g.prompt for g in generations],
    )
    positives = [i for i, g in enumerate(generations) if g.info.answer_boxes]
    negatives = [i for i, g in enumerate(generations) if not g.info.answer_boxes]

    def mean(values, idx):
        return sum(values[i] for i in idx) / len(idx) if idx and values is not None else float("nan")

    # a custom reward may have no format or accuracy component: those numbers are then NaN
    scores = {"format": None, "accuracy": None, **scores}

    every = range(len(generations))
    positive, negative = set(positives), set(negatives)
    per_domain = {}
    for domain in sorted({g.sample.domain or "unknown" for g in generations}):
        idx = [i for i, g in enumerate(generations) if (g.sample.domain or "unknown") == domain]
        per_domain[domain] = {
            "samples": len(idx),
            "format": mean(scores["format"], idx),
            "accuracy_f1": mean(scores["accuracy"], [i for i in idx if i in positive]),
            "rejection_acc": mean(scores["accuracy"], [i for i in idx if i in negative]),
        }
    single = [g for g in generations if len(g.info.answer_boxes) == 1]
    return {
        "samples": len(generations),
        "format": mean(scores["format"], every),
        "accuracy_f1": mean(scores["accuracy"], positives),
        "rejection_acc": mean(scores["accuracy"], negatives),
        "overall": mean(scores["overall"], every),
        "acc_50": sum(map(top1_correct, single)) / len(single) if single else float("nan"),
        "acc_50_samples": len(single),
        "mean_tokens": sum(g.num_tokens for g in generations) / max(1, len(generations)),
        "per_domain": per_domain,
    }


def top1_correct(generation: Generation, threshold: float = 0.5) -> bool:
    """The answer's first box overlaps the sample's first target with IoU >= ``threshold`` (model frame)."""
    answer = parse_completion(generation.text).answer
    if not (answer.ok and answer.boxes and generation.info.answer_boxes):
        return False
    return box_iou(answer.boxes[0], generation.info.answer_boxes[0]) >= threshold


def baselines(samples, domains: Sequence[str] | None = None) -> dict[str, dict]:
    """Scores of two trivial policies on the same ``(hint boxes, answer boxes)`` samples: every hint
    box, and no box; with ``domains`` (one per sample) also per domain."""

    def rates(rows) -> dict[str, float]:
        pos = [v for v, gt in rows if gt]
        neg = [v for v, gt in rows if not gt]
        return {
            "accuracy_f1": sum(pos) / len(pos) if pos else float("nan"),
            "rejection_acc": sum(neg) / len(neg) if neg else float("nan"),
        }

    out = {}
    for name, pick in {"all_boxes": lambda hints: hints, "no_boxes": lambda hints: []}.items():
        rows = []
        for hints, gt in samples:
            pred = pick(hints)
            rows.append((detection_f1(pred, gt, 0.5) if gt else float(not pred), bool(gt)))
        out[name] = rates(rows)
        if domains is not None:
            out[name]["per_domain"] = {
                d: rates([r for r, dd in zip(rows, domains) if dd == d]) for d in sorted(set(domains))
            }
    return out
