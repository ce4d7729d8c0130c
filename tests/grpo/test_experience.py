"""The learner's two micro-batch layouts: every row as prompt + response, or each prompt once with
its responses on a shared KV cache. They must give the same log-probs, entropies and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rexthinker.data.synthref import generate
from rexthinker.generation import render
from rexthinker.grpo.experience import (
    TokenSequence,
    collate,
    collate_shared,
    encode_prompt,
    micro_batches_shared,
    response_cost,
    token_logprobs_and_entropy,
)


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_path):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32)
    return model, AutoProcessor.from_pretrained(tiny_model_path)


def _sequences(processor, lengths_per_prompt, seed=0):
    """Prompts with different images (so different prompt lengths) and random responses."""
    samples = generate(len(lengths_per_prompt), seed=31, split="val")
    gen = torch.Generator().manual_seed(seed)
    top = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # below every special token
    seqs = []
    for (_, _, prompt, image), lengths in zip(render(samples, processor), lengths_per_prompt):
        encoded = encode_prompt(processor, prompt, image)
        seqs += [TokenSequence(encoded, torch.randint(0, top, (n,), generator=gen).tolist()) for n in lengths]
    return seqs


def _values_and_grads(model, batch, chunk=0):
    model.zero_grad()
    lp, ent = token_logprobs_and_entropy(model, batch, with_entropy=True, chunk=chunk)
    mask = batch["response_mask"]
    (lp[mask].sum() + 0.1 * ent[mask].sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return lp.detach(), ent.detach(), grads


@pytest.mark.parametrize("chunk", [0, 7, 30])  # one pass; 5 chunks dropping rows 5, 12, 17 on the way; 30 = the longest
def test_shared_prompts_give_the_same_logprobs_entropy_and_gradients(model_and_processor, chunk):
    model, processor = model_and_processor
    model.train()
    seqs = _sequences(processor, [(5, 17, 0, 30), (12,), (3, 9)])
    assert len({s.prompt.input_ids.numel() for s in seqs}) > 1  # left padding of prompts is exercised
    pad = processor.tokenizer.pad_token_id
    plain, shared = collate(seqs, pad), collate_shared(seqs, pad)
    assert torch.equal(plain["response_mask"], shared["response_mask"])
    assert shared["prompt_input_ids"].shape[0] == 3 and shared["pixel_values"].shape[0] < plain["pixel_values"].shape[0]

    lp1, ent1, g1 = _values_and_grads(model, plain)
    lp2, ent2, g2 = _values_and_grads(model, shared, chunk)
    mask = plain["response_mask"]
    assert (lp2[~mask] == 0).all() and (ent2[~mask] == 0).all()
    assert torch.allclose(lp1[mask], lp2[mask], atol=1e-5), (lp1[mask] - lp2[mask]).abs().max()
    assert torch.allclose(ent1[mask], ent2[mask], atol=1e-5)
    assert g1.keys() == g2.keys() and len(g1) == sum(1 for p in model.parameters() if p.requires_grad)
    for name in g1:
        scale = g1[name].abs().max().clamp_min(1e-8)
        assert ((g1[name] - g2[name]).abs().max() / scale) < 1e-4, name


def test_logprobs_at_the_sampling_temperature_in_both_layouts(model_and_processor):
    """softmax(logits / T): what a rollout at temperature T samples from; T = 0 (greedy) and 1 leave
    the logits as they are."""
    model, processor = model_and_processor
    model.eval()
    seqs = _sequences(processor, [(6, 11), (4,)])
    pad = processor.tokenizer.pad_token_id
    plain, shared = collate(seqs, pad), collate_shared(seqs, pad)
    mask = plain["response_mask"]
    with torch.no_grad():
        logits = model(**{k: v for k, v in plain.items() if k != "response_mask"}).logits[:, :-1].float()
        at_one, _ = token_logprobs_and_entropy(model, plain)
        for temperature in (0.5, 1.0, 0.0):
            want = torch.zeros_like(at_one)
            scaled = logits / temperature if temperature > 0 else logits
            want[:, 1:] = torch.log_softmax(scaled, -1).gather(-1, plain["input_ids"][:, 1:, None]).squeeze(-1)
            for batch, chunk in ((plain, 0), (shared, 3)):
                got, _ = token_logprobs_and_entropy(model, batch, chunk=chunk, temperature=temperature)
                assert torch.allclose(got[mask], want[mask], atol=1e-5), (temperature, chunk)
        half, _ = token_logprobs_and_entropy(model, plain, temperature=0.5)
        assert not torch.allclose(half[mask], at_one[mask], atol=1e-3)

@pytest.mark.parametrize("chunk", [0, 1])
def test_shared_batch_of_empty_responses_still_runs(model_and_processor, chunk):
    model, processor = model_and_processor
    seqs = _sequences(processor, [(0, 0)])
    batch = collate_shared(seqs, processor.tokenizer.pad_token_id)
    assert batch["response_input_ids"].shape == (2, 1) and not batch["response_mask"].any()
    with torch.no_grad():
        lp, _ = token_logprobs_and_entropy(model, batch, chunk=chunk)
    assert lp.shape == batch["response_mask"].shape and (lp == 0).all()


class _Prompt:
    def __init__(self, n):
        self.input_ids = torch.zeros(n)


def _fake(prompt_lengths, response_lengths):
    prompts = [_Prompt(n) for n in prompt_lengths]
    return [TokenSequence(prompts[p], [0] * r) for p, r in response_lengths]


def test_shared_micro_batches_keep_groups_together_within_the_budget():
    seqs = _fake([100, 80, 120], [(0, 10), (1, 50), (0, 30), (2, 5), (1, 20), (0, 20), (2, 60), (1, 40)])
    batches = micro_batches_shared(seqs, list(range(len(seqs))), max_tokens=300)
    assert sorted(i for b in batches for i in b) == list(range(len(seqs)))
    for b in batches:
        prompts = {id(seqs[i].prompt) for i in b}
        cost = len(prompts) * max(seqs[i].prompt.input_ids.numel() for i in b) + len(b) * max(len(seqs[i].response_ids) for i in b)
        assert cost <= 300 or len(b) == 1
    # a prompt's rows are contiguous across the batches (a group is split only where the budget forces it)
    order = [id(seqs[i].prompt) for b in batches for i in b]
    for prompt in set(order):
        where = [k for k, x in enumerate(order) if x == prompt]
        assert where == list(range(where[0], where[-1] + 1))
    assert batches == micro_batches_shared(seqs, list(range(len(seqs))), max_tokens=300)  # deterministic


def test_shared_micro_batches_of_a_subset_and_an_oversized_sequence():
    seqs = _fake([50, 50], [(0, 10), (1, 500), (0, 20), (1, 5)])
    batches = micro_batches_shared(seqs, [3, 1, 0], max_tokens=200)
    assert sorted(i for b in batches for i in b) == [0, 1, 3]
    assert [1] in batches  # 50 + 500 is over the budget: alone
    assert micro_batches_shared(seqs, [], max_tokens=200) == []


def test_response_cost_counts_the_rows_each_chunk_runs():
    assert response_cost([5, 17, 0, 30]) == 4 * 30  # one pass: every row padded to the longest
    # chunks of 7 columns start at 0, 7, 14, 21 and 28: all 4 rows, then 17 and 30 twice, then 30 (2 columns last)
    assert response_cost([5, 17, 0, 30], 7) == 4 * 7 + 2 * 7 + 2 * 7 + 1 * 7 + 1 * 2
    assert response_cost([5, 17, 0, 30], 64) == response_cost([5, 17, 0, 30])
    assert response_cost([0, 0]) == 2 and response_cost([]) == 0


def test_chunked_micro_batches_hold_more_rows_in_the_same_budget():
    seqs = _fake([100, 100], [(0, 200), (0, 10), (0, 10), (0, 10), (1, 200), (1, 10), (1, 10), (1, 10)])
    one_pass = micro_batches_shared(seqs, list(range(8)), max_tokens=1100)
    chunked = micro_batches_shared(seqs, list(range(8)), max_tokens=1100, chunk=16)
    assert len(one_pass) == 2 and len(chunked) == 1  # 2 x 100 + 2 x 200 + 6 x 16 = 696 fits, 2 x 100 + 8 x 200 does not
