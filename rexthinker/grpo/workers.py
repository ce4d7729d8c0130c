"""The roles of a GRPO run. Plain classes: the driver runs each inside a Ray actor
(``ray.remote(PolicyWorker)``), and tests can also use them directly.

- :class:`PolicyWorker` — the learner: the trainable policy, its optimizer, and the frozen
  reference policy for the KL term; computes log-probs and performs the update.
- :class:`RolloutWorker` — a rollout engine (vLLM, or transformers ``generate``) that samples
  completions and takes new weights in place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from rexthinker.grpo import algorithm as A
from rexthinker.grpo.config import GRPOConfig
from rexthinker.grpo.experience import (
    TokenSequence,
    collate,
    collate_shared,
    encode_prompt,
    micro_batches_by_tokens,
    micro_batches_shared,
    token_logprobs_and_entropy,
)
from rexthinker.models.load import load_policy, set_pixel_limits
from rexthinker.prompts import pixel_limits
from rexthinker.rollout.base import Completion, Request, forbidden_token_ids, sleep_enabled
from rexthinker.train import dist
from rexthinker.train.learner import Learner


def set_threads(threads: int | None) -> None:
    torch.set_num_threads(threads or os.cpu_count() or 1)


class PolicyWorker:
    """One learner rank. With ``resources.learner_ranks`` > 1 the driver starts one per rank, with
    ``dist_env`` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) so that they join one
    process group, and gives each rank its share of a step's responses. Every rank must then get
    every call (ZeRO's collectives), and at least one response: ``padding`` responses only keep a
    rank in step and carry no weight."""

    def __init__(self, cfg: GRPOConfig, total_steps: int, model_path: str | None = None, dist_env: dict[str, str] | None = None):
        set_threads(cfg.resources.threads_per_actor)
        os.environ.update(dist_env or {})
        dist.init()
        self.cfg = cfg
        m = cfg.model
        model, self.processor = load_policy(
            model_path or m.path, freeze_vision=m.freeze_vision, freeze_projector=m.freeze_projector,
            min_pixels=m.min_pixels, max_pixels=m.max_pixels, attn_implementation=m.attn_implementation,
        )  # fmt: skip
        self.learner = Learner(model, cfg.optim, cfg.learner, total_steps)
        self.reference = None
        if cfg.algorithm.kl_coef > 0:
            reference, _ = load_policy(m.path, attn_implementation=m.attn_implementation)  # always the starting policy
            self.reference = reference.to(device=dist.device(), dtype=self.learner.dtype).eval().requires_grad_(False)
        self.pad_id = self.processor.tokenizer.pad_token_id

    # --- helpers -------------------------------------------------------------------------------
    def _sequences(self, prompts: Sequence[tuple[str, object]], responses: Sequence[tuple[int, list[int]]]):
        encoded = [encode_prompt(self.processor, text, image) for text, image in prompts]
        return [TokenSequence(encoded[p], ids) for p, ids in responses]

    def _batches(self, seqs: list[TokenSequence], indices: list[int], lockstep: bool = False):
        """Token-budget micro-batches of ``indices`` as ``(rows, batch, replay)``. With ``lockstep``
        on several ranks, every rank yields as many as the rank with the most: ZeRO gathers
        parameters in each forward (stage 3) and reduces gradients in each backward, so the passes
        must meet on all ranks. The extra ones (``replay`` True) replay this rank's first sequence;
        callers give them no weight."""
        budget, chunk = self.cfg.algorithm.micro_batch_tokens, self.cfg.algorithm.response_chunk
        if self.cfg.algorithm.share_prompts:
            micro, layout = micro_batches_shared(seqs, indices, budget, chunk), collate_shared
        else:
            lengths = [seqs[i].length for i in indices]
            micro, layout = [[indices[i] for i in mb] for mb in micro_batches_by_tokens(lengths, budget)], collate
        count = int(dist.all_reduce_max(len(micro))) if lockstep and dist.world_size() > 1 else len(micro)
        if count > len(micro) and not seqs:
            raise ValueError("a learner rank got no sequence; with several ranks each needs at least one (the driver pads)")
        for j in range(count):
            rows = micro[j] if j < len(micro) else [0]
            batch = {k: v.to(dist.device()) for k, v in layout([seqs[r] for r in rows], self.pad_id).items()}
            yield rows, batch, j >= len(micro)

    @torch.no_grad()
    def _logprobs(self, model, seqs: list[TokenSequence], lockstep: bool = False) -> list[torch.Tensor]:
        """Log-probs of each sequence's response tokens under ``model`` (a list of 1-D tensors);
        ``lockstep`` for the learner's own (possibly ZeRO-3 sharded) model, see :meth:`_batches`."""
        out: list[torch.Tensor | None] = [None] * len(seqs)
        for rows, batch, replay in self._batches(seqs, list(range(len(seqs))), lockstep):
            lp, _ = token_logprobs_and_entropy(model, batch, chunk=self.cfg.algorithm.response_chunk)
            for k, r in enumerate([] if replay else rows):
                out[r] = lp[k][batch["response_mask"][k]].cpu()
        return out

    @staticmethod
    def _place(values: list[torch.Tensor], rows: list[int], mask: torch.Tensor) -> torch.Tensor:
        """Scatter per-sequence response values into a (B, T) tensor at the mask's positions."""
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for k, r in enumerate(rows):
            out[k][mask[k]] = values[r].to(mask.device)
        return out

    # --- API used by the driver ----------------------------------------------------------------
    def sequence_kl(self, prompts, responses) -> list[float]:
        """Summed per-token KL(policy || reference) of each response (for KL as a reward penalty)."""
        seqs = self._sequences(prompts, responses)
        policy = self._logprobs(self.learner.module.eval(), seqs, lockstep=True)
        reference = self._logprobs(self.reference, seqs)
        est = self.cfg.algorithm.kl_estimator
        return [float(A.kl_penalty(p, r, est).sum()) for p, r in zip(policy, reference)]

    def train_step(self, prompts, responses, advantages: Sequence[float], step: int, padding: int = 0) -> dict[str, float]:
        """One rollout batch: reference / old log-probs, then ``ppo_epochs x mini_batches`` updates.
        The last ``padding`` responses carry no weight (they keep this rank in step, see the class).
        Losses are normalised over all ranks and the returned metrics are reduced over them."""
        alg = self.cfg.algorithm
        times: dict[str, float] = {}
        seqs = self._sequences(prompts, responses)
        adv = torch.tensor(list(advantages), dtype=torch.float32)
        real = torch.arange(len(seqs)) < len(seqs) - padding
        model = self.learner.module

        start = time.perf_counter()
        ref = self._logprobs(self.reference, seqs) if self.reference is not None and alg.kl_mode == "loss" else None
        times["time/learner_ref_logprobs_s"] = time.perf_counter() - start
        start = time.perf_counter()
        reuse_current = alg.ppo_epochs == 1 and alg.mini_batches == 1  # the policy cannot move before it is used
        old = None if reuse_current else self._logprobs(model.eval(), seqs, lockstep=True)
        times["time/learner_old_logprobs_s"] = time.perf_counter() - start

        start = time.perf_counter()
        sums = {k: 0.0 for k in ("pg_loss", "kl", "entropy", "clip_frac", "clip_frac_low", "clip_frac_high", "approx_kl")}
        token_total, ratio_max, updates, grad_norms, lrs = 0, 0.0, 0, [], []
        gen = torch.Generator().manual_seed(step)
        model.train()
        for _ in range(alg.ppo_epochs):
            order = torch.randperm(len(seqs), generator=gen).tolist() if alg.mini_batches > 1 else list(range(len(seqs)))
            minis = [order[i :: alg.mini_batches] for i in range(alg.mini_batches)]
            for mini in minis:
                tokens = dist.all_reduce_sum(sum(len(responses[i][1]) for i in mini if real[i]))
                n_seqs = dist.all_reduce_sum(sum(1 for i in mini if responses[i][1] and real[i]))
                scale_tokens = self.cfg.rollout.max_new_tokens
                micro = list(self._batches(seqs, mini, lockstep=True))
                for k, (rows, batch, replay) in enumerate(micro):
                    self.learner.set_boundary(k == len(micro) - 1)
                    mask = batch.pop("response_mask")
                    lp, ent = token_logprobs_and_entropy(self.learner, dict(batch, response_mask=mask), with_entropy=True,
                                                         chunk=alg.response_chunk)  # fmt: skip
                    old_lp = lp.detach() if old is None else self._place(old, rows, mask)
                    carries = torch.zeros(len(rows), dtype=torch.bool) if replay else real[rows]
                    weighted = mask & carries.to(mask.device)[:, None]  # padding and replayed rows carry no loss
                    norm = dict(global_tokens=tokens, global_seqs=n_seqs, loss_scale_tokens=scale_tokens)
                    loss, stats = A.policy_loss(lp, old_lp, adv[rows].to(lp.device), weighted, alg.clip_low, alg.clip_high, alg.loss_agg, **norm)
                    if ref is not None:
                        kl = A.kl_penalty(lp, self._place(ref, rows, mask), alg.kl_estimator)
                        loss = loss + alg.kl_coef * A.aggregate(kl, weighted, alg.loss_agg, **norm)
                        sums["kl"] += float((kl.detach() * weighted).sum())
                    if alg.entropy_coef:
                        loss = loss - alg.entropy_coef * A.aggregate(ent, weighted, alg.loss_agg, **norm)
                    self.learner.backward(loss)
                    n_tok = int(weighted.sum())
                    token_total += n_tok
                    sums["pg_loss"] += float(loss.detach()) * tokens  # undo the normaliser: a token-weighted sum
                    sums["entropy"] += float((ent.detach() * weighted).sum())
                    for key in ("clip_frac", "clip_frac_low", "clip_frac_high", "approx_kl"):
                        sums[key] += float(stats[key]) * n_tok
                    ratio_max = max(ratio_max, float(stats["ratio_max"]))
                out = self.learner.step()
                grad_norms.append(out["grad_norm"])
                lrs.append(out["lr"])
                updates += 1
        times["time/learner_optimize_s"] = time.perf_counter() - start
        *totals, token_total = dist.all_reduce_sums([*sums.values(), token_total])  # over all ranks
        sums = dict(zip(sums, totals))
        denom = max(token_total, 1)
        # actor/kl is the KL loss term's; with KL as a reward penalty the driver reports its own
        metrics = {f"actor/{k}": v / denom for k, v in sums.items() if k != "pg_loss" and (k != "kl" or alg.kl_mode == "loss")}
        metrics["actor/loss"] = sums["pg_loss"] / denom
        metrics.update({"actor/ratio_max": dist.all_reduce_max(ratio_max), "actor/grad_norm": sum(grad_norms) / len(grad_norms),
                        "actor/lr": lrs[0], "actor/updates": updates, **times})  # fmt: skip
        if torch.cuda.is_available():
            metrics["perf/peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return metrics

    def weights(self) -> list[tuple[str, torch.Tensor]]:
        """Full weights in checkpoint naming, for the rollout engines."""
        state = self.learner.full_state_dict()
        return list(state.items()) if state is not None else []

    def save(self, folder: str) -> None:
        self.learner.save_state(Path(folder) / "learner")
        self.learner.export_hf(Path(folder) / "hf", self.processor)

    def load(self, folder: str) -> None:
        self.learner.load_state(Path(folder) / "learner")

    def ping(self) -> bool:
        return True


def rollout_sleeps(cfg: GRPOConfig) -> bool:
    """Whether this run's vLLM engines sleep between generations (``rollout.sleep``)."""
    colocated = cfg.resources.colocate and cfg.resources.gpus > 0
    cuda = torch.cuda.is_available()
    if cfg.rollout.sleep is True and not cuda:
        print("[rollout] rollout.sleep=true has no effect without CUDA (vLLM's sleep mode is CUDA-only)", flush=True)
    return cfg.rollout.backend == "vllm" and sleep_enabled(cfg.rollout.sleep, colocated, cuda)


class RolloutWorker:
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

            model, processor = load_policy(model_path, attn_implementation=cfg.model.attn_implementation,
                                           min_pixels=cfg.model.min_pixels, max_pixels=cfg.model.max_pixels)  # fmt: skip
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
