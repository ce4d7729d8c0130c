"""rexthinker: teach Qwen2.5-VL to refer to objects by reasoning over box hints (SFT + GRPO)."""

__version__ = "0.1.0"
