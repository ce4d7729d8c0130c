"""The GRPO update on one learner rank, run directly on the tiny model (no Ray): its loss is the
hand-written policy loss, weightless rows change nothing, and the micro-batch split does not change
the step."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from rexthinker.config import ConfigError
from rexthinker.data.synthref import generate
from rexthinker.generation import render
from rexthinker.grpo.algorithm import kl_penalty
from rexthinker.grpo.config import AlgorithmConfig, GRPOConfig
from rexthinker.grpo.experience import TokenSequence, collate, encode_prompt, token_logprobs_and_entropy
from rexthinker.grpo.update import sequence_kl, update
from rexthinker.models.load import load_policy
from rexthinker.train.learner import Learner, LearnerConfig, OptimConfig

LENGTHS = [(0, 5), (2, 9), (1, 3), (0, 12), (2, 7)]  # (prompt, response tokens)
ADVANTAGES = torch.tensor([1.0, -0.5, 0.3, -1.2, 0.8])
MAX_NEW_TOKENS = 16
PAD_ID = 0  # any id: padding never reaches a loss-carrying token


@pytest.fixture(scope="module")
def processor(tiny_model_path):
    return AutoProcessor.from_pretrained(tiny_model_path)


@pytest.fixture(scope="module")
def seqs(processor):
    """3 prompts with different images and 5 responses of fixed random tokens."""
    encoded = [encode_prompt(processor, prompt, image) for _, _, prompt, image in render(generate(3, seed=21, split="val"), processor)]
    top = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # below every special token
    gen = torch.Generator().manual_seed(0)
    return [TokenSequence(encoded[p], torch.randint(0, top, (n,), generator=gen).tolist()) for p, n in LENGTHS]


@pytest.fixture(scope="module")
def reference(tiny_model_path):
    """The starting policy moved a little, so that the KL term is not 0 at the first step."""
    model, _ = load_policy(str(tiny_model_path))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval().requires_grad_(False)


def _learner(path, gradient_checkpointing: bool = False) -> Learner:
    model, _ = load_policy(str(path))  # vision tower and projector frozen
    optim = OptimConfig(lr=1e-3, weight_decay=0.0, scheduler="constant", warmup_ratio=0.0)
    cfg = LearnerConfig(strategy="single", precision="fp32", gradient_checkpointing=gradient_checkpointing)
    return Learner(model, optim, cfg, total_steps=10)


def _state(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.module.state_dict().items()}


def _record_grads(learner: Learner) -> list[dict[str, torch.Tensor]]:
    """Each optimizer step's gradients, recorded as :func:`update` calls ``learner.step``."""
    grads, step = [], learner.step

    def recording_step():
        grads.append({n: p.grad.clone() for n, p in learner.module.named_parameters() if p.grad is not None})
        return step()

    learner.step = recording_step
    return grads


def _run(learner, reference, seqs, advantages, weightless=None, **alg):
    cfg = AlgorithmConfig(**{"kl_coef": 0.05, "entropy_coef": 0.01, **alg})
    return update(learner, reference, seqs, advantages, cfg, pad_id=PAD_ID, step=3, loss_scale_tokens=MAX_NEW_TOKENS, weightless=weightless)


def _assert_same_grads(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for one, other in zip(a, b):
        assert one.keys() == other.keys()
        for name in one:
            scale = other[name].abs().max().clamp_min(1e-8)
            assert ((one[name] - other[name]).abs().max() / scale) < 1e-4, name


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-5):  # Adam's first steps are about lr * sign(grad)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), (key, (a[key] - b[key]).abs().max())


