"""The learner on one process: what a step updates, accumulation, clipping, the LR schedule, state
round trips and the Hugging Face export; DeepSpeed's config is built but not started."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rexthinker.train import dist
from rexthinker.train.learner import (
    Learner,
    LearnerConfig,
    OptimConfig,
    deepspeed_config,
    lr_lambda,
    param_groups,
    resolve_precision,
)

SINGLE = LearnerConfig(strategy="single", precision="fp32")


class Toy(nn.Module):
    """A frozen input layer, a trainable linear layer and norm; ``forward`` returns the loss."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.frozen = nn.Linear(3, 3)
        self.proj = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)
        self.frozen.requires_grad_(False)

    def forward(self, x, y, scale: float = 1.0):
        return ((self.norm(self.proj(self.frozen(x))) - y) ** 2).sum() * scale


def _batches(n: int, rows: int = 4):
    gen = torch.Generator().manual_seed(123)
    return [{"x": torch.randn(rows, 3, generator=gen), "y": torch.randn(rows, 2, generator=gen)} for _ in range(n)]


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _train(learner, batches):
    stats = []
    for batch in batches:
        learner.set_boundary(True)
        learner.backward(learner(**batch))
        stats.append(learner.step())
    return stats


# --- one step -------------------------------------------------------------------------------------


def test_one_step_is_adamw_on_trainable_parameters_only():
    """First AdamW step: p <- p * (1 - lr * wd) - lr * g / (|g| + eps), weight decay only on 2-D weights."""
    model = Toy()
    optim = OptimConfig(lr=0.1, weight_decay=0.5, scheduler="constant", max_grad_norm=1e9)
    learner = Learner(model, optim, SINGLE, total_steps=10)
    before = _params(model)
    (batch,) = _batches(1)
    learner.backward(learner(**batch))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}
    assert all(p.grad is None for p in model.frozen.parameters())
    stats = learner.step()
    assert stats["lr"] == 0.1
    after = _params(model)
    for name, p0 in before.items():
        if name.startswith("frozen."):
            assert torch.equal(after[name], p0), name
            continue
        g = grads[name]
        decay = 0.5 if name == "proj.weight" else 0.0
        expected = p0 * (1 - 0.1 * decay) - 0.1 * g / (g.abs() + 1e-8)
        assert torch.allclose(after[name], expected, atol=1e-6, rtol=0), name
        assert not torch.equal(after[name], p0), name
    assert all(p.grad is None for p in model.parameters())  # the step leaves no gradient behind


def test_param_groups_put_1d_tensors_without_weight_decay():
    model = Toy()
    decay, no_decay = param_groups(model, 0.25)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in decay["params"]] == ["proj.weight"] and decay["weight_decay"] == 0.25
    assert [names[id(p)] for p in no_decay["params"]] == ["proj.bias", "norm.weight", "norm.bias"]
    assert no_decay["weight_decay"] == 0.0


def test_a_model_without_trainable_parameters_is_refused():
    model = Toy().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        Learner(model, OptimConfig(), SINGLE, total_steps=1)


def test_single_strategy_refuses_several_processes(monkeypatch):
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="strategy 'single' runs one process"):
        Learner(Toy(), OptimConfig(), SINGLE, total_steps=1)


