"""The math of one GRPO step, on plain tensors: advantages, group filtering, KL, the clipped loss.

No model, no distributed code. Shapes: ``N`` samples (one per completion), ``B`` sequences in a
(micro-)batch, ``T`` token positions, ``V`` vocabulary entries; ``mask`` marks the completion
tokens that carry loss (bool or 0/1).

The step that runs: the driver (:mod:`rexthinker.grpo.trainer`) owns the first three lines (the
learner ranks compute its ``sequence_kl``), each learner rank (:func:`rexthinker.grpo.update.update`)
the loop::

    rewards = rewards - kl_coef * sequence_kl(lp, ref_lp, mask, kl_estimator)    # kl_mode=reward only
    adv = group_advantages(rewards, uids, advantage)              # (r - mean) / (unbiased std + 1e-6)
    keep, counts = filter_groups(rewards, uids)                   # filter_zero_variance only
    for each optimizer step (ppo_epochs x mini_batches):
        tokens, seqs = the step's masked tokens, and sequences with at least one, over all ranks
        for micro in micro_batches:
            lp, ent = token_logprobs(logits, ids), entropy_from_logits(logits)    # old_lp: before the update
            norm = dict(global_tokens=tokens, global_seqs=seqs, loss_scale_tokens=max_new_tokens)
            pg, stats = policy_loss(lp, old_lp, adv, mask, clip_low, clip_high, loss_agg, **norm)
            kl = aggregate(kl_penalty(lp, ref_lp, kl_estimator), mask, loss_agg, **norm)   # kl_mode=loss only
            (pg + kl_coef * kl - entropy_coef * aggregate(ent, mask, loss_agg, **norm)).backward()
        optimizer step

Passing the step's normalisers makes the summed micro-batch losses equal the full-batch loss, so
the update does not depend on how the step is split. Across data-parallel ranks they are counted
over all ranks; a backend that averages gradients over ``W`` ranks then needs the loss multiplied
by ``W`` (``Learner.grad_scale``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

AdvantageMode = Literal["grpo", "drgrpo"]
KLEstimator = Literal["k1", "k2", "k3", "low_var_kl"]
AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
Count = int | float | Tensor

LOG_RATIO_LIMIT = 20.0  # |log(pi / pi_ref)| and |log(pi / pi_old)| are clamped here before exp


# ---------------------------------------------------------------------------------------------
# Groups: advantages and zero-variance filtering


def _group_index(group_ids: Tensor | Sequence, n: int, device: torch.device) -> tuple[Tensor, int]:
    """Dense group index in ``[0, G)`` for each of the ``n`` samples, and ``G``. Ids may be a 1-D
    tensor or any sequence of hashable values (uids, strings); groups need not be contiguous."""
    if isinstance(group_ids, Tensor):
        if group_ids.shape != (n,):
            raise ValueError(f"group_ids has shape {tuple(group_ids.shape)}, expected ({n},)")
        _, index = torch.unique(group_ids, return_inverse=True)
    else:
        ids = list(group_ids)
        if len(ids) != n:
            raise ValueError(f"{len(ids)} group ids for {n} rewards")
        dense: dict = {}
        index = torch.tensor([dense.setdefault(g, len(dense)) for g in ids], dtype=torch.long)
    index = index.to(device=device, dtype=torch.long)
    return index, (int(index.max()) + 1 if n else 0)


def _check_rewards(rewards: Tensor) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (one per sample), got shape {tuple(rewards.shape)}")


def group_advantages(
    rewards: Tensor, group_ids: Tensor | Sequence, mode: AdvantageMode = "grpo", eps: float = 1e-6
) -> Tensor:
    """One advantage per sample from its group's rewards: ``rewards`` (N,), ``group_ids`` (N,).

    ``grpo``: ``(r - mean_g) / (std_g + eps)`` with the unbiased (n - 1) std; a group of one sample
    has std 0 and advantage 0. ``drgrpo`` (Dr. GRPO): ``r - mean_g``, no division. A group whose
    rewards are all equal gets advantage 0 in both modes. Statistics are taken in float64; the
    result has the rewards' float dtype (float32 for integer rewards).
    """
    _check_rewards(rewards)
    if mode not in ("grpo", "drgrpo"):
        raise ValueError(f"unknown advantage mode {mode!r}; expected 'grpo' or 'drgrpo'")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    index, groups = _group_index(group_ids, rewards.numel(), rewards.device)
    r = rewards.detach().to(torch.float64)
    counts = torch.zeros(groups, dtype=torch.float64, device=r.device).index_add_(0, index, torch.ones_like(r))
    sums = torch.zeros_like(counts).index_add_(0, index, r)
    centred = r - (sums / counts.clamp(min=1))[index]
    if mode == "drgrpo":
        return centred.to(out_dtype)
    squares = torch.zeros_like(counts).index_add_(0, index, centred.square())
    std = (squares / (counts - 1).clamp(min=1)).sqrt()  # a singleton's sum of squares is 0, so std 0
    return (centred / (std[index] + eps)).to(out_dtype)


def filter_groups(
    rewards: Tensor, group_ids: Tensor | Sequence, atol: float = 1e-8
) -> tuple[Tensor, dict[str, int]]:
    """DAPO-style dynamic-sampling filter: the (N,) bool keep-mask (False for samples of
    zero-variance groups) and counts ``groups``, ``groups_kept``, ``samples``, ``samples_kept``.

    When every group is filtered the mask is all False and ``groups_kept`` is 0: the caller then
    skips the update (and logs it) rather than training on an empty batch.
    """
    _check_rewards(rewards)
    index, groups = _group_index(group_ids, rewards.numel(), rewards.device)
    r = rewards.detach().to(torch.float64)
    high = torch.full((groups,), -torch.inf, dtype=torch.float64, device=r.device).scatter_reduce(0, index, r, "amax")
    low = torch.full((groups,), torch.inf, dtype=torch.float64, device=r.device).scatter_reduce(0, index, r, "amin")
    flat = (high - low) <= atol  # (G,): the group's rewards are all equal within atol
    keep = ~flat[index]
    counts = {
        "groups": groups,
        "groups_kept": int((~flat).sum()),
        "samples": rewards.numel(),
        "samples_kept": int(keep.sum()),
    }
    return keep, counts


# ---------------------------------------------------------------------------------------------
# Per-token quantities


def kl_penalty(
    logprob: Tensor, ref_logprob: Tensor, estimator: KLEstimator = "low_var_kl", clamp: float = 10.0
) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens' log-probs (same shape out).

    With ``d = logprob - ref_logprob`` (and ``r = pi_ref / pi = exp(-d)``):

    - ``k1``: ``d``; unbiased, high variance, can be negative.
    - ``k2``: ``d**2 / 2``; biased, non-negative.
    - ``k3``: ``exp(-d) - 1 + d`` = ``r - 1 - log r``; unbiased and non-negative (the convexity of
      exp), with lower variance than ``k1``. Its gradient w.r.t. ``logprob`` is ``1 - r``.
    - ``low_var_kl``: ``k3`` with ``d`` clamped to [-20, 20] and the result clamped to
      [-clamp, clamp] (``clamp`` is used by this estimator only). This is "the low-variance k3
      estimator" of the reference recipe (verl / EasyR1 ``kl_loss_type=low_var_kl``); where a
      clamp binds, the token contributes no gradient.

    ``k3`` is computed as ``expm1(-d) + d``, which stays >= 0 in floating point for tiny ``d``;
    unclamped, it overflows to inf once ``-d`` passes ~88 in float32.
    """
    d = logprob - ref_logprob
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        return torch.expm1(-d) + d
    if estimator == "low_var_kl":
        d = d.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        return (torch.expm1(-d) + d).clamp(-clamp, clamp)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of k1, k2, k3, low_var_kl")