def _assert_same_metrics(a: dict, b: dict):
    for key in ("actor/loss", "actor/kl", "actor/entropy", "actor/clip_frac", "actor/approx_kl", "actor/ratio_max", "actor/grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), key
    assert a["actor/updates"] == b["actor/updates"]


def test_one_step_is_the_hand_written_policy_loss(tiny_model_path, seqs, reference):
    # ppo_epochs=1, mini_batches=1: old log-probs are the current ones, so every ratio is 1 (nothing
    # clips) and the token-mean policy loss is -sum_i A_i n_i / sum_i n_i
    # = -(5 - 4.5 + 0.9 - 14.4 + 5.6) / 36 = 7.4 / 36 = 0.2055556.
    learner, by_hand = _learner(tiny_model_path), _learner(tiny_model_path)
    before, grads, hand_grads = _state(learner), _record_grads(learner), _record_grads(by_hand)
    metrics = _run(learner, reference, seqs, ADVANTAGES)

    batch = collate(seqs, PAD_ID)  # the plain layout: every row prompt + response, one forward
    mask = batch["response_mask"]
    lp, entropy = token_logprobs_and_entropy(by_hand.module.train(), batch, with_entropy=True)
    with torch.no_grad():
        ref_lp, _ = token_logprobs_and_entropy(reference, batch)
    tokens = mask.sum()
    ratio = (lp - lp.detach()).exp()  # 1, with the gradient of the ratio
    pg = (-ADVANTAGES[:, None] * ratio)[mask].sum() / tokens
    assert pg.item() == pytest.approx(7.4 / 36, abs=1e-6)
    d = lp - ref_lp
    kl = (torch.expm1(-d) + d)[mask].sum() / tokens  # k3; the perturbation is far from low_var_kl's clamps
    loss = pg + 0.05 * kl - 0.01 * entropy[mask].sum() / tokens
    by_hand.backward(loss)
    by_hand.step()

    assert metrics["actor/loss"] == pytest.approx(loss.item(), abs=1e-5)
    assert metrics["actor/kl"] == pytest.approx(kl.item(), rel=1e-4)
    assert metrics["actor/entropy"] == pytest.approx((entropy[mask].sum() / tokens).item(), rel=1e-4)
    assert metrics["actor/clip_frac"] == 0.0 and metrics["actor/ratio_max"] == 1.0 and metrics["actor/updates"] == 1
    after = _state(learner)
    assert any(not torch.equal(before[k], after[k]) for k in before if "layers" in k)
    _assert_same_grads(grads, hand_grads)
    _assert_same_weights(after, _state(by_hand))


def test_weightless_rows_change_nothing(tiny_model_path, seqs, reference):
    # two more rows, with large advantages, anywhere in the batch: weightless, they must not count
    extra = [TokenSequence(seqs[1].prompt, seqs[3].response_ids[:10]), TokenSequence(seqs[0].prompt, seqs[4].response_ids)]
    with_rows = [seqs[0], extra[0], *seqs[1:4], extra[1], seqs[4]]
    advantages = torch.cat([ADVANTAGES[:1], torch.tensor([5.0]), ADVANTAGES[1:4], torch.tensor([-7.0]), ADVANTAGES[4:]])
    weightless = torch.tensor([False, True, False, False, False, True, False])

    plain, with_extra = _learner(tiny_model_path), _learner(tiny_model_path)
    expected_grads, grads = _record_grads(plain), _record_grads(with_extra)
    expected = _run(plain, reference, seqs, ADVANTAGES, ppo_epochs=2)
    got = _run(with_extra, reference, with_rows, advantages, weightless, ppo_epochs=2)
    _assert_same_metrics(got, expected)
    _assert_same_grads(grads, expected_grads)
    _assert_same_weights(_state(with_extra), _state(plain))

    # a rank with only weightless rows (the driver's filler) runs the passes and moves nothing
    idle = _learner(tiny_model_path)
    before = _state(idle)
    metrics = _run(idle, reference, seqs[:1], ADVANTAGES[:1] + 3.0, torch.tensor([True]), ppo_epochs=2)
    assert metrics["actor/loss"] == 0.0 and metrics["actor/updates"] == 2
    after = _state(idle)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("share_prompts", [True, False])
def test_the_micro_batch_budget_does_not_change_the_step(tiny_model_path, seqs, reference, share_prompts):
    # 2 mini-batches: old log-probs, a shuffle, 2 optimizer steps; a budget of 1 token puts every
    # sequence in a micro-batch of its own, a large one all of a mini-batch in one
    learners, grads, metrics = [], [], []
    for budget in (1, 100_000):
        learner = _learner(tiny_model_path)
        grads.append(_record_grads(learner))
        metrics.append(_run(learner, reference, seqs, ADVANTAGES, mini_batches=2, micro_batch_tokens=budget,
                            share_prompts=share_prompts))  # fmt: skip
        learners.append(learner)
    _assert_same_metrics(metrics[0], metrics[1])
    assert metrics[0]["actor/updates"] == len(grads[0]) == 2
    _assert_same_grads(grads[0], grads[1])
    _assert_same_weights(_state(learners[0]), _state(learners[1]))


def test_gradient_checkpointing_gives_the_same_step_and_refuses_shared_prompts(tiny_model_path, seqs, reference):
    # The released GRPO recipe checkpoints; transformers then drops the prompt's key/value cache in
    # training, which the shared-prompt layout runs its responses on: refused in the config, and the
    # plain layout it must use instead computes the same step as without checkpointing.
    learners, grads, metrics = [], [], []
    for checkpointing in (False, True):
        learner = _learner(tiny_model_path, gradient_checkpointing=checkpointing)
        grads.append(_record_grads(learner))
        metrics.append(_run(learner, reference, seqs, ADVANTAGES, share_prompts=False))
        learners.append(learner)
    _assert_same_metrics(metrics[0], metrics[1])
    _assert_same_grads(grads[0], grads[1])
    _assert_same_weights(_state(learners[0]), _state(learners[1]))
    with pytest.raises(AttributeError, match="reorder_cache"):  # what the shared layout did before the config refused it
        _run(learners[1], reference, seqs, ADVANTAGES, share_prompts=True)
    with pytest.raises(ConfigError, match="algorithm.share_prompts=false with learner.gradient_checkpointing=true"):
        GRPOConfig(learner=LearnerConfig(gradient_checkpointing=True))
    GRPOConfig(learner=LearnerConfig(gradient_checkpointing=True), algorithm=AlgorithmConfig(share_prompts=False))


def test_sequence_kl_is_the_summed_kl_of_each_response(tiny_model_path, seqs, reference):
    learner = _learner(tiny_model_path)
    cfg = AlgorithmConfig(kl_mode="reward", kl_estimator="k1", micro_batch_tokens=1)  # one sequence per micro-batch
    got = sequence_kl(learner, reference, seqs, cfg, PAD_ID)

    batch = collate(seqs, PAD_ID)
    mask = batch["response_mask"]
    with torch.no_grad():
        lp, _ = token_logprobs_and_entropy(learner.module, batch)
        ref_lp, _ = token_logprobs_and_entropy(reference, batch)
    expected = [float(kl_penalty(lp[i][mask[i]], ref_lp[i][mask[i]], "k1").sum()) for i in range(len(seqs))]
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(abs(v) > 1e-3 for v in got)  # the reference differs from the policy
