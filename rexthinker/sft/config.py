"""The SFT config schema. Values live in ``recipes/configs/sft*.yaml``; see ``rexthinker.config``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rexthinker.train.learner import LearnerConfig, OptimConfig


@dataclass
class ModelConfig:
    path: str = ""  # a Hugging Face folder (or hub id on machines with a hub)
    freeze_vision: bool = True  # vision blocks + patch embedding
    freeze_projector: bool = True  # the patch merger feeding the language model
    freeze_llm: bool = False
    min_pixels: int | None = None  # override the processor's limits (the reference used 16*28*28 ..)
    max_pixels: int | None = None  # (.. 1280*28*28); None keeps the checkpoint's processor values
    attn_implementation: str = "sdpa"


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # CoT TSV prefixes / *.annotations.tsv, HumanRef *.jsonl
    val: list[str] = field(default_factory=list)
    max_samples: int | None = None  # cap on training samples (after concatenation)
    template: str = "train"  # user-text variant, see rexthinker.contracts.hint.USER_TEMPLATES
    instruction: Literal["system", "user_suffix", "none"] = "system"
    max_length: int = 2048  # longer samples are skipped and counted, never truncated
    num_workers: int = 0  # processes building the next steps' features while this one trains (0: none)


@dataclass
class TrainerConfig:
    output_dir: str = "outputs/sft"
    nproc: int = 1  # processes on this node; >1 relaunches under torchrun
    epochs: float = 2.0
    max_steps: int | None = None  # stop early (benchmarks, smoke runs)
    per_device_batch_size: int = 4
    grad_accum: int = 4
    seed: int = 42
    log_every: int = 1
    save_every: int = 500  # optimizer steps between checkpoints; 0 disables intermediate saves
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the newest complete checkpoint in output_dir
    report_to: list[str] = field(default_factory=lambda: ["console", "jsonl", "tensorboard", "wandb"])
    run_name: str = "sft"


@dataclass
class EvalConfig:
    enabled: bool = False  # quick evaluation on data.val after training
    num_samples: int = 200
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 16
    max_new_tokens: int = 1024
    reward: str = "rewards/referring.py:compute_score"


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
