"""Checkpoints in every layout the converter reads, made once per session from the tiny model:
a single-process SFT run (``hf/`` + ``learner/learner.pt``), real 2-process CPU DeepSpeed ZeRO-2 and
ZeRO-3 runs through the SFT command line (started together), and reference-trainer rank files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rexthinker.config import load_config
from rexthinker.data.cot_tsv import write_cot_tsv
from rexthinker.data.synthref import generate
from tests.scripts.helpers import REPO, write_reference


@pytest.fixture(scope="session")
def sft_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert_rows")
    write_cot_tsv(generate(8, seed=5, split="train"), root / "train")
    return root / "train"


def _overrides(model: Path, rows: Path, out: Path) -> list[str]:
    return [f"model.path={model}", f"data.train=[{rows}]", "model.freeze_vision=true", "model.freeze_projector=false",
            "learner.precision=fp32", "optim.lr=1e-3", "optim.warmup_ratio=0.0", "trainer.max_steps=1",
            "trainer.grad_accum=1", "trainer.per_device_batch_size=2", "trainer.report_to=[jsonl]",
            "data.max_length=4096", "eval.enabled=false", f"trainer.output_dir={out}"]  # fmt: skip


@pytest.fixture(scope="session")
def deepspeed_runs(tiny_model_path, sft_rows, tmp_path_factory):
    """{"zero2": run folder, "zero3": run folder}: both 2-process CPU runs launched at once."""
    root = tmp_path_factory.mktemp("convert_ds")
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    procs = {}
    for strategy in ("zero2", "zero3"):
        cmd = [sys.executable, "-m", "rexthinker.sft", "--config", "recipes/configs/sft_demo.yaml",
               *_overrides(tiny_model_path, sft_rows, root / strategy), "trainer.nproc=2", f"learner.strategy={strategy}"]  # fmt: skip
        log = (root / f"{strategy}.log").open("w")
        procs[strategy] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    for strategy, (proc, log) in procs.items():
        code = proc.wait(timeout=600)
        log.close()
        assert code == 0, (root / f"{strategy}.log").read_text()[-3000:]
    return {strategy: root / strategy for strategy in procs}


@pytest.fixture(scope="session")
def single_run(tiny_model_path, sft_rows, tmp_path_factory):
    """A one-process SFT run of one step: ``checkpoints/step-1`` with ``hf/`` and ``learner/learner.pt``."""
    from rexthinker.sft.config import SFTConfig
    from rexthinker.sft.trainer import SFTTrainer

    out = tmp_path_factory.mktemp("convert_single") / "run"
    overrides = _overrides(tiny_model_path, sft_rows, out) + ["learner.strategy=single"]
    cfg = load_config(SFTConfig, REPO / "recipes/configs/sft_demo.yaml", overrides)
    run = SFTTrainer(cfg)
    try:
        run.fit()
        run.finish()
    finally:
        run.cleanup()
    return out


@pytest.fixture(scope="session")
def reference_ckpt(tiny_model_path, tmp_path_factory):
    """(actor folder, full tensors): the reference layout with world size 2, at global_step_7."""
    actor = tmp_path_factory.mktemp("convert_ref") / "global_step_7" / "actor"
    return actor, write_reference(tiny_model_path, actor)


@pytest.fixture
def reference_copy(reference_ckpt, tmp_path):
    """A private copy of the reference layout that a test may damage."""
    actor = tmp_path / "global_step_7" / "actor"
    shutil.copytree(reference_ckpt[0], actor)
    return actor
