"""The test that catches rollout/learner mismatches: after pushing new weights into the vLLM engine,
its log-probs of its own samples must equal the learner's (transformers) log-probs of the same
tokens, for the same image and prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rexthinker.data.synthref import generate
from rexthinker.generation import render
from rexthinker.grpo.experience import TokenSequence, collate, collate_shared, encode_prompt, token_logprobs_and_entropy
from rexthinker.rollout.base import Request, RolloutConfig, forbidden_token_ids

pytestmark = pytest.mark.vllm


def perturb(model, seed: int = 0):
    """Move every weight of ``model`` a little: what a learner holds after some updates."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


@pytest.fixture(scope="module")
def perturbed(tiny_model_path):
    return perturb(AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32).eval())


def _requests(processor, k=3):
    samples = generate(k, seed=21, split="val")
    return [Request(prompt, image, seed=100 + i) for i, (_, _, prompt, image) in enumerate(render(samples, processor))]


def logprob_diffs(model, processor, requests, groups, layout=collate_shared, chunk: int = 0) -> list[float]:
    """Per completion, the largest |sampler log-prob - learner log-prob| of its tokens, the learner
    being ``model`` on ``layout`` batches of the same prompts, images and tokens."""
    seqs, sampler = [], []
    for request, group in zip(requests, groups):
        prompt = encode_prompt(processor, request.prompt, request.image)
        for c in group:
            seqs.append(TokenSequence(prompt, c.token_ids))
            sampler.append(torch.tensor(c.logprobs))
    batch = layout(seqs, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        learner, _ = token_logprobs_and_entropy(model, batch, chunk=chunk)
    diffs = []
    for row, expected in enumerate(sampler):
        got = learner[row][batch["response_mask"][row]]
        assert got.numel() == expected.numel()
        diffs.append((got - expected).abs().max().item())
    return diffs


def test_vllm_logprobs_match_the_learner_after_a_weight_sync(tiny_model_path, tiny_vllm, perturbed):
    from rexthinker.rollout.vllm_engine import VLLMRollout

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    engine = VLLMRollout.__new__(VLLMRollout)  # reuse the session's engine instead of a second one
    engine.llm, engine.cfg = tiny_vllm, RolloutConfig(temperature=1.0, top_p=1.0, max_new_tokens=12, logprobs=True)
    engine.forbidden = forbidden_token_ids(processor.tokenizer)
    requests = _requests(processor)

    before = engine.generate(requests, n=2)
    engine.load_weights((name, p.detach().clone()) for name, p in perturbed.state_dict().items())
    after = engine.generate(requests, n=2)
    assert [[c.token_ids for c in g] for g in before] != [[c.token_ids for c in g] for g in after]

    # both learner layouts (the shared prompt pass is GRPO's default), its responses in one pass or in chunks
    for layout, chunk in ((collate, 0), (collate_shared, 0), (collate_shared, 5)):
        diffs = logprob_diffs(perturbed, processor, requests, after, layout, chunk)
        print(f"max |log-prob vLLM - learner ({layout.__name__}, chunk {chunk})| after sync: {max(diffs):.2e}")
        assert max(diffs) <= 1e-3, diffs
    forbidden = set(engine.forbidden)
    assert forbidden and not any(forbidden & set(c.token_ids) for g in after for c in g)

    # Restore the session engine's original weights for the tests that follow.
    original = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32)
    engine.load_weights((name, p.detach().clone()) for name, p in original.state_dict().items())


