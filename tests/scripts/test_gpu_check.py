"""The GPU check on CPU: its dry run reports every part (a part killed by its limit as such) without
the packages the GPU machine lacks, and the real-size architectures have the published sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rexthinker import gpu_check
from tests.scripts.helpers import REPO

ABSENT_ON_GPU = ("ray", "vllm", "deepspeed", "datasets", "trl", "qwen_vl_utils", "wandb")


def test_dry_run_reports_every_part_without_the_gpu_machines_missing_packages(tmp_path, tiny_model_path):
    block = tmp_path / "block"  # every Python the check starts imports this first: the packages are gone
    block.mkdir()
    (block / "sitecustomize.py").write_text(f"import sys\nfor name in {ABSENT_ON_GPU!r}:\n    sys.modules[name] = None\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rexthinker.gpu_check", "--dry-run", "--out", str(out), "--limit", "tests=0.5"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(block)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parts = {p["part"]: p for p in json.loads((out / "gpu_report.json").read_text())["parts"]}
    assert list(parts) == ["tests", "learner", "stages"]
    assert parts["tests"]["status"] == "failed (timed out after 0.5 s)"  # its subprocess is killed, the rest still run
    assert parts["learner"]["status"] == "measured", (out / "learner.log").read_text()[-3000:]
    sweep = parts["learner"]["models"]["tiny"]["sweep"]
    assert [r["budget"] for r in sweep] == list(gpu_check.DRY.budgets)
    assert all(r["tokens_per_s"] > 0 and r["model_tflops"] > 0 and r["micro_batches"] >= 1 for r in sweep)
    stages = parts["stages"]
    assert stages["status"] == "measured", json.dumps(stages["stages"], indent=1)
    assert stages["stages"]["sft"]["steps"] == 2 and stages["stages"]["sft"]["tokens_per_s"] > 0
    assert stages["stages"]["grpo"]["steps"] == 1 and stages["stages"]["grpo"]["mean"]["time/rollout_s"] > 0
    parity = stages["stages"]["parity"]
    assert parity["dtype"] == "float32" and parity["tokens"] > 0
    assert parity["plain"]["max_abs"] < 1e-4 and parity["shared prompt"]["max_abs"] < 1e-4
    md = (out / "gpu_report.md").read_text()
    for line in ("## tests: failed (timed out after 0.5 s)", "## learner: measured", "## stages: measured", "| 160 | "):
        assert line in md
    assert "learner: measured" in proc.stdout and "stages: measured" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU answer")
def test_the_gpu_tests_are_skipped_without_cuda(tmp_path):
    record = gpu_check.Record(tmp_path / "tests.json")
    gpu_check.part_tests(record, dry=True)
    assert json.loads((tmp_path / "tests.json").read_text())["status"] == "skipped (no CUDA)"


@pytest.mark.parametrize("name, params", [("Qwen2.5-VL-3B", 3_754_622_976), ("Qwen2.5-VL-7B", 8_292_166_656)])
def test_real_size_architectures_have_the_published_parameter_counts(name, params):
    model = gpu_check.build_model(gpu_check.ARCHS[name], "meta", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == params  # the released checkpoints' totals


def test_model_flops_is_easyr1s_formula():
    text = gpu_check.ARCHS["Qwen2.5-VL-7B"]["text"]
    dense = 28 * (3 * 3584 * 18944 + 3584 * (28 + 4 + 4 + 28) * 128) + 2 * 152064 * 3584
    assert gpu_check.model_flops(text, [100, 200]) == 6 * dense * 300 + 12 * (100**2 + 200**2) * 128 * 28 * 28
