"""One GRPO update on one learner rank: :func:`update`, plain objects in, metrics out (no Ray).

Given this rank's sequences (prompt + response tokens) and their advantages::

    ref = reference log-probs                          # kl_mode=loss only
    old = policy log-probs before the update           # skipped for 1 epoch x 1 mini-batch (the ratio is then 1)
    for epoch in range(ppo_epochs):
        for mini in mini_batches:                      # a shuffle seeded by the step; one optimizer step each
            tokens, seqs = loss normalisers            # counted over every rank
            for micro in micro_batches(mini):          # token budget, in lockstep over ranks
                lp, entropy = policy forward
                loss = policy_loss(lp, old, adv) + kl_coef * KL(lp, ref) - entropy_coef * entropy
                learner.backward(loss)
            learner.step()

A *weightless* row carries no loss: its tokens are masked out of every loss term, every
normaliser and every metric. Two kinds exist: the driver's filler responses that give a rank
without work something to run, and every row of a lockstep replay (see :func:`micro_batches`).
The math is :mod:`rexthinker.grpo.algorithm`; the forward is
:func:`rexthinker.grpo.experience.token_logprobs_and_entropy`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch

from rexthinker.grpo import algorithm as A
from rexthinker.grpo.config import AlgorithmConfig
from rexthinker.grpo.experience import (
    TokenSequence,
    collate,
    collate_shared,
    micro_batches_by_tokens,
    micro_batches_shared,
    token_logprobs_and_entropy,
)
from rexthinker.train import dist
from rexthinker.train.learner import Learner

STATS = ("clip_frac", "clip_frac_low", "clip_frac_high", "approx_kl")  # policy_loss stats averaged over tokens


def micro_batches(
    seqs: list[TokenSequence], indices: Sequence[int], alg: AlgorithmConfig, pad_id: int,
    weightless: torch.Tensor | None = None, lockstep: bool = False,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor], torch.Tensor]]:  # fmt: skip
    """Token-budget micro-batches of ``indices`` as ``(rows, batch, weightless)``: the rows of
    ``seqs`` in the batch, the collated batch on this rank's device, and which rows carry no loss
    (``weightless[rows]``, all False when None).

    With ``lockstep`` on several ranks, every rank yields as many micro-batches as the rank with
    the most: ZeRO gathers parameters in each forward (stage 3) and reduces gradients in each
    backward, so the passes must meet on all ranks. The extra ones replay this rank's first
    sequence, all rows weightless."""
    budget, chunk = alg.micro_batch_tokens, alg.response_chunk
    if alg.share_prompts:
        micro, layout = micro_batches_shared(seqs, indices, budget, chunk), collate_shared
    else:
        lengths = [seqs[i].length for i in indices]
        micro, layout = [[indices[i] for i in mb] for mb in micro_batches_by_tokens(lengths, budget)], collate
    count = int(dist.all_reduce_max(len(micro))) if lockstep and dist.world_size() > 1 else len(micro)
    if count > len(micro) and not seqs:
        raise ValueError("a learner rank got no sequence; with several ranks each needs at least one (the driver pads)")
    for j in range(count):
        replay = j >= len(micro)
        rows = [0] if replay else micro[j]
        batch = {k: v.to(dist.device()) for k, v in layout([seqs[r] for r in rows], pad_id).items()}
        if replay:
            flags = torch.ones(len(rows), dtype=torch.bool)
        else:
            flags = torch.zeros(len(rows), dtype=torch.bool) if weightless is None else weightless[rows]
        yield rows, batch, flags


@torch.no_grad()
def response_logprobs(model, seqs: list[TokenSequence], alg: AlgorithmConfig, pad_id: int, lockstep: bool = False,
                      temperature: float = 1.0) -> list[torch.Tensor]:  # fmt: skip
    """Log-probs of each sequence's response tokens under ``model`` (a list of 1-D CPU tensors);
    ``lockstep`` for the learner's own (possibly ZeRO-3 sharded) model, see :func:`micro_batches`."""
    out: list[torch.Tensor | None] = [None] * len(seqs)
    for rows, batch, weightless in micro_batches(seqs, range(len(seqs)), alg, pad_id, lockstep=lockstep):
        lp, _ = token_logprobs_and_entropy(model, batch, chunk=alg.response_chunk, temperature=temperature)
        for k, r in enumerate(rows):
            if not weightless[k]:  # a lockstep replay's rows were recorded before
                out[r] = lp[k][batch["response_mask"][k]].cpu()
    return out


