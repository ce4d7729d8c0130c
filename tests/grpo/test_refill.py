"""DAPO-style dynamic sampling without Ray: the data stream is a function of its position (so a
checkpoint that stores the position resumes the same draws), the rounds of a step concatenate, and
the config refuses settings that would do nothing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rexthinker.config import ConfigError
from rexthinker.grpo.config import AlgorithmConfig, GRPOConfig, GRPOEvalConfig, GRPOTrainerConfig
from rexthinker.grpo.trainer import GRPOTrainer, Rollouts
from rexthinker.models.families import QWEN2_5_VL
from rexthinker.train.learner import LearnerConfig


def stream(samples: int = 7, per_step: int = 2, seed: int = 3) -> SimpleNamespace:
    """What ``GRPOTrainer.draw_prompts`` reads of a trainer."""
    cfg = SimpleNamespace(algorithm=SimpleNamespace(prompts_per_step=per_step), trainer=SimpleNamespace(seed=seed))
    return SimpleNamespace(cfg=cfg, samples=list(range(samples)), per_epoch=samples // per_step, data_position=0, _order=None)


def draws(trainer, sizes) -> list:
    out = []
    for size in sizes:
        out += GRPOTrainer.draw_prompts(trainer, size)[0]
    return out


def test_the_prompts_depend_only_on_the_position():
    whole = draws(stream(), [20])
    assert draws(stream(), [2, 1, 3, 1, 5, 8]) == whole  # refill rounds of any size draw the same stream
    resumed = stream()
    resumed.data_position = 9  # what a checkpoint after 9 drawn prompts restores
    assert draws(resumed, [4, 7]) == whole[9:]
    # each epoch: 3 steps x 2 prompts of a permutation of the 7 samples (the 7th left over, as before)
    for epoch in range(3):
        part = whole[6 * epoch : 6 * epoch + 6]
        assert len(set(part)) == 6
        assert part == np.random.default_rng([3, epoch]).permutation(7)[:6].tolist()


def test_the_epoch_is_the_last_prompts():
    trainer = stream()
    assert GRPOTrainer.draw_prompts(trainer, 5)[1] == 0
    assert GRPOTrainer.draw_prompts(trainer, 2)[1] == 1  # positions 5 and 6: the second is epoch 1's first
    assert trainer.data_position == 7


def rollouts(groups: list[list[float]], name: str, keep: list[bool] | None = None) -> Rollouts:
    ids = [g for g, rewards in enumerate(groups) for _ in rewards]
    rewards = torch.tensor([r for rs in groups for r in rs], dtype=torch.float64)
    completions = [SimpleNamespace(token_ids=[1] * (k + 1)) for k in range(len(ids))]
    samples = [f"{name}{g}" for g in range(len(groups))]
    infos = [SimpleNamespace(model_size=(28, 56), family=QWEN2_5_VL) for _ in groups]
    requests = [SimpleNamespace(prompt="p" * 8, image=None) for _ in groups]
    mask = torch.tensor(keep if keep is not None else [len(set(rs)) > 1 for rs in groups for _ in rs])
    return Rollouts(samples, requests, infos, completions, ids, {"overall": rewards.tolist()}, rewards, mask, epoch=len(name))


def test_rounds_concatenate_with_their_groups_apart():
    first = rollouts([[0, 1], [0.5, 0.5]], "a")
    second = rollouts([[1, 1], [1, 0], [0, 0]], "bb")
    batch = Rollouts.concat([first, second])
    assert batch.samples == ["a0", "a1", "bb0", "bb1", "bb2"]
    assert batch.group_ids == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert batch.keep.tolist() == [True, True, False, False, False, False, True, True, False, False]
    assert (first.groups_kept, second.groups_kept, batch.groups_kept) == (1, 1, 2)
    assert batch.epoch == 2 and batch.kl is None
    prompts, responses, costs = batch.learner_inputs()
    assert len(prompts) == 5 and [g for g, _ in responses] == batch.group_ids
    assert costs[0] == 28 * 56 / 28**2 + 2 + 1  # image tokens + 8 characters / 4 + the response's one token


@pytest.mark.parametrize(
    "algorithm, trainer, message",
    [
        (AlgorithmConfig(refill_rounds=2), GRPOTrainerConfig(), "filter_zero_variance"),
        (AlgorithmConfig(filter_zero_variance=True, refill_rounds=-1), GRPOTrainerConfig(), "refill_rounds=-1"),
        (AlgorithmConfig(), GRPOTrainerConfig(val_every=5), "eval.enabled"),
        (AlgorithmConfig(), GRPOTrainerConfig(val_every=-1), "val_every=-1"),
    ],
)
def test_settings_that_would_do_nothing_are_refused(algorithm, trainer, message):
    with pytest.raises(ConfigError, match=message):
        GRPOConfig(algorithm=algorithm, trainer=trainer)


def test_ddp_is_refused_for_grpo():
    with pytest.raises(ConfigError, match="ddp is for SFT"):
        GRPOConfig(learner=LearnerConfig(strategy="ddp"))


def test_valid_settings_load():
    GRPOConfig(algorithm=AlgorithmConfig(filter_zero_variance=True, refill_rounds=3))
    GRPOConfig(trainer=GRPOTrainerConfig(val_every=5), eval=GRPOEvalConfig(enabled=True))
