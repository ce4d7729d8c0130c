"""GRPO with LoRA on one learner rank (the PolicyWorker, no Ray): only the adapters move, the
reference is the same model with its adapters off and equals the base model, and the weights sent to
the rollout engines are the plain model's, adapters merged."""

from __future__ import annotations

import pytest
import torch

from rexthinker.config import load_config
from rexthinker.grpo.config import GRPOConfig
from rexthinker.grpo.experience import collate_shared, token_logprobs_and_entropy
from rexthinker.grpo.update import response_logprobs
from rexthinker.grpo.workers import PolicyWorker
from rexthinker.models import lora
from rexthinker.models.load import load_policy
from tests.grpo.test_update import ADVANTAGES, processor, seqs  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def worker(tiny_model_path):
    cfg = load_config(GRPOConfig, None, [
        f"model.path={tiny_model_path}", "model.lora.r=4", "model.lora.alpha=8", "algorithm.kl_coef=0.05",
        "algorithm.entropy_coef=0.01", "optim.lr=1e-2", "learner.strategy=single", "learner.precision=fp32",
        "rollout.max_new_tokens=16",
    ])  # fmt: skip
    worker = PolicyWorker(cfg, total_steps=10)
    return worker


@pytest.fixture(scope="module")
def trained(worker, seqs):  # noqa: F811
    """Two updates: the parameters before them and the metrics of the second."""
    from rexthinker.grpo.update import update

    before = {n: p.detach().clone() for n, p in worker.learner.module.named_parameters()}
    for step in range(2):
        metrics = update(worker.learner, worker.reference, seqs, ADVANTAGES, worker.cfg.algorithm, pad_id=0, step=step,
                         loss_scale_tokens=16)  # fmt: skip
    return before, metrics


def test_the_reference_is_the_policy_with_its_adapters_off(worker):
    assert isinstance(worker.reference, lora.BasePolicy) and worker.reference.module is worker.learner.module


def test_updates_move_the_adapters_only_and_the_reference_stays_the_base(worker, trained, seqs, tiny_model_path):  # noqa: F811
    model = worker.learner.module
    before, metrics = trained
    assert metrics["actor/kl"] > 0  # the second step's policy is no longer the base
    for name, p in model.named_parameters():
        adapter = ".lora_A." in name or ".lora_B." in name
        assert p.requires_grad == adapter, name
        assert torch.equal(before[name], p.detach()) != adapter, name
    assert model.training  # the reference's eval mode did not leak

    base, _ = load_policy(str(tiny_model_path))
    alg = worker.cfg.algorithm
    want = response_logprobs(base.eval(), seqs, alg, pad_id=0)
    got = response_logprobs(worker.reference, seqs, alg, pad_id=0)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    policy = response_logprobs(model.eval(), seqs, alg, pad_id=0)
    assert max((a - b).abs().max() for a, b in zip(policy, want)) > 1e-4  # the adapters do change the policy


def test_synced_weights_are_the_merged_plain_model(worker, trained, seqs, tiny_model_path):  # noqa: F811
    from transformers import AutoModelForImageTextToText

    adapters = {k: v.clone() for k, v in lora.adapter_state(worker.learner.module.state_dict()).items()}
    weights = dict(worker.weights())
    assert adapters.keys() == lora.adapter_state(worker.learner.module.state_dict()).keys()
    for key, value in lora.adapter_state(worker.learner.module.state_dict()).items():
        assert torch.equal(value, adapters[key]), key  # merging on the fly leaves the trained adapters alone

    plain = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32)
    assert weights.keys() == plain.state_dict().keys()
    plain.load_state_dict(weights)
    batch = collate_shared(seqs, 0)
    with torch.no_grad():
        want, _ = token_logprobs_and_entropy(worker.learner.module.eval(), batch)
        got, _ = token_logprobs_and_entropy(plain.eval(), batch)
    assert (got - want).abs().max() < 1e-4


def test_a_resumed_worker_has_the_same_adapters_on_the_same_base(worker, trained, tmp_path, tiny_model_path):
    """The driver restarts learners with ``model_path=step-N/hf`` (merged): a LoRA worker must start
    from the base instead and take its adapters from the learner state."""
    worker.save(str(tmp_path))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and (tmp_path / "hf" / "config.json").is_file()
    again = PolicyWorker(worker.cfg, total_steps=10, model_path=str(tmp_path / "hf"))
    again.load(str(tmp_path))
    want = worker.learner.module.state_dict()
    for key, value in again.learner.module.state_dict().items():
        assert torch.equal(value, want[key]), key
