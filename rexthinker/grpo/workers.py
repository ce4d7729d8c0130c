"""The roles of a GRPO run. Plain classes: the driver runs each inside a Ray actor
(``ray.remote(PolicyWorker)``), or with ``resources.mode: local`` in its own process
(:class:`~rexthinker.grpo.actors.LocalActor`), and tests can also use them directly.

- :class:`PolicyWorker` — the learner: the trainable policy, its optimizer, and the frozen
  reference policy for the KL term; runs the update (:mod:`rexthinker.grpo.update`).
- :class:`RolloutWorker` — a rollout engine (vLLM, or transformers ``generate``) that samples
  completions and takes new weights in place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from rexthinker.grpo.config import GRPOConfig
from rexthinker.grpo.experience import TokenSequence, encode_prompt
from rexthinker.grpo.update import sequence_kl, update
from rexthinker.models import lora
from rexthinker.models.load import load_policy, set_pixel_limits
from rexthinker.prompts import pixel_limits
from rexthinker.rollout.base import Completion, Request, RolloutEngine, forbidden_token_ids, sleep_enabled
from rexthinker.train import dist
from rexthinker.train.learner import Learner


def set_threads(threads: int | None) -> None:
    torch.set_num_threads(threads or os.cpu_count() or 1)


class PolicyWorker:
    """One learner rank. With ``resources.learner_ranks`` > 1 the driver starts one per rank, with
    ``dist_env`` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) so that they join one
    process group, and gives each rank its share of a step's responses. Every rank must then get
    every call (ZeRO's collectives), and at least one response: ``weightless`` responses only keep
    a rank in step and carry no loss."""

    def __init__(self, cfg: GRPOConfig, total_steps: int, model_path: str | None = None, dist_env: dict[str, str] | None = None):
        set_threads(cfg.resources.threads_per_actor)
        os.environ.update(dist_env or {})
        dist.init()
        self.cfg = cfg
        adapters = cfg.model.lora.enabled  # a resumed LoRA run starts from the base; its learner state holds the adapters
        model, self.processor = load_policy(cfg.model.path if adapters else model_path or cfg.model.path, cfg.model)
        torch.manual_seed(cfg.trainer.seed)  # LoRA draws its A matrices here: the same in every rank and every run (as SFT seeds)
        self.learner = Learner(lora.attach(model, cfg.model.lora), cfg.optim, cfg.learner, total_steps)
        self.reference = None
        if cfg.algorithm.kl_coef > 0 and adapters:
            self.reference = lora.BasePolicy(self.learner.module)  # the same weights, adapters off
        elif cfg.algorithm.kl_coef > 0:
            reference, _ = load_policy(cfg.model.path, cfg.model)  # always the starting policy
            self.reference = reference.to(device=dist.device(), dtype=self.learner.dtype).eval().requires_grad_(False)
        self.pad_id = self.processor.tokenizer.pad_token_id

    def _sequences(self, prompts: Sequence[tuple[str, object]], responses: Sequence[tuple[int, list[int]]]):
        encoded = [encode_prompt(self.processor, text, image) for text, image in prompts]
        return [TokenSequence(encoded[p], ids) for p, ids in responses]

    # --- API used by the driver ----------------------------------------------------------------
    def sequence_kl(self, prompts, responses) -> list[float]:
        """Summed per-token KL(policy || reference) of each response (for KL as a reward penalty)."""
        return sequence_kl(self.learner, self.reference, self._sequences(prompts, responses), self.cfg.algorithm, self.pad_id,
                           temperature=self.cfg.rollout.temperature)  # fmt: skip

    def train_step(self, prompts, responses, advantages: torch.Tensor | Sequence[float], step: int, weightless: int = 0) -> dict[str, float]:
        """:func:`~rexthinker.grpo.update.update` on one rollout batch; the last ``weightless``
        responses carry no loss (they keep this rank in step, see the class)."""
        seqs = self._sequences(prompts, responses)
        flags = torch.arange(len(seqs)) >= len(seqs) - weightless
        metrics = update(self.learner, self.reference, seqs, torch.as_tensor(advantages, dtype=torch.float32), self.cfg.algorithm,
                         pad_id=self.pad_id, step=step, loss_scale_tokens=self.cfg.rollout.max_new_tokens, weightless=flags,
                         temperature=self.cfg.rollout.temperature)  # fmt: skip
        if torch.cuda.is_available():
            metrics["perf/peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return metrics

    def weights(self) -> list[tuple[str, torch.Tensor]]:
        """Full weights in checkpoint naming (LoRA adapters merged), for the rollout engines."""
        state = self.learner.export_state_dict()
        return list(state.items()) if state is not None else []

    def save(self, folder: str) -> None:
        self.learner.save_state(Path(folder) / "learner")
        self.learner.export_hf(Path(folder) / "hf", self.processor)
        if self.learner.lora:
            self.learner.export_adapter(Path(folder) / "adapter")

    def load(self, folder: str) -> None:
        self.learner.load_state(Path(folder) / "learner", self.cfg.trainer.trust_pickle)

    def ping(self) -> bool:
        return True


def rollout_sleeps(cfg: GRPOConfig) -> bool:
    """Whether this run's vLLM engines sleep between generations (``rollout.sleep``). In local mode
    the engine always shares the learner's device."""
    colocated = cfg.resources.mode == "local" or (cfg.resources.colocate and cfg.resources.gpus > 0)
    cuda = torch.cuda.is_available()
    if cfg.rollout.sleep is True and not cuda:
        print("[rollout] rollout.sleep=true has no effect without CUDA (vLLM's sleep mode is CUDA-only)", flush=True)
    return cfg.rollout.backend == "vllm" and sleep_enabled(cfg.rollout.sleep, colocated, cuda)


class RolloutWorker:
    engine: RolloutEngine  # VLLMRollout or HFRollout (rollout.backend)

    def __init__(self, cfg: GRPOConfig, model_path: str, seed: int):
        set_threads(cfg.resources.threads_per_actor)
        self.cfg = cfg
        if cfg.rollout.backend == "vllm":
            from transformers import AutoProcessor

            from rexthinker.rollout.vllm_engine import VLLMRollout

            processor = AutoProcessor.from_pretrained(model_path)
            set_pixel_limits(processor, cfg.model.min_pixels, cfg.model.max_pixels)
            self.engine = VLLMRollout(model_path, cfg.rollout, seed=seed, forbidden=forbidden_token_ids(processor.tokenizer),
                                      pixel_limits=pixel_limits(processor), sleep=rollout_sleeps(cfg))  # fmt: skip
        else:
            from rexthinker.rollout.hf_engine import HFRollout

            model, processor = load_policy(model_path, cfg.model)
            self.engine = HFRollout(model.to(dist.device()).eval(), processor, cfg.rollout)
        set_threads(cfg.resources.threads_per_actor)  # vLLM lowers torch's threads for serving

    def generate(self, requests: list[Request], n: int) -> list[list[Completion]]:
        return self.engine.generate(requests, n)

    def generate_greedy(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        saved = (self.engine.cfg.temperature, self.engine.cfg.top_p, self.engine.cfg.max_new_tokens)
        self.engine.cfg.temperature, self.engine.cfg.top_p, self.engine.cfg.max_new_tokens = 0.0, 1.0, max_new_tokens
        try:
            return [group[0] for group in self.engine.generate(requests, 1)]
        finally:
            self.engine.cfg.temperature, self.engine.cfg.top_p, self.engine.cfg.max_new_tokens = saved

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        if not weights:
            raise ValueError("empty weight update")
        self.engine.load_weights(weights)

    def ping(self) -> bool:
        return True