def sequence_kl(logprob: Tensor, ref_logprob: Tensor, mask: Tensor, estimator: KLEstimator = "low_var_kl") -> Tensor:
    """(B,) KL(pi || pi_ref) of each sequence: the per-token :func:`kl_penalty` summed over its
    masked tokens, not differentiated. ``kl_mode=reward`` subtracts ``kl_coef`` times this from the
    sequence's reward before advantages (the alternative to the KL loss term)."""
    return torch.where(mask.bool(), kl_penalty(logprob, ref_logprob, estimator).detach(), 0.0).sum(-1)


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """(B, T) float32 log-prob of ``tokens`` (B, T) under ``logits`` (B, T, V), any float dtype.
    ``logits[:, t]`` must already be the distribution that scored ``tokens[:, t]`` (shift before
    calling)."""
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}")
    x = logits.float()
    # log_softmax(x)[y] == x[y] - logsumexp(x): the same value without a second (B, T, V) tensor
    return x.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """(B, T) float32 entropy ``-sum_v p log p`` of the softmax of ``logits`` (B, T, V); stable for
    large and ``-inf`` logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(-1)  # 0 * log 0 = 0 for -inf logits


# ---------------------------------------------------------------------------------------------
# Loss aggregation and the clipped surrogate


def _denominator(value: Count | None, local: Tensor, like: Tensor) -> Tensor:
    chosen = local if value is None else value
    return torch.as_tensor(chosen, dtype=like.dtype, device=like.device).clamp(min=1)


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: AggMode = "token-mean",
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
    loss_scale_tokens: Count | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token loss over the masked tokens to a scalar.

    - ``token-mean``: ``sum(loss * mask) / tokens`` (every token weighs the same).
    - ``seq-mean-token-mean``: each sequence's mean over its tokens, summed, ``/ seqs``.
    - ``seq-mean-token-sum-norm`` (Dr. GRPO): each sequence's token sum ``/ loss_scale_tokens``,
      summed, ``/ seqs``. ``loss_scale_tokens`` should be a constant of the run (the maximum
      response length); None uses this batch's ``T``, which varies with padding.

    ``tokens`` / ``seqs`` are ``global_tokens`` / ``global_seqs`` when given (the whole step's
    counts of masked tokens and of sequences with at least one, over all ranks), so that the
    losses of a step's micro-batches sum to the loss of the full batch; when None, this batch's
    own counts. Only sequences with at least one masked token count as sequences. Masked positions
    never reach the result, even if inf or NaN.
    """
    if per_token.shape != mask.shape or per_token.dim() != 2:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} must both be (B, T)")
    m = mask.bool()
    masked = torch.where(m, per_token, 0.0)
    if mode == "token-mean":
        return masked.sum() / _denominator(global_tokens, m.sum(), per_token)
    seq_tokens = m.sum(dim=-1)
    if mode == "seq-mean-token-mean":
        seq_loss = masked.sum(dim=-1) / seq_tokens.clamp(min=1)
    elif mode == "seq-mean-token-sum-norm":
        scale = per_token.shape[-1] if loss_scale_tokens is None else loss_scale_tokens
        seq_loss = masked.sum(dim=-1) / scale
    else:
        raise ValueError(f"unknown aggregation {mode!r}; expected one of {AggMode.__args__}")
    return seq_loss.sum() / _denominator(global_seqs, (seq_tokens > 0).sum(), per_token)


