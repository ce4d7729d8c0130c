"""The math of one GRPO step, on plain tensors: advantages, group filtering, KL, the clipped loss.

No model, no distributed code: the trainer computes log-probs with :func:`token_logprobs`, calls
these functions, and owns everything else. Shapes: ``N`` samples (one per completion), ``B``
sequences in a (micro-)batch, ``T`` token positions, ``V`` vocabulary entries; ``mask`` marks the
completion tokens that carry loss (bool or 0/1).

The reference recipe (contracts §6) maps onto these calls as::

    adv = group_advantages(rewards, uids, mode="grpo")                   # (r - mean) / (unbiased std + 1e-6)
    tokens, seqs = loss_normalisers(step_mask)                            # once per optimizer step
    for micro in micro_batches:                                           # then once per micro-batch
        pg, stats = policy_loss(lp, old_lp, adv, mask, clip_low=0.2, clip_high=0.3,
                                agg="token-mean", global_tokens=tokens)
        kl = aggregate(kl_penalty(lp, ref_lp, "low_var_kl"), mask, "token-mean", global_tokens=tokens)
        (pg + 0.01 * kl).backward()

Passing the step's normalisers makes the summed micro-batch losses equal the full-batch loss, so
the update does not depend on how the step is split. Across data-parallel ranks, count the
normalisers over all ranks; a backend that averages gradients over ``W`` ranks then needs the
loss multiplied by ``W`` (``Learner.grad_scale``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def _flat_groups(rewards: Tensor, index: Tensor, groups: int, atol: float) -> Tensor:
    """(G,) bool: the group's rewards span at most ``atol`` (max - min <= atol)."""
    r = rewards.detach().to(torch.float64)
    high = torch.full((groups,), -torch.inf, dtype=torch.float64, device=r.device).scatter_reduce(0, index, r, "amax")
    low = torch.full((groups,), torch.inf, dtype=torch.float64, device=r.device).scatter_reduce(0, index, r, "amin")
    return (high - low) <= atol


def zero_variance_groups(rewards: Tensor, group_ids: Tensor | Sequence, atol: float = 1e-8) -> Tensor:
    """(N,) bool: True for each sample whose group's rewards are all equal within ``atol``
    (a single-sample group counts as equal). Such a group has no learning signal under GRPO."""
    _check_rewards(rewards)
    index, groups = _group_index(group_ids, rewards.numel(), rewards.device)
    return _flat_groups(rewards, index, groups, atol)[index]


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
    flat = _flat_groups(rewards, index, groups, atol)
    keep = ~flat[index]
    counts = {
        "groups": groups,
        "groups_kept": int((~flat).sum()),
        "samples": rewards.numel(),
        "samples_kept": int(keep.sum()),
    }
    return keep, counts


def kl_as_reward_penalty(rewards: Tensor, kl: Tensor, mask: Tensor, coef: float) -> Tensor:
    """KL as a reward penalty (the alternative to the KL loss term), applied before advantages.

    ``kl`` (B, T) is a per-token estimate (usually ``kl_penalty(..., "k1")``) and is not
    differentiated. Sequence rewards (B,) lose ``coef * sum_t kl`` over the masked tokens;
    per-token rewards (B, T) lose ``coef * kl`` at each masked token.
    """
    penalty = torch.where(mask.bool(), kl.detach(), 0.0)
    if rewards.dim() == 1 and rewards.shape[0] == kl.shape[0]:
        return rewards - coef * penalty.sum(-1).to(rewards.dtype)
    if rewards.shape == kl.shape:
        return rewards - coef * penalty.to(rewards.dtype)
    raise ValueError(f"rewards {tuple(rewards.shape)} must be (B,) or (B, T) for kl {tuple(kl.shape)}")


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


def _over_time_chunks(fn: Callable[..., Tensor], chunk: int | None, *tensors: Tensor) -> Tensor:
    """Apply ``fn`` to slices of at most ``chunk`` positions along dim 1 and concatenate."""
    steps = tensors[0].shape[1]
    if chunk is None or chunk >= steps:
        return fn(*tensors)
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of positions, got {chunk}")
    return torch.cat([fn(*(t[:, s : s + chunk] for t in tensors)) for s in range(0, steps, chunk)], dim=1)


def _logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    x = logits.float()
    # log_softmax(x)[y] == x[y] - logsumexp(x): the same value without a second (B, T, V) tensor
    return x.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


def _entropy(logits: Tensor) -> Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(-1)  # 0 * log 0 = 0 for -inf logits


def token_logprobs(logits: Tensor, tokens: Tensor, chunk: int | None = None) -> Tensor:
    """(B, T) float32 log-prob of ``tokens`` (B, T) under ``logits`` (B, T, V), any float dtype.

    ``logits[:, t]`` must already be the distribution that scored ``tokens[:, t]`` (shift before
    calling). ``chunk`` computes at most that many positions at a time: it bounds the float32
    temporaries of a no-grad pass (old / reference log-probs); under autograd the saved tensors of
    every chunk are kept, so it does not lower the backward's memory.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}")
    return _over_time_chunks(_logprobs, chunk, logits, tokens)


def entropy_from_logits(logits: Tensor, chunk: int | None = None) -> Tensor:
    """(B, T) float32 entropy ``-sum_v p log p`` of the softmax of ``logits`` (B, T, V); stable for
    large and ``-inf`` logits. ``chunk`` as in :func:`token_logprobs`."""
    return _over_time_chunks(_entropy, chunk, logits)


# ---------------------------------------------------------------------------------------------
# Loss aggregation and the clipped surrogate


def loss_normalisers(mask: Tensor) -> tuple[Tensor, Tensor]:
    """The counts to pass as ``global_tokens`` / ``global_seqs``: masked tokens, and sequences with
    at least one masked token, of the whole step's mask (B, T). Sum them over data-parallel ranks."""
    m = mask.bool()
    return m.sum(), m.any(dim=-1).sum()


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
    counts, see :func:`loss_normalisers`), so that the losses of a step's micro-batches sum to the
    loss of the full batch; when None, this batch's own counts. Only sequences with at least one
    masked token count as sequences. Masked positions never reach the result, even if inf or NaN.
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