def test_precision_casts_the_model():
    assert resolve_precision("bf16") == torch.bfloat16 and resolve_precision("fp32") == torch.float32
    assert resolve_precision("auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    model = Toy()
    learner = Learner(model, OptimConfig(), LearnerConfig(strategy="single", precision="bf16"), total_steps=1)
    assert learner.dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert learner.module is model and learner.grad_scale == 1.0


# --- accumulation and clipping --------------------------------------------------------------------


def test_accumulated_micro_batches_give_the_same_update_as_one_batch():
    """The caller normalises over the whole step, so splitting 4 rows into 2 micro-batches of 2
    (boundary set before each forward, only the last one true) changes nothing."""
    optim = OptimConfig(lr=0.01, scheduler="constant", max_grad_norm=1e9)
    whole, split = Toy(), Toy()
    a, b = Learner(whole, optim, SINGLE, total_steps=4), Learner(split, optim, SINGLE, total_steps=4)
    for batch in _batches(2):
        a.set_boundary(True)
        a.backward(a(**batch, scale=0.25))
        stats_a = a.step()
        halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
        for i, micro in enumerate(halves):
            b.set_boundary(i == len(halves) - 1)
            b.backward(b(**micro, scale=0.25))
        stats_b = b.step()
        assert math.isclose(stats_a["grad_norm"], stats_b["grad_norm"], rel_tol=1e-5)
        assert stats_a["lr"] == stats_b["lr"] == 0.01
    for name, p in whole.named_parameters():
        assert torch.allclose(p, dict(split.named_parameters())[name], atol=1e-6, rtol=0), name


class Dot(nn.Module):
    """loss = w . x, so the gradient is exactly x."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, 2))

    def forward(self, x):
        return (self.w * x).sum()


@pytest.mark.parametrize("max_grad_norm, clipped", [(1.0, [0.6, 0.8]), (10.0, [3.0, 4.0])])
def test_grad_norm_is_reported_before_clipping_and_the_optimizer_sees_the_clipped_gradient(max_grad_norm, clipped):
    model = Dot()
    learner = Learner(model, OptimConfig(lr=0.1, weight_decay=0.0, max_grad_norm=max_grad_norm, scheduler="constant"), SINGLE, 1)
    learner.backward(learner(x=torch.tensor([[3.0, 4.0]])))
    stats = learner.step()
    assert stats["grad_norm"] == 5.0
    exp_avg = learner.optimizer.state[model.w]["exp_avg"]  # (1 - beta1) * the gradient AdamW was given
    assert torch.allclose(exp_avg, 0.1 * torch.tensor([clipped]), atol=1e-7, rtol=0)


# --- the learning-rate schedule -------------------------------------------------------------------


def _factors(total_steps: int, steps, **optim):
    factor = lr_lambda(OptimConfig(**optim), total_steps)
    return [factor(s) for s in steps]


def test_cosine_warms_up_linearly_then_decays_to_the_floor():
    # warm-up ceil(0.1 * 20) = 2 steps: 1/2, 2/2; then half a cosine over the remaining 18 steps
    steps = [0, 1, 2, 5, 11, 20, 25]
    got = _factors(20, steps, scheduler="cosine", warmup_ratio=0.1)
    expected = [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi * 3 / 18)), 0.5, 0.0, 0.0]
    assert got == pytest.approx(expected, abs=1e-12)
    floor = _factors(20, steps, scheduler="cosine", warmup_ratio=0.1, min_lr_ratio=0.1)
    assert floor == pytest.approx([0.5, 1.0, 1.0, 0.1 + 0.9 * expected[3], 0.55, 0.1, 0.1], abs=1e-12)


def test_linear_warms_up_then_decays_linearly():
    # warm-up ceil(0.2 * 10) = 2 steps, then 8 steps down to min_lr_ratio
    steps = [0, 1, 2, 4, 6, 10, 12]
    assert _factors(10, steps, scheduler="linear", warmup_ratio=0.2) == pytest.approx([0.5, 1, 1, 0.75, 0.5, 0, 0], abs=1e-12)
    floor = _factors(10, steps, scheduler="linear", warmup_ratio=0.2, min_lr_ratio=0.2)
    assert floor == pytest.approx([0.5, 1, 1, 0.8, 0.6, 0.2, 0.2], abs=1e-12)


def test_warmup_rounds_up_to_whole_steps():
    # 3% of 100 = 3 steps; 3% of 50 = 1.5 -> 2 steps
    assert _factors(100, [0, 1, 2, 3], scheduler="cosine", warmup_ratio=0.03) == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert _factors(50, [0, 1, 2], scheduler="cosine", warmup_ratio=0.03) == pytest.approx([0.5, 1.0, 1.0])


def test_no_warmup_starts_at_the_peak():
    assert _factors(4, [0, 2, 4], scheduler="cosine", warmup_ratio=0.0) == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)


def test_constant_is_flat_and_has_no_warmup():
    """``constant`` ignores warmup_ratio (the GRPO recipes set it to 0 anyway)."""
    assert _factors(10, [0, 1, 5, 9, 50], scheduler="constant", warmup_ratio=0.5, min_lr_ratio=0.3) == [1.0] * 5


def test_learner_reports_the_lr_each_step_used():
    lr = 0.2
    learner = Learner(Toy(), OptimConfig(lr=lr, scheduler="cosine", warmup_ratio=0.25, min_lr_ratio=0.1), SINGLE, total_steps=8)
    stats = _train(learner, _batches(8))
    factor = lr_lambda(learner.optim_cfg, 8)
    assert [s["lr"] for s in stats] == pytest.approx([lr * factor(i) for i in range(8)], abs=1e-12)
    assert [s["lr"] for s in stats[:3]] == pytest.approx([0.1, 0.2, 0.2])
    assert learner.current_lr() == pytest.approx(lr * 0.1)  # after the last step: the floor


# --- state ----------------------------------------------------------------------------------------


def test_save_and_load_state_give_identical_next_steps(tmp_path):
    optim = OptimConfig(lr=0.05, weight_decay=0.1, scheduler="cosine", warmup_ratio=0.2, max_grad_norm=0.5)
    batches = _batches(6)
    first = Learner(Toy(seed=0), optim, SINGLE, total_steps=6)
    _train(first, batches[:3])
    first.save_state(tmp_path / "learner")
    assert [p.name for p in (tmp_path / "learner").iterdir()] == ["learner.pt"]
    expected_stats = _train(first, batches[3:])

    resumed = Learner(Toy(seed=1), optim, SINGLE, total_steps=6)  # other initial weights, overwritten by the load
    resumed.load_state(tmp_path / "learner")
    assert resumed.current_lr() == pytest.approx(0.05 * lr_lambda(optim, 6)(3))
    assert _train(resumed, batches[3:]) == expected_stats
    for name, p in first.module.named_parameters():
        assert torch.equal(p, dict(resumed.module.named_parameters())[name]), name


def test_full_state_dict_is_the_current_weights_on_cpu():
    model = Toy()
    learner = Learner(model, OptimConfig(lr=0.1, scheduler="constant"), SINGLE, total_steps=2)
    _train(learner, _batches(1))
    state = learner.full_state_dict()
    assert list(state) == list(model.state_dict())
    for name, value in model.state_dict().items():
        assert state[name].device.type == "cpu" and not state[name].requires_grad
        assert torch.equal(state[name], value.cpu()), name


def test_export_hf_writes_a_folder_transformers_loads(tiny_model_path, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_path, torch_dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(tiny_model_path)
    model.model.visual.requires_grad_(False)
    learner = Learner(model, OptimConfig(lr=1e-2, scheduler="constant"), SINGLE, total_steps=1)
    ids = processor.tokenizer("a tiny step", return_tensors="pt")["input_ids"]
    learner.backward(learner(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss)
    learner.step()
    learner.export_hf(tmp_path / "hf", processor)

    names = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"} <= names
    assert any(n.endswith("processor_config.json") for n in names)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).state_dict()
    original = AutoModelForImageTextToText.from_pretrained(tiny_model_path, torch_dtype=torch.float32).state_dict()
    trained = model.state_dict()
    assert set(loaded) == set(trained)
    for name, value in trained.items():
        assert torch.equal(loaded[name], value), name
        if name.startswith("model.visual."):
            assert torch.equal(value, original[name]), name
    assert any(not torch.equal(trained[n], original[n]) for n in trained if n.startswith("model.language_model."))
    assert AutoProcessor.from_pretrained(tmp_path / "hf").tokenizer("a tiny step")["input_ids"] == ids[0].tolist()


# --- DeepSpeed config (built, not started) --------------------------------------------------------


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_deepspeed_config_takes_batch_clipping_and_precision_from_ours(strategy):
    cfg = LearnerConfig(strategy=strategy, precision="fp32")
    ds = deepspeed_config(cfg, OptimConfig(max_grad_norm=0.7), micro_batch_size=3)
    assert ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 1
    assert ds["gradient_clipping"] == 0.7
    assert ds["bf16"] == {"enabled": False}
    assert ds["zero_optimization"]["stage"] == {"zero2": 2, "zero3": 3}[strategy]
    bf16 = deepspeed_config(LearnerConfig(strategy=strategy, precision="bf16"), OptimConfig(), 1)
    assert bf16["bf16"] == {"enabled": True}


def test_a_missing_deepspeed_config_fails_loudly(tmp_path):
    cfg = LearnerConfig(strategy="zero2", deepspeed_config=str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="DeepSpeed config not found"):
        deepspeed_config(cfg, OptimConfig(), 1)
