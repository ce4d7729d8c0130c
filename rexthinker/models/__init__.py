"""Model construction: the tiny, deterministic Qwen2.5-VL checkpoints used by tests, demo and benchmarks."""
