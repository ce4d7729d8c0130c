"""Rollouts with transformers ``generate``: the fallback backend (no vLLM needed).

Sampling is made reproducible by seeding torch's generator per prompt; completions of one prompt
come from one ``generate`` call with ``num_return_sequences=n``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rexthinker.generation import assistant_turn
from rexthinker.rollout.base import Completion, Request, RolloutConfig, forbidden_token_ids


class HFRollout:
    def __init__(self, model, processor, cfg: RolloutConfig):
        self.model, self.processor, self.cfg = model, processor, cfg
        tok = processor.tokenizer
        self.stop_ids = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
        self.forbidden = forbidden_token_ids(tok)

    @torch.no_grad()
    def generate(self, requests: list[Request], n: int) -> list[list[Completion]]:
        tok = self.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        result = []
        try:
            for r in requests:
                inputs = self.processor(text=[r.prompt], images=[r.image], return_tensors="pt").to(device)
                torch.manual_seed(r.seed)
                sampling = dict(do_sample=True, temperature=self.cfg.temperature, top_p=self.cfg.top_p)
                if self.cfg.temperature <= 0:
                    sampling = dict(do_sample=False)
                out = self.model.generate(
                    **inputs, **sampling, max_new_tokens=self.cfg.max_new_tokens, num_return_sequences=n,
                    eos_token_id=sorted(self.stop_ids), pad_token_id=tok.pad_token_id, suppress_tokens=self.forbidden,
                )[:, inputs["input_ids"].shape[1] :]  # fmt: skip
                group = []
                for row in out.tolist():
                    ids, finish = [], "length"
                    for t in row:
                        if t in self.stop_ids:
                            ids.append(t)
                            finish = "stop"
                            break
                        ids.append(t)
                    group.append(Completion(ids, assistant_turn(r.prompt, tok.decode(ids, skip_special_tokens=True)), None, finish))
                result.append(group)
        finally:
            tok.padding_side = side
            self.model.train(was_training)
        return result

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        state = dict(weights)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight") or not self.model.config.tie_word_embeddings]
        if missing or unexpected:
            raise KeyError(f"weight update does not match the rollout model: missing {missing[:5]}, unexpected {unexpected[:5]}")