def _place(values: list[torch.Tensor], rows: list[int], mask: torch.Tensor) -> torch.Tensor:
    """Scatter per-sequence response values into a (B, T) tensor at the mask's positions."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for k, r in enumerate(rows):
        out[k][mask[k]] = values[r].to(mask.device)
    return out


@torch.no_grad()
def sequence_kl(learner: Learner, reference, seqs: list[TokenSequence], alg: AlgorithmConfig, pad_id: int,
                temperature: float = 1.0) -> list[float]:  # fmt: skip
    """KL(policy || reference) of each sequence (:func:`~rexthinker.grpo.algorithm.sequence_kl`):
    what ``kl_mode=reward`` subtracts, times ``kl_coef``, from the rewards before advantages."""
    policy, out = learner.module.eval(), [0.0] * len(seqs)
    for rows, batch, weightless in micro_batches(seqs, range(len(seqs)), alg, pad_id, lockstep=True):
        lp, _ = token_logprobs_and_entropy(policy, batch, chunk=alg.response_chunk, temperature=temperature)
        ref_lp, _ = token_logprobs_and_entropy(reference, batch, chunk=alg.response_chunk, temperature=temperature)
        kl = A.sequence_kl(lp, ref_lp, batch["response_mask"], alg.kl_estimator)
        for k, r in enumerate(rows):
            if not weightless[k]:  # a lockstep replay's rows were recorded before
                out[r] = float(kl[k])
    return out


def _normalisers(seqs: list[TokenSequence], mini: list[int], weightless: torch.Tensor) -> tuple[float, float]:
    """The optimizer step's loss normalisers, summed over every rank: the response tokens and the
    non-empty responses of its rows that carry loss."""
    lengths = [len(seqs[i].response_ids) for i in mini if not weightless[i]]
    tokens, responses = dist.all_reduce_sums([sum(lengths), sum(1 for n in lengths if n)])
    return tokens, responses


def update(
    learner: Learner, reference, seqs: list[TokenSequence], advantages: torch.Tensor, alg: AlgorithmConfig, *,
    pad_id: int, step: int, loss_scale_tokens: int, weightless: torch.Tensor | None = None, temperature: float = 1.0,
) -> dict[str, float]:  # fmt: skip
    """``ppo_epochs x mini_batches`` optimizer steps of ``learner`` on ``seqs`` and their (N,)
    ``advantages``; ``weightless`` (N,) bool marks rows that carry no loss.

    ``reference`` is the frozen starting policy (None without a KL term): a model of its own, or the
    LoRA policy with its adapters off (:class:`~rexthinker.models.lora.BasePolicy`, sharded like the
    policy, so run in lockstep); with ``kl_mode=loss`` it gives the KL loss term. ``step`` seeds the mini-batch shuffle; ``loss_scale_tokens`` is
    ``seq-mean-token-sum-norm``'s constant (the maximum response length). Losses are normalised
    over all ranks and the returned metrics (``actor/*``, ``time/learner_*_s``) are reduced over
    them, so every rank must call this at once. ``temperature``: the rollouts' sampling temperature;
    every log-prob (policy, old, reference) is taken at it, so the ratio and the KL compare the
    distributions the responses were drawn from."""
    weightless = torch.zeros(len(seqs), dtype=torch.bool) if weightless is None else weightless.bool().cpu()
    advantages = advantages.float()
    model = learner.module
    kl_loss = reference is not None and alg.kl_mode == "loss"
    times: dict[str, float] = {}

    start = time.perf_counter()
    ref = None
    if kl_loss:
        ref = response_logprobs(reference, seqs, alg, pad_id, lockstep=getattr(reference, "lockstep", False), temperature=temperature)
    times["time/learner_ref_logprobs_s"] = time.perf_counter() - start
    start = time.perf_counter()
    reuse_current = alg.ppo_epochs == 1 and alg.mini_batches == 1  # the policy cannot move before it is used
    old = None if reuse_current else response_logprobs(model.eval(), seqs, alg, pad_id, lockstep=True, temperature=temperature)
    times["time/learner_old_logprobs_s"] = time.perf_counter() - start

    start = time.perf_counter()
    sums = dict.fromkeys(("kl", "entropy", *STATS, "loss"), 0.0)  # token-weighted sums over this rank
    token_total, ratio_max, grad_norms, lrs = 0, 0.0, [], []
    gen = torch.Generator().manual_seed(step)
    model.train()
    for _ in range(alg.ppo_epochs):
        order = torch.randperm(len(seqs), generator=gen).tolist() if alg.mini_batches > 1 else list(range(len(seqs)))
        for mini in (order[i :: alg.mini_batches] for i in range(alg.mini_batches)):
            tokens, responses = _normalisers(seqs, mini, weightless)
            norm = dict(global_tokens=tokens, global_seqs=responses, loss_scale_tokens=loss_scale_tokens)
            micro = list(micro_batches(seqs, mini, alg, pad_id, weightless, lockstep=True))
            for k, (rows, batch, rows_weightless) in enumerate(micro):
                learner.set_boundary(k == len(micro) - 1)
                lp, ent = token_logprobs_and_entropy(learner, batch, with_entropy=True, chunk=alg.response_chunk, temperature=temperature)
                mask = batch["response_mask"]
                loss_mask = mask & ~rows_weightless.to(mask.device)[:, None]
                old_lp = lp.detach() if old is None else _place(old, rows, mask)
                loss, stats = A.policy_loss(lp, old_lp, advantages[rows].to(lp.device), loss_mask, alg.clip_low, alg.clip_high,
                                            alg.loss_agg, **norm)  # fmt: skip
                if ref is not None:
                    kl = A.kl_penalty(lp, _place(ref, rows, mask), alg.kl_estimator)
                    loss = loss + alg.kl_coef * A.aggregate(kl, loss_mask, alg.loss_agg, **norm)
                    sums["kl"] += float((kl.detach() * loss_mask).sum())
                if alg.entropy_coef:
                    loss = loss - alg.entropy_coef * A.aggregate(ent, loss_mask, alg.loss_agg, **norm)
                learner.backward(loss)

                n_tok = int(loss_mask.sum())
                token_total += n_tok
                sums["loss"] += float(loss.detach()) * tokens  # undo the normaliser: a token-weighted sum
                sums["entropy"] += float((ent.detach() * loss_mask).sum())
                for key in STATS:
                    sums[key] += float(stats[key]) * n_tok
                ratio_max = max(ratio_max, float(stats["ratio_max"]))
            out = learner.step()
            grad_norms.append(out["grad_norm"])
            lrs.append(out["lr"])
    times["time/learner_optimize_s"] = time.perf_counter() - start

    *totals, token_total = dist.all_reduce_sums([*sums.values(), token_total])  # over all ranks
    sums = dict(zip(sums, totals))
    denom = max(token_total, 1)
    # actor/kl is the KL loss term's; with KL as a reward penalty the driver reports its own
    metrics = {f"actor/{k}": v / denom for k, v in sums.items() if k != "kl" or alg.kl_mode == "loss"}
    metrics.update({"actor/ratio_max": dist.all_reduce_max(ratio_max), "actor/grad_norm": sum(grad_norms) / len(grad_norms),
                    "actor/lr": lrs[0], "actor/updates": len(grad_norms), **times})  # fmt: skip
    return metrics
