"""GRPO math: advantages, group filtering, KL estimators, the clipped loss and its aggregation.

Expected values are worked out by hand (in the comments) and written as literals.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rexthinker.grpo import algorithm as alg

# Groups, not contiguous: a = [1.0, 0.0, 0.5], b = [0.7] (single sample), c = [0.3, 0.3] (constant),
# d = [1.0, 0.0] (two samples: the unbiased std is sqrt(0.5), the biased one would be 0.5).
IDS = ["a", "c", "a", "b", "c", "d", "a", "d"]
REWARDS = [1.0, 0.3, 0.0, 0.7, 0.3, 1.0, 0.5, 0.0]


def zero_variance_groups(rewards, group_ids, atol=1e-8):
    """(N,) bool: the samples whose group's rewards are all equal within ``atol``, the ones
    :func:`alg.filter_groups` drops."""
    keep, _ = alg.filter_groups(rewards, group_ids, atol)
    return ~keep


def test_grpo_advantages_use_the_unbiased_std_per_group():
    adv = alg.group_advantages(torch.tensor(REWARDS), IDS, mode="grpo")
    # a: mean 0.5, deviations ±0.5 / 0, std = sqrt(0.5 / 2) = 0.5 -> ±0.5 / (0.5 + 1e-6) = ±0.999998
    # b: one sample -> 0; c: constant -> 0; d: std = sqrt(0.5 / 1) -> ±0.5 / (0.7071068 + 1e-6) = ±0.7071058
    expected = torch.tensor([0.999998, 0.0, -0.999998, 0.0, 0.0, 0.7071058, 0.0, -0.7071058])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    assert adv.dtype == torch.float32 and torch.isfinite(adv).all()


def test_group_ids_may_be_a_tensor_and_groups_need_not_be_contiguous():
    as_tensor = torch.tensor([ord(g) for g in IDS])
    from_list = alg.group_advantages(torch.tensor(REWARDS), IDS)
    torch.testing.assert_close(alg.group_advantages(torch.tensor(REWARDS), as_tensor), from_list, atol=0, rtol=0)


def test_drgrpo_advantages_only_centre():
    adv = alg.group_advantages(torch.tensor(REWARDS), IDS, mode="drgrpo")
    torch.testing.assert_close(adv, torch.tensor([0.5, 0.0, -0.5, 0.0, 0.0, 0.5, 0.0, -0.5]), atol=1e-7, rtol=0)


def test_group_of_one_is_zero_not_nan():
    for mode in ("grpo", "drgrpo"):
        assert alg.group_advantages(torch.tensor([3.0]), [7], mode=mode).tolist() == [0.0]
    assert alg.group_advantages(torch.tensor([], dtype=torch.float32), []).numel() == 0


def test_advantages_reject_bad_inputs():
    with pytest.raises(ValueError, match="mode"):
        alg.group_advantages(torch.tensor([1.0, 0.0]), [0, 0], mode="ppo")
    with pytest.raises(ValueError, match="group ids"):
        alg.group_advantages(torch.tensor([1.0, 0.0]), [0])
    with pytest.raises(ValueError, match="1-D"):
        alg.group_advantages(torch.zeros(2, 2), [0, 0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0.0, 0.25, 1.0, -3.0])), min_size=1, max_size=24))
def test_advantages_are_finite_and_centred_in_every_group(rows):
    ids = [g for g, _ in rows]
    rewards = torch.tensor([r for _, r in rows], dtype=torch.float64)
    for mode in ("grpo", "drgrpo"):
        adv = alg.group_advantages(rewards, ids, mode=mode)
        assert torch.isfinite(adv).all()
        for g in set(ids):
            assert abs(sum(a for a, i in zip(adv.tolist(), ids) if i == g)) < 1e-9
    flat = zero_variance_groups(rewards, ids)
    assert (alg.group_advantages(rewards, ids)[flat] == 0).all()


# --- zero-variance filtering -----------------------------------------------------------------


def test_filter_groups_mixed():
    keep, counts = alg.filter_groups(torch.tensor(REWARDS), IDS)
    # a and d vary; b (single sample) and c (constant) carry no signal
    assert keep.tolist() == [True, False, True, False, False, True, True, True]
    assert zero_variance_groups(torch.tensor(REWARDS), IDS).tolist() == (~keep).tolist()
    assert counts == {"groups": 4, "groups_kept": 2, "samples": 8, "samples_kept": 5}


def test_filter_groups_when_every_group_is_filtered():
    keep, counts = alg.filter_groups(torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]), [0, 0, 1, 1, 1])
    assert keep.dtype == torch.bool and keep.tolist() == [False] * 5
    assert counts == {"groups": 2, "groups_kept": 0, "samples": 5, "samples_kept": 0}
    keep, counts = alg.filter_groups(torch.tensor([], dtype=torch.float32), [])
    assert keep.numel() == 0 and counts["groups_kept"] == 0


def test_filter_groups_when_none_is_filtered():
    keep, counts = alg.filter_groups(torch.tensor([1.0, 0.0, 0.2, 0.9]), torch.tensor([5, 9, 9, 5]))
    assert keep.all() and counts == {"groups": 2, "groups_kept": 2, "samples": 4, "samples_kept": 4}


def test_float_noise_within_atol_counts_as_equal():
    rewards = torch.tensor([0.3, 0.1 + 0.2, 1.0, 1.0 + 5e-9, 1.0, 1.0 + 1e-7], dtype=torch.float64)
    ids = [0, 0, 1, 1, 2, 2]  # 0.1 + 0.2 = 0.30000000000000004; 5e-9 < atol = 1e-8 < 1e-7
    assert zero_variance_groups(rewards, ids).tolist() == [True, True, True, True, False, False]
    assert zero_variance_groups(rewards, ids, atol=1e-6).all()


# --- KL estimators -------------------------------------------------------------------------------


def test_kl_estimators_at_hand_computed_points():
    ref = torch.full((4,), -2.0)
    logprob = ref + torch.tensor([0.0, 1.0, -1.0, 0.5])  # d = logprob - ref
    expected = {
        "k1": [0.0, 1.0, -1.0, 0.5],
        "k2": [0.0, 0.5, 0.5, 0.125],  # d^2 / 2
        "k3": [0.0, 0.3678794, 0.7182818, 0.1065307],  # e^-1 - 1 + 1, e - 1 - 1, e^-0.5 - 1 + 0.5
        "low_var_kl": [0.0, 0.3678794, 0.7182818, 0.1065307],  # no clamp binds here
    }
    for name, values in expected.items():
        torch.testing.assert_close(alg.kl_penalty(logprob, ref, name), torch.tensor(values), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="estimator"):
        alg.kl_penalty(logprob, ref, "k4")


def test_k3_is_non_negative_even_for_tiny_log_ratios():
    d = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([1e-12, -1e-12, 1e-8, -1e-8, 3e-4, -3e-4])])
    for dtype in (torch.float32, torch.float64):
        for name in ("k2", "k3", "low_var_kl"):
            assert (alg.kl_penalty(d.to(dtype), torch.zeros_like(d, dtype=dtype), name) >= 0).all(), (name, dtype)


def test_low_var_kl_clamps_huge_log_ratios():
    d = torch.tensor([50.0, -50.0, -100.0], requires_grad=True)
    zero = torch.zeros(3)
    k3 = alg.kl_penalty(d, zero, "k3")
    assert k3[0].item() == pytest.approx(49.0)  # e^-50 - 1 + 50
    assert k3[1].item() == pytest.approx(5.184705528587072e21, rel=1e-5)  # e^50 - 51
    assert math.isinf(k3[2].item())  # e^100 overflows float32
    low = alg.kl_penalty(d, zero, "low_var_kl")
    assert low.tolist() == [10.0, 10.0, 10.0]
    low.sum().backward()
    assert d.grad.tolist() == [0.0, 0.0, 0.0]  # a binding clamp passes no gradient
    # with a loose result clamp only the log-ratio clamp binds: d -> ±20
    wide = alg.kl_penalty(d.detach(), zero, "low_var_kl", clamp=1e9)
    torch.testing.assert_close(wide, torch.tensor([19.0, 485165174.4, 485165174.4]), rtol=1e-6, atol=1e-6)


def test_sequence_kl_penalises_each_reward_by_its_masked_tokens():
    kl = torch.tensor([[0.1, 0.2, 9.0], [0.5, -0.1, 0.4]])  # k1 against a zero reference: the values themselves
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # sequence rewards: 1 - 0.5 * (0.1 + 0.2) = 0.85; 2 - 0.5 * (0.5 - 0.1 + 0.4) = 1.6
    out = torch.tensor([1.0, 2.0]) - 0.5 * alg.sequence_kl(kl, torch.zeros(2, 3), mask, "k1")
    torch.testing.assert_close(out, torch.tensor([0.85, 1.6]))


# --- the clipped surrogate -----------------------------------------------------------------------

# Row 0 has A = +1, ratios 1, 1.5, 0.5; row 1 has A = -2, ratios 0.5, 1.2, (1.5 masked out).
# Per token max(-A r, -A clip(r, 0.8, 1.3)):
#   row 0: max(-1, -1) = -1;  max(-1.5, -1.3) = -1.3 (high clip binds);  max(-0.5, -0.8) = -0.5
#   row 1: max(1.0, 1.6) = 1.6 (low clip binds);  max(2.4, 2.4) = 2.4;  [max(3.0, 2.6) = 3.0, masked]
RATIOS = [[1.0, 1.5, 0.5], [0.5, 1.2, 1.5]]
MASK = [[1, 1, 1], [1, 1, 0]]


def _example(requires_grad=False):
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.5, -0.7]])
    logprob = (old + torch.tensor(RATIOS).log()).requires_grad_(requires_grad)
    return logprob, old, torch.tensor([1.0, -2.0]), torch.tensor(MASK, dtype=torch.bool)


@pytest.mark.parametrize(
    ("agg", "kwargs", "expected"),
    [
        ("token-mean", {}, 0.24),  # (-1 - 1.3 - 0.5 + 1.6 + 2.4) / 5 = 1.2 / 5
        ("seq-mean-token-mean", {}, 0.5333333),  # (-2.8 / 3 + 4.0 / 2) / 2
        ("seq-mean-token-sum-norm", {}, 0.2),  # (-2.8 / 3 + 4.0 / 3) / 2, scale = T = 3
        ("seq-mean-token-sum-norm", {"loss_scale_tokens": 4}, 0.15),  # (-2.8 + 4.0) / 4 / 2
        ("token-mean", {"global_tokens": 10}, 0.12),  # 1.2 / 10
        ("seq-mean-token-mean", {"global_seqs": 4}, 0.2666667),  # 1.0666667 / 4
    ],
)
def test_policy_loss_hand_computed(agg, kwargs, expected):
    logprob, old, adv, mask = _example()
    loss, _ = alg.policy_loss(logprob, old, adv, mask, clip_low=0.2, clip_high=0.3, agg=agg, **kwargs)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_policy_loss_stats_and_gradient():
    logprob, old, adv, mask = _example(requires_grad=True)
    loss, stats = alg.policy_loss(logprob, old, adv, mask)  # defaults: 0.2 / 0.3, token-mean
    assert stats["clip_frac"].item() == pytest.approx(0.4)  # 2 of 5 tokens: (0, 1) high, (1, 0) low
    assert stats["clip_frac_low"].item() == pytest.approx(0.2)
    assert stats["clip_frac_high"].item() == pytest.approx(0.2)
    assert stats["ratio_mean"].item() == pytest.approx(0.94, abs=1e-6)  # (1 + 1.5 + 0.5 + 0.5 + 1.2) / 5
    assert stats["ratio_max"].item() == pytest.approx(1.5, abs=1e-6)  # the masked 1.5 in row 1 does not count
    # (ln^2 1 + ln^2 1.5 + ln^2 0.5 + ln^2 0.5 + ln^2 1.2) / 5 / 2
    assert stats["approx_kl"].item() == pytest.approx(0.1158549, abs=1e-6)
    assert all(not s.requires_grad for s in stats.values())
    loss.backward()
    # d/dlogprob of -A r / 5 is -A r / 5 where unclipped, 0 where the clipped branch is active or masked
    expected = torch.tensor([[-0.2, 0.0, -0.1], [0.0, 0.48, 0.0]])
    torch.testing.assert_close(logprob.grad, expected, atol=1e-6, rtol=0)


def test_per_token_advantages_equal_broadcast_sequence_advantages():
    logprob, old, adv, mask = _example()
    per_seq, _ = alg.policy_loss(logprob, old, adv, mask)
    per_token, _ = alg.policy_loss(logprob, old, adv[:, None].expand(2, 3), mask)
    assert per_seq.item() == per_token.item()
    with pytest.raises(ValueError, match="advantages"):
        alg.policy_loss(logprob, old, torch.ones(3), mask)


def test_masked_positions_never_reach_the_loss():
    logprob, old, adv, mask = _example()
    noisy = logprob.detach().clone()
    noisy[1, 2] = float("nan")
    loss, stats = alg.policy_loss(noisy, old, adv, mask)
    assert loss.item() == pytest.approx(0.24, abs=1e-6)
    assert all(torch.isfinite(s) for s in stats.values())
    empty, stats = alg.policy_loss(logprob, old, adv, torch.zeros(2, 3, dtype=torch.bool))
    assert empty.item() == 0.0 and stats["clip_frac"].item() == 0.0


# --- micro-batch invariance ----------------------------------------------------------------------


def _random_step(rng: random.Random, gen: torch.Generator):
    batch, width = rng.randint(2, 10), rng.randint(1, 9)
    lengths = torch.tensor([rng.randint(0 if rng.random() < 0.15 else 1, width) for _ in range(batch)])
    mask = torch.arange(width)[None, :] < lengths[:, None]  # right-padded, some rows possibly empty
    old = -torch.rand(batch, width, generator=gen, dtype=torch.float64) * 3
    logprob = old + 0.4 * torch.randn(batch, width, generator=gen, dtype=torch.float64)  # ratios around 1
    adv = torch.randn(batch, generator=gen, dtype=torch.float64)
    return logprob, old, adv, mask


def _split(rng: random.Random, batch: int) -> list[list[int]]:
    order = list(range(batch))
    rng.shuffle(order)
    cuts = sorted(rng.sample(range(1, batch), rng.randint(0, batch - 1)))
    return [order[a:b] for a, b in zip([0, *cuts], [*cuts, batch])]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_losses_sum_to_the_full_batch_loss(agg):
    rng, gen = random.Random(agg), torch.Generator().manual_seed(0)
    for _ in range(40):
        logprob, old, adv, mask = _random_step(rng, gen)
        tokens, seqs = mask.sum(), mask.any(dim=-1).sum()  # the step's normalisers
        norm = {"global_tokens": tokens, "global_seqs": seqs, "loss_scale_tokens": 9}
        full_lp = logprob.clone().requires_grad_(True)
        full, _ = alg.policy_loss(full_lp, old, adv, mask, agg=agg, **norm)
        full.backward()

        split_lp = logprob.clone().requires_grad_(True)
        total = torch.zeros((), dtype=torch.float64)
        for rows in _split(rng, logprob.shape[0]):
            width = max(int(mask[rows].sum(-1).max()), 1)  # each micro-batch trimmed to its own padding
            micro, _ = alg.policy_loss(
                split_lp[rows, :width], old[rows, :width], adv[rows], mask[rows, :width], agg=agg, **norm
            )
            total = total + micro
        total.backward()

        torch.testing.assert_close(total, full.detach(), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(split_lp.grad, full_lp.grad, atol=1e-12, rtol=1e-12)


def test_local_normalisers_are_not_split_invariant():
    # the reason to pass global ones: two micro-batches of 1 and 3 tokens, token-mean
    per_token = torch.tensor([[1.0, 0.0, 0.0], [3.0, 3.0, 3.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    full = alg.aggregate(per_token, mask, "token-mean")  # 10 / 4 = 2.5
    local = alg.aggregate(per_token[:1], mask[:1]) + alg.aggregate(per_token[1:], mask[1:])  # 1 + 3
    glob = sum(alg.aggregate(per_token[i : i + 1], mask[i : i + 1], global_tokens=4) for i in range(2))
    assert (full.item(), local.item(), glob.item()) == (2.5, 4.0, 2.5)
    with pytest.raises(ValueError, match="aggregation"):
        alg.aggregate(per_token, mask, "sum")


# --- log-probs and entropy -----------------------------------------------------------------------


def test_entropy_of_uniform_is_log_vocab():
    for vocab in (2, 7, 1000):
        out = alg.entropy_from_logits(torch.zeros(2, 3, vocab, dtype=torch.bfloat16))
        assert out.dtype == torch.float32 and out.shape == (2, 3)
        torch.testing.assert_close(out, torch.full((2, 3), math.log(vocab)))


def test_entropy_hand_computed_and_stable():
    # p = [1/4, 3/4]: -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.5623351
    logits = torch.tensor([[[0.0, math.log(3.0)], [1e4, -1e4], [0.0, -math.inf]]])
    torch.testing.assert_close(alg.entropy_from_logits(logits), torch.tensor([[0.5623351, 0.0, 0.0]]))


def test_token_logprobs_hand_computed():
    # both rows are p = [1/4, 3/4] (a shift of the logits changes nothing): ln 0.75, ln 0.25
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0 + math.log(3.0)]]])
    out = alg.token_logprobs(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(out, torch.tensor([[-0.2876821, -1.3862944]]))
    assert alg.token_logprobs(logits.to(torch.bfloat16), torch.tensor([[1, 0]])).dtype == torch.float32
    with pytest.raises(ValueError, match="tokens"):
        alg.token_logprobs(logits, torch.tensor([[1, 0, 1]]))


def test_token_logprobs_equal_log_softmax_and_their_gradient():
    gen = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(3, 11, 50, generator=gen)
    tokens = torch.randint(0, 50, (3, 11), generator=gen)
    whole_lp = alg.token_logprobs(logits, tokens)
    torch.testing.assert_close(whole_lp, torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0])
    leaf = logits.clone().requires_grad_(True)
    alg.token_logprobs(leaf, tokens).sum().backward()
    torch.testing.assert_close(leaf.grad.sum(-1), torch.zeros(3, 11), atol=1e-5, rtol=0)  # softmax rows sum to 1