def policy_loss(
    logprob: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    agg: AggMode = "token-mean",
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
    loss_scale_tokens: Count | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with separate low / high clip ranges (DAPO's clip-higher).

    ``logprob`` (B, T) carries the gradient; ``old_logprob`` (B, T) and ``advantages`` ((B,) per
    sequence, broadcast over tokens, or (B, T) per token) are treated as constants. Per token, with
    ``ratio = exp(logprob - old_logprob)`` (log-ratio clamped to [-20, 20]):

        loss = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))

    reduced by :func:`aggregate` with ``agg`` and the normalisers. Returns ``(loss, stats)``;
    ``stats`` are detached scalars over this batch's masked tokens: ``clip_frac`` (share of tokens
    where the clipped branch is strictly larger, i.e. the token gets no gradient), split into
    ``clip_frac_low`` (A < 0, ratio < 1 - clip_low) and ``clip_frac_high`` (A > 0, ratio >
    1 + clip_high); ``approx_kl`` = mean of ``(logprob - old_logprob)**2 / 2`` (the k2 estimate of
    KL to the old policy, >= 0); ``ratio_mean`` and ``ratio_max``.
    """
    if logprob.shape != old_logprob.shape or logprob.shape != mask.shape:
        raise ValueError(f"logprob {tuple(logprob.shape)}, old_logprob and mask must share one (B, T) shape")
    adv = advantages.detach().to(logprob.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    if adv.shape not in ((logprob.shape[0], 1), logprob.shape):
        shapes = f"advantages {tuple(advantages.shape)}, logprob {tuple(logprob.shape)}"
        raise ValueError(f"{shapes}: advantages must be (B,) per sequence or (B, T) per token")
    log_ratio = logprob - old_logprob.detach()
    ratio = log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT).exp()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = aggregate(torch.maximum(unclipped, clipped), mask, agg, global_tokens, global_seqs, loss_scale_tokens)

    with torch.no_grad():
        m = mask.bool()
        tokens = m.sum().clamp(min=1)
        active = (clipped > unclipped) & m
        adv_full = adv.expand_as(logprob)
        stats = {
            "clip_frac": active.sum() / tokens,
            "clip_frac_low": (active & (adv_full < 0)).sum() / tokens,
            "clip_frac_high": (active & (adv_full > 0)).sum() / tokens,
            "approx_kl": torch.where(m, 0.5 * log_ratio.square(), 0.0).sum() / tokens,
            "ratio_mean": torch.where(m, ratio, 0.0).sum() / tokens,
            "ratio_max": torch.where(m, ratio, 0.0).amax() if m.any() else ratio.new_zeros(()),
        }
    return loss, stats
