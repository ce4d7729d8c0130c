"""The quick held-out evaluation: overall and per-domain rates, and the trivial baselines."""

from __future__ import annotations

import math

from rexthinker import quickeval
from rexthinker.contracts.answer import answer_json
from rexthinker.coords import MODEL_PIXELS, BoxFrame
from rexthinker.data.sample import RefSample
from rexthinker.generation import Generation
from rexthinker.models.families import QWEN2_5_VL
from rexthinker.prompts import PromptInfo

HINTS = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]


def generation(domain: str, answer: list[list[int]], predicted: list[list[int]] | None) -> Generation:
    sample = RefSample(id=f"{domain}-{len(answer)}", image_name="", referring="x", candidate_boxes=HINTS,
                       answer_boxes=answer, category="person", domain=domain, image_size=(64, 64))  # fmt: skip
    info = PromptInfo((64, 64), (64, 64), HINTS, answer, [0, 1, 2], QWEN2_5_VL, BoxFrame(MODEL_PIXELS, (64, 64)))
    text = "no tags" if predicted is None else f"<think>t</think><answer>{answer_json(predicted, 'x')}</answer>"
    return Generation(sample, info, "prompt", text, 5)


def test_rates_overall_and_per_domain():
    gens = [
        generation("attribute", [HINTS[0]], [HINTS[0]]),  # right
        generation("attribute", [HINTS[1]], [HINTS[2]]),  # wrong box
        generation("position", [HINTS[2]], None),  # unreadable
        generation("rejection", [], []),  # right rejection
        generation("rejection", [], [HINTS[0]]),  # wrong rejection
    ]
    result = quickeval.score(gens)
    assert result["samples"] == 5
    assert math.isclose(result["format"], 4 / 5)
    assert math.isclose(result["accuracy_f1"], 1 / 3)
    assert math.isclose(result["rejection_acc"], 1 / 2)
    per = result["per_domain"]
    assert set(per) == {"attribute", "position", "rejection"}
    assert per["attribute"] == {"samples": 2, "format": 1.0, "accuracy_f1": 0.5, "rejection_acc": per["attribute"]["rejection_acc"]}
    assert math.isnan(per["attribute"]["rejection_acc"]) and math.isnan(per["rejection"]["accuracy_f1"])
    assert per["position"]["format"] == 0.0 and per["position"]["accuracy_f1"] == 0.0
    assert per["rejection"]["rejection_acc"] == 0.5


def test_baselines_per_domain():
    samples = [(HINTS, [HINTS[0]]), (HINTS, [HINTS[1], HINTS[2]]), (HINTS, [])]
    out = quickeval.baselines(samples, ["attribute", "position", "rejection"])
    every, none = out["all_boxes"], out["no_boxes"]
    assert math.isclose(every["accuracy_f1"], (0.5 + 0.8) / 2) and every["rejection_acc"] == 0.0
    assert none["accuracy_f1"] == 0.0 and none["rejection_acc"] == 1.0
    assert math.isclose(every["per_domain"]["position"]["accuracy_f1"], 0.8)
    assert none["per_domain"]["rejection"]["rejection_acc"] == 1.0
    assert "per_domain" not in quickeval.baselines(samples)["all_boxes"]


def test_a_loaded_reward_scores_with_its_own_settings():
    """GRPO evaluates with the reward it trains on (its kwargs included), not the default one."""
    from rexthinker.rewards import load_reward

    near = [4, 0, 14, 10]  # IoU 0.43 with the target: a miss for F1 at 0.5, partial credit for the soft term
    gens = [generation("attribute", [HINTS[0]], [near])]
    default = quickeval.score(gens)
    shaped = quickeval.score(gens, load_reward(quickeval.DEFAULT_REWARD, soft_iou_weight=0.5))
    assert shaped["accuracy_f1"] == default["accuracy_f1"] == 0.0
    assert shaped["overall"] > default["overall"]


def test_a_reward_without_format_or_accuracy_still_scores(tmp_path):
    """A custom GRPO reward may give only ``overall``: the evaluation reports it, the rest NaN."""
    from rexthinker.rewards import load_reward

    plugin = tmp_path / "length.py"
    plugin.write_text("def score(completions, **kwargs):\n    return [len(c) / 100 for c in completions]\n")
    gens = [generation("attribute", [HINTS[0]], [HINTS[0]]), generation("rejection", [], [])]
    result = quickeval.score(gens, load_reward(f"{plugin}:score"))
    assert math.isclose(result["overall"], sum(len(g.text) for g in gens) / 200)
    assert math.isnan(result["format"]) and math.isnan(result["accuracy_f1"]) and math.isnan(result["rejection_acc"])
    assert math.isnan(result["per_domain"]["attribute"]["format"])
