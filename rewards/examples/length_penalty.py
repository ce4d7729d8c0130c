"""A worked custom reward: the default reward, minus a penalty for over-long completions.

Name it in the GRPO config's reward entry as ``rewards/examples/length_penalty.py:LengthPenalty``
with keyword config such as ``{max_chars: 2000, penalty: 0.2, iou_threshold: 0.5}``.

``max_chars`` and ``penalty`` are this reward's own parameters; every other config key is handed
to the default reward (``rewards/referring.py``), so its weights and IoU threshold stay
configurable. It adds one component, ``length`` (1 within budget, falling linearly to 0 at twice
the budget), and lowers ``overall`` by ``penalty * (1 - length)``.

It is a class because it has parameters: the loader builds it once with the config and calls the
instance on every batch. ``rewards/README.md`` walks through it.
"""

from __future__ import annotations

from pathlib import Path

from rexthinker.rewards import load_reward

DEFAULT_REWARD = Path(__file__).resolve().parents[1] / "referring.py"


class LengthPenalty:
    def __init__(self, max_chars: int = 2000, penalty: float = 0.2, **default_config):
        if max_chars <= 0 or penalty < 0:
            raise ValueError(f"need max_chars > 0 and penalty >= 0, got {max_chars} and {penalty}")
        self.max_chars = max_chars
        self.penalty = penalty
        self.default = load_reward(f"{DEFAULT_REWARD}:compute_score", **default_config)

    def __call__(self, completions: list[str], **batch) -> dict[str, list[float]]:
        scores = self.default(completions, **batch)  # format, accuracy, rejection, ..., overall
        length = [max(0.0, 1.0 - max(0, len(c) - self.max_chars) / self.max_chars) for c in completions]
        scores["length"] = length
        scores["overall"] = [s - self.penalty * (1.0 - x) for s, x in zip(scores["overall"], length)]
        return scores
