"""The GRPO config schema. Values live in ``recipes/configs/grpo*.yaml``; see ``rexthinker.config``.
The sections every stage shares live beside their components (model, data, trainer, eval); GRPO adds
its own settings to them here. Evaluation scores with the ``reward`` section, the reward it trains on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rexthinker.config import ConfigError
from rexthinker.data.sources import DataConfig
from rexthinker.models.load import ModelConfig
from rexthinker.quickeval import EvalConfig
from rexthinker.rewards import RewardFn, load_reward
from rexthinker.rollout.base import RolloutConfig
from rexthinker.train.cli import TrainerConfig
from rexthinker.train.learner import LearnerConfig, OptimConfig


@dataclass
class GRPODataConfig(DataConfig):
    shuffle_hints: bool = False  # the paper's per-sample hint-order shuffling


@dataclass
class AlgorithmConfig:
    prompts_per_step: int = 64
    advantage: Literal["grpo", "drgrpo"] = "grpo"
    clip_low: float = 0.2
    clip_high: float = 0.3
    kl_coef: float = 0.01  # 0 disables the reference model
    kl_estimator: Literal["k1", "k2", "k3", "low_var_kl"] = "low_var_kl"
    kl_mode: Literal["loss", "reward"] = "loss"  # KL as a loss term, or as a reward penalty
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    ppo_epochs: int = 1  # passes over each rollout batch
    mini_batches: int = 1  # optimizer steps per pass
    micro_batch_tokens: int = 16384  # padded tokens per forward/backward (token-budget micro-batching)
    share_prompts: bool = True  # run each prompt (and image) once per micro-batch for all its responses
    response_chunk: int = 128  # with share_prompts: response columns per pass, finished rows dropped (0: one pass)
    filter_zero_variance: bool = False  # DAPO-style: drop groups whose rewards are all equal
    # With filter_zero_variance, DAPO's dynamic sampling: up to this many extra rounds per step, each
    # drawing as many new prompts as groups are missing, until prompts_per_step groups have signal
    # (0: none, the batch shrinks instead; a step that keeps no group skips its update).
    refill_rounds: int = 0
    entropy_coef: float = 0.0


@dataclass
class RewardConfig:
    function: str = "rewards/referring.py:compute_score"
    kwargs: dict = field(default_factory=dict)
    strict: bool = False  # re-raise a reward's exception instead of scoring the sample 0
    # Seconds a reward call (the step's batch, or one sample) may take; a sample that hangs scores 0.
    # The reward then runs in a worker process (rexthinker.rewards). The default reward scores a step
    # in well under a second; raise it for a slow reward model. None: in-process, unbounded.
    timeout_s: float | None = 300.0

    def load(self) -> RewardFn:
        return load_reward(self.function, strict=self.strict, timeout_s=self.timeout_s, **self.kwargs)


@dataclass
class ResourcesConfig:
    # ray: the roles are Ray actors. local: plain objects in the driver process, no Ray imported (with
    # rollout.backend=hf, no vLLM or DeepSpeed either), for one machine and debugging: one learner rank,
    # one rollout engine, learner.strategy=single; call_timeout_s cannot interrupt an in-process call,
    # and actor_restarts does not apply.
    mode: Literal["ray", "local"] = "ray"
    ray_address: str | None = None  # None: $RAY_ADDRESS or a local cluster
    gpus: int = 0  # GPUs for this run (0 on CPU machines)
    rollout_engines: int = 1
    learner_ranks: int = 1  # data-parallel learner processes (Ray actors, one GPU each); >1 needs zero2/zero3
    colocate: bool = True  # share GPUs between rollout and learner (vLLM sleeps while the learner trains, rollout.sleep)
    threads_per_actor: int | None = None  # torch threads in each actor; None: all cores
    call_timeout_s: float | None = 3600.0  # longest wait on one actor call (start-up, rollout, update, sync); None: no bound
    actor_restarts: int = 2  # times Ray restarts a dead rollout engine (the step's rollouts are retried); learners are not restarted


@dataclass
class GRPOTrainerConfig(TrainerConfig):
    output_dir: str = "outputs/grpo"
    run_name: str = "grpo"
    sample_table_every: int = 10  # log a table of generations every K steps
    val_every: int = 0  # the eval section's evaluation every K steps, logged as val/<name> (0: only at the start and end)


@dataclass
class GRPOEvalConfig(EvalConfig):
    # Evaluate the starting weights too. Off when the stage before just evaluated the same weights on
    # the same data.val (the demo's GRPO after its SFT): the "start" numbers are then that stage's.
    at_start: bool = True


@dataclass
class GRPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: GRPODataConfig = field(default_factory=GRPODataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, scheduler="constant", warmup_ratio=0.0))
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    trainer: GRPOTrainerConfig = field(default_factory=GRPOTrainerConfig)
    eval: GRPOEvalConfig = field(default_factory=GRPOEvalConfig)

    def __post_init__(self) -> None:
        ranks, engines = self.resources.learner_ranks, self.resources.rollout_engines
        if self.resources.mode == "local" and (ranks, engines, self.learner.strategy) != (1, 1, "single"):
            raise ConfigError("resources.mode=local runs one learner and one rollout engine in this process: it needs "
                              f"resources.learner_ranks=1 (got {ranks}), resources.rollout_engines=1 (got {engines}) "
                              f"and learner.strategy=single (got {self.learner.strategy})")  # fmt: skip
        if ranks < 1:
            raise ConfigError(f"resources.learner_ranks must be at least 1, got {ranks}")
        if self.learner.strategy == "ddp":
            raise ConfigError("learner.strategy=ddp is for SFT; GRPO's learner ranks run single (one) or zero2/zero3 (several)")
        if ranks > 1 and self.learner.strategy == "single":
            raise ConfigError(f"resources.learner_ranks={ranks} needs learner.strategy=zero2 or zero3: "
                              "'single' trains in one process")  # fmt: skip
        if engines < 1:
            raise ConfigError(f"resources.rollout_engines must be at least 1, got {engines}")
        if self.algorithm.share_prompts and self.learner.gradient_checkpointing:
            raise ConfigError("algorithm.share_prompts=true runs the responses on the prompt's key/value cache, which "
                              "transformers' gradient checkpointing drops while training: set algorithm.share_prompts=false "
                              "with learner.gradient_checkpointing=true")  # fmt: skip
        refill = self.algorithm.refill_rounds
        if refill < 0 or (refill and not self.algorithm.filter_zero_variance):
            raise ConfigError(f"algorithm.refill_rounds={refill} must be 0, or positive with algorithm.filter_zero_variance=true "
                              "(it refills the groups that filter drops)")  # fmt: skip
        if self.trainer.val_every < 0 or (self.trainer.val_every and not self.eval.enabled):
            raise ConfigError(f"trainer.val_every={self.trainer.val_every} must be 0, or positive with eval.enabled=true")
