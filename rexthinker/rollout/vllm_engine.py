"""vLLM rollouts with in-place weight updates.

Facts this relies on (measured with vLLM 0.32, see dev/LOG.md):
- prompts are given as *text* holding one ``<|image_pad|>`` per image; vLLM expands it to the
  image's token count itself (token-id prompts that are already expanded get expanded twice);
- on CPU, chunked prefill is off: with per-request seeds (reproducible rollouts) a split prefill
  crashes the CPU runner (tests/rollout/test_weight_sync.py has the regression test);
- new weights go in with the worker's ``reload_weights`` (checkpoint format: HF names, full
  tensors), which reprocesses them the way loading from disk does (the CPU backend repacks linear
  weights); a *tied* ``lm_head`` shares the embedding but is not reprocessed by it, so its
  ``process_weights_after_loading`` is run again; encoder (image embedding) and prefix caches hold
  results of the old weights and are cleared;
- sleep mode (``sleep=True``, CUDA only; vLLM's ``LLM.sleep`` / ``LLM.wake_up``): level 1 offloads
  the weights to CPU and drops the KV cache, so a learner on the same GPU gets the memory back
  while it trains. ``wake_up(tags=["weights"])`` brings the weights back for the sync, and
  ``wake_up()`` the rest (KV cache, scheduling) before the next generation. Level 1 keeps the
  weights, so a step whose update was skipped (no sync) generates with them again.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rexthinker.generation import assistant_turn, new_engine, resize_kwargs
from rexthinker.rollout.base import Completion, Request, RolloutConfig


def _refresh_tied_head(worker) -> bool:
    """Run on the worker: re-process a tied lm_head after its embedding changed."""
    model = worker.model_runner.get_model()
    language_model = getattr(model, "language_model", model)
    head = getattr(language_model, "lm_head", None)
    if head is None or not getattr(language_model.config, "tie_word_embeddings", False):
        return False
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)
        return True
    return False


class VLLMRollout:
    sleeps = False  # sleep after each generation (see the module docstring)
    asleep: frozenset[str] = frozenset()  # what is offloaded now: "weights", "kv_cache"
    mm_kwargs: dict | None = None  # per-request image resizing (see ``pixel_limits``)

    def __init__(self, model_path: str, cfg: RolloutConfig, seed: int = 0, forbidden: list[int] | None = None,
                 pixel_limits: tuple[int, int] | None = None, sleep: bool = False):  # fmt: skip
        """``pixel_limits`` (min, max) make vLLM resize images exactly like the learner's processor
        when the run overrides the checkpoint's limits. ``sleep`` builds the engine with sleep mode
        and frees its GPU memory after every generation (a learner shares the GPU)."""
        self.cfg, self.forbidden, self.sleeps = cfg, list(forbidden or []), sleep
        self.mm_kwargs = resize_kwargs(*pixel_limits) if pixel_limits else None
        self.llm = new_engine(model_path, seed=seed, dtype=cfg.dtype, max_model_len=cfg.max_model_len, enforce_eager=cfg.enforce_eager,
                              tensor_parallel_size=cfg.tensor_parallel_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
                              cpu_kv_cache_gib=cfg.cpu_kv_cache_gib, sleep=sleep, extra=cfg.extra)  # fmt: skip

    # --- sleep mode ----------------------------------------------------------------------------
    def sleep(self) -> None:
        """Offload the weights to CPU and drop the KV cache (a no-op unless built with ``sleep``)."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = frozenset(("weights", "kv_cache"))

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Bring back ``tags`` ("weights", "kv_cache"), or everything still asleep when None."""
        wanted = self.asleep if tags is None else self.asleep & set(tags)
        if wanted:
            self.llm.wake_up(tags=None if tags is None else sorted(wanted))
            self.asleep = self.asleep - wanted

    def generate(self, requests: list[Request], n: int) -> list[list[Completion]]:
        self.wake_up()
        try:
            return self._generate(requests, n)
        finally:
            self.sleep()

    def _generate(self, requests: list[Request], n: int) -> list[list[Completion]]:
        from vllm import SamplingParams

        inputs = [{"prompt": r.prompt, "multi_modal_data": {"image": r.image}} for r in requests]
        if self.mm_kwargs:
            for item in inputs:
                item["mm_processor_kwargs"] = self.mm_kwargs
        params = [
            SamplingParams(
                n=n, temperature=self.cfg.temperature, top_p=self.cfg.top_p, max_tokens=self.cfg.max_new_tokens,
                seed=r.seed, logprobs=0 if self.cfg.logprobs else None, skip_special_tokens=True,
                logit_bias={t: -100.0 for t in self.forbidden} or None,
            )  # fmt: skip
            for r in requests
        ]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        result = []
        for request, out in zip(requests, outputs):
            group = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                logprobs = [step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)] if c.logprobs else None
                group.append(Completion(list(c.token_ids), assistant_turn(request.prompt, c.text), logprobs, c.finish_reason))
            result.append(group)
        return result

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.wake_up(["weights"])  # the KV cache stays offloaded while the new weights go in
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True})
        self.llm.collective_rpc(_refresh_tied_head)
        self.wake_up()  # vLLM resumes scheduling only once fully awake; the caches are reset below
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()

    def close(self) -> None:
        del self.llm
