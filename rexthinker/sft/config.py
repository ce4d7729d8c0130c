"""The SFT config schema. Values live in ``recipes/configs/sft*.yaml``; see ``rexthinker.config``.
The sections every stage shares live beside their components (model, data, trainer, eval); SFT adds
its own settings to them here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rexthinker.data.sources import DataConfig
from rexthinker.models.load import ModelConfig
from rexthinker.quickeval import DEFAULT_REWARD, EvalConfig
from rexthinker.train.cli import TrainerConfig
from rexthinker.train.learner import LearnerConfig, OptimConfig


@dataclass
class SFTDataConfig(DataConfig):
    max_length: int = 2048  # longer samples are skipped and counted, never truncated
    num_workers: int = 0  # processes building the next steps' features while this one trains (0: none)
    # Steps per length-sorted window (0: off): batches of similar length, less padding; every sample
    # is still seen once per epoch (sft.data.step_batches)
    group_by_length: int = 0


@dataclass
class SFTTrainerConfig(TrainerConfig):
    output_dir: str = "outputs/sft"
    epochs: float = 2.0
    seed: int = 42
    save_every: int = 500
    run_name: str = "sft"
    nproc: int = 1  # processes on this node; >1 relaunches under torchrun
    per_device_batch_size: int = 4
    grad_accum: int = 4


@dataclass
class SFTEvalConfig(EvalConfig):
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 16  # samples per generate() call of the hf backend
    reward: str = DEFAULT_REWARD


@dataclass
class SFTLossConfig:
    # Where the gradient goes: regular expression -> loss weight of the answer tokens its match covers
    # (its first group's, when it has one); every other answer token weighs 1 and the loss is the
    # weighted mean. {} = plain next-token loss. E.g. {'Person \d+[^:\n]*: ([^→\n]+) →': 5} weighs the attributes a
    # trace line states of a candidate 5 times.
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: SFTTrainerConfig = field(default_factory=SFTTrainerConfig)
    loss: SFTLossConfig = field(default_factory=SFTLossConfig)
    eval: SFTEvalConfig = field(default_factory=SFTEvalConfig)
