"""SynthRef files and an SFT config factory for the SFT tests."""

from __future__ import annotations

import pytest

from rexthinker.config import load_config
from rexthinker.data.cot_tsv import write_cot_tsv
from rexthinker.data.synthref import generate
from rexthinker.sft.config import SFTConfig


@pytest.fixture(scope="session")
def sft_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_data")
    write_cot_tsv(generate(48, seed=5, split="train"), root / "train")
    write_cot_tsv(generate(8, seed=5, split="val"), root / "val")
    return root


@pytest.fixture
def make_cfg(tiny_model_path, sft_data, tmp_path):
    def make(*overrides: str) -> SFTConfig:
        base = [
            f"model.path={tiny_model_path}", f"data.train=[{sft_data / 'train'}]", f"data.val=[{sft_data / 'val'}]",
            "model.freeze_vision=true", "model.freeze_projector=true", "learner.strategy=single", "learner.precision=fp32",
            "optim.lr=1e-3", "optim.warmup_ratio=0.0", "trainer.per_device_batch_size=2", "trainer.grad_accum=2",
            f"trainer.output_dir={tmp_path / 'run'}", "trainer.report_to=[jsonl]", "trainer.max_steps=2",
            "trainer.save_every=0", "data.max_length=4096",
        ]  # fmt: skip
        return load_config(SFTConfig, "recipes/configs/sft_demo.yaml", base + list(overrides))

    return make
