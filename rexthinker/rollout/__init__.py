"""Rollout engines: generate n completions per prompt and take new weights in place.

Two backends with one interface (:class:`~rexthinker.rollout.base.RolloutEngine`): vLLM (the
default) and transformers ``generate`` (the fallback; slower, but needs nothing beyond the model).
"""
