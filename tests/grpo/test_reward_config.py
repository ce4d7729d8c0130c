"""The ``reward`` section of the GRPO config reaches the reward the trainer loads (no Ray needed)."""

from __future__ import annotations

import pytest

from rexthinker.config import load_config
from rexthinker.grpo.config import GRPOConfig
from tests.rewards.helpers import ROOT

DEMO = ROOT / "recipes/configs/grpo_demo.yaml"
DEFAULT_REWARD = f"reward.function={ROOT}/rewards/referring.py:compute_score"


def test_timeout_reaches_the_reward():
    cfg = load_config(GRPOConfig, DEMO, [DEFAULT_REWARD, "reward.timeout_s=2.5", "reward.kwargs={soft_iou_weight: 0.2}"])
    reward = cfg.reward.load()  # what GRPOTrainer calls
    assert (reward.timeout_s, reward.config) == (2.5, {"soft_iou_weight": 0.2})
    scores = reward(["<think>x</think><answer>None</answer>"], solution_boxes=[[]])  # scored in its worker
    assert scores["soft_iou"] == [1.0] and scores["overall"] == pytest.approx([0.1 + 0.9 + 0.2])
    reward.close()


def test_the_default_bound_and_none():
    assert GRPOConfig().reward.timeout_s == 300.0
    unbounded = load_config(GRPOConfig, DEMO, [DEFAULT_REWARD, "reward.timeout_s=null"]).reward.load()
    assert unbounded.timeout_s is None