def test_vllm_logprobs_match_a_lora_learner_after_a_weight_sync(tiny_model_path, tiny_vllm):
    """LoRA mode: the learner keeps its adapters apart from the base weights; the engines get the
    merged weights (``Learner.export_state_dict``) and must then sample what the learner scores."""
    from rexthinker.models import lora
    from rexthinker.models.load import load_policy
    from rexthinker.rollout.vllm_engine import VLLMRollout
    from rexthinker.train.learner import Learner, LearnerConfig, OptimConfig

    model, processor = load_policy(str(tiny_model_path))
    policy = lora.attach(model, lora.LoraConfig(r=4, alpha=8))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # B starts at zero: give the adapters a sizeable update, as training would
        for name, p in policy.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    learner = Learner(policy, OptimConfig(), LearnerConfig(strategy="single", precision="fp32"), total_steps=1)
    engine = VLLMRollout.__new__(VLLMRollout)
    engine.llm, engine.cfg = tiny_vllm, RolloutConfig(temperature=1.0, top_p=1.0, max_new_tokens=12, logprobs=True)
    engine.forbidden = forbidden_token_ids(processor.tokenizer)
    requests = _requests(processor)

    before = engine.generate(requests, n=2)
    engine.load_weights(learner.export_state_dict().items())
    after = engine.generate(requests, n=2)
    assert [[c.token_ids for c in g] for g in before] != [[c.token_ids for c in g] for g in after]
    for layout, chunk in ((collate, 0), (collate_shared, 0), (collate_shared, 5)):
        diffs = logprob_diffs(learner.module.eval(), processor, requests, after, layout, chunk)
        print(f"LoRA: max |log-prob vLLM - learner ({layout.__name__}, chunk {chunk})| after sync: {max(diffs):.2e}")
        assert max(diffs) <= 1e-3, diffs

    original = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32)
    engine.load_weights((name, p.detach().clone()) for name, p in original.state_dict().items())


def test_same_seed_same_rollouts(tiny_model_path, tiny_vllm):
    from rexthinker.rollout.vllm_engine import VLLMRollout

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    engine = VLLMRollout.__new__(VLLMRollout)
    engine.llm, engine.cfg = tiny_vllm, RolloutConfig(temperature=1.0, top_p=0.99, max_new_tokens=8)
    engine.forbidden = forbidden_token_ids(processor.tokenizer)
    requests = _requests(processor, 2)
    a = engine.generate(requests, n=3)
    b = engine.generate(requests, n=3)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    assert all(len(g) == 3 for g in a)
    assert all(c.logprobs is None for g in a for c in g) and any(c.text for g in a for c in g)  # log-probs are opt-in


def test_a_large_seeded_batch_runs_on_cpu(tiny_model_path):
    """Regression: 24 prompts x 8 seeded samples made vLLM 0.32's CPU runner split a prefill and
    crash ("CPU Generator does not use offset"); the engine now turns chunked prefill off on CPU.
    Runs in a subprocess: one in-process vLLM engine per test process."""
    import subprocess
    import sys

    code = f"""
from transformers import AutoProcessor
from rexthinker.data.synthref import generate
from rexthinker.generation import render
from rexthinker.rollout.base import Request, RolloutConfig, forbidden_token_ids
from rexthinker.rollout.vllm_engine import VLLMRollout
proc = AutoProcessor.from_pretrained({str(tiny_model_path)!r})
engine = VLLMRollout({str(tiny_model_path)!r}, RolloutConfig(max_new_tokens=32, max_model_len=2048, enforce_eager=True),
                     forbidden=forbidden_token_ids(proc.tokenizer))
requests = [Request(p, im, seed=i) for i, (_, _, p, im) in enumerate(render(generate(24, seed=3), proc))]
out = engine.generate(requests, 8)
print("groups", len(out), "samples", sum(len(g) for g in out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "groups 24 samples 192" in proc.stdout


def test_a_compiled_engine_takes_new_weights(tiny_model_path):
    """``rollout.enforce_eager: false`` (the default: vLLM compiles the model, also on CPU) must
    not keep generating with weights captured at compile time: log-prob parity after two syncs.
    Runs in a subprocess: one in-process vLLM engine per test process."""
    import subprocess
    import sys

    code = f"""
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from rexthinker.rollout.base import RolloutConfig, forbidden_token_ids
from rexthinker.rollout.vllm_engine import VLLMRollout
from tests.rollout.test_weight_sync import _requests, logprob_diffs, perturb
path = {str(tiny_model_path)!r}
proc = AutoProcessor.from_pretrained(path)
cfg = RolloutConfig(temperature=1.0, top_p=1.0, max_new_tokens=12, max_model_len=2048, enforce_eager=False, logprobs=True)
engine = VLLMRollout(path, cfg, forbidden=forbidden_token_ids(proc.tokenizer))
requests = _requests(proc, 2)
model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
for step in range(3):
    if step:
        engine.load_weights((n, p.detach().clone()) for n, p in perturb(model, step).state_dict().items())
    print("step", step, "diff", max(logprob_diffs(model, proc, requests, engine.generate(requests, 2))))
"""
    root = Path(__file__).resolve().parents[2]  # `tests` importable from the subprocess
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=400, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    diffs = [float(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("step ")]
    print(proc.stdout)
    assert len(diffs) == 3 and max(diffs) <= 1e-3, diffs
