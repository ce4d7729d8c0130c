"""``resources.mode: local``: the GRPO loop with its roles in the driver process, on the tiny model.
One run with transformers rollouts through the command line in a process where Ray, vLLM and
DeepSpeed cannot be imported (training, evaluation, checkpoints), then resumed, and matched
against the same steps through Ray; one run with an in-process vLLM engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rexthinker.config import ConfigError, save_config
from tests.grpo.test_loop import make_cfg, ray_cluster, run  # noqa: F401 (ray_cluster: the Ray run's cluster)


def cli_without(*modules: str) -> str:
    """``python -c`` code that runs ``python -m rexthinker.grpo`` with ``modules`` made unimportable."""
    blocked = ", ".join(f"{m}=None" for m in modules)
    return f"import sys; sys.modules.update({blocked}); from rexthinker.grpo.__main__ import main; sys.exit(main())"


def run_cli(cfg, folder: Path, *blocked: str) -> None:
    save_config(cfg, folder / "run.yaml")
    proc = subprocess.run([sys.executable, "-c", cli_without(*blocked), "--config", str(folder / "run.yaml")], capture_output=True,
                          text=True, cwd=Path(__file__).parents[2], timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def local_cfg(tiny_model_path, data, out, *extra):
    return make_cfg(tiny_model_path, data, out, "resources.mode=local", "rollout.backend=hf", *extra)


def train_rows(out: Path) -> list[dict]:
    """The rows of ``metrics.jsonl`` that training steps logged (evaluations log rows of their own)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward/overall" in r]


@pytest.fixture(scope="module")
def local_run(tiny_model_path, grpo_data, tmp_path_factory):
    """Two steps through ``python -m rexthinker.grpo`` with an evaluation at the start and the end."""
    out = tmp_path_factory.mktemp("local") / "run"
    cfg = local_cfg(tiny_model_path, grpo_data, out, "eval.enabled=true", f"data.val=[{grpo_data}]", "eval.num_samples=2",
                    "eval.max_new_tokens=16")  # fmt: skip
    run_cli(cfg, out.parent, "ray", "vllm", "deepspeed")
    return out


def test_a_local_run_needs_no_ray_and_writes_metrics_evaluations_and_checkpoints(local_run):
    rows = train_rows(local_run)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["actor/updates"] == 1 and "time/sync_s" in rows[0]
    assert (local_run / "eval_start.json").exists() and (local_run / "eval_end.json").exists()
    assert (local_run / "checkpoints" / "step-2" / "learner").is_dir()
    assert (local_run / "final" / "model.safetensors").exists()


def test_a_local_run_resumes(tiny_model_path, grpo_data, local_run, tmp_path):
    out = shutil.copytree(local_run, tmp_path / "run", symlinks=True)
    trainer, _ = run(local_cfg(tiny_model_path, grpo_data, out, "trainer.max_steps=3"))
    assert trainer.step == 3
    assert [r["step"] for r in train_rows(out)] == [1, 2, 3]  # steps 1 and 2 were not run again



def test_no_start_evaluation_when_the_stage_before_made_it(tiny_model_path, grpo_data, tmp_path):
    from rexthinker.grpo.trainer import GRPOTrainer

    out = tmp_path / "run"
    cfg = local_cfg(tiny_model_path, grpo_data, out, "eval.enabled=true", f"data.val=[{grpo_data}]", "eval.num_samples=2",
                    "eval.max_new_tokens=8", "eval.at_start=false")  # fmt: skip
    trainer = GRPOTrainer(cfg)
    try:
        assert trainer.evaluate("start") is None
        assert trainer.evaluate("end")["samples"] == 2  # the end evaluation still runs
    finally:
        trainer.cleanup()
    assert sorted(p.name for p in out.glob("eval_*.json")) == ["eval_end.json"]


def test_local_and_ray_give_the_same_steps(tiny_model_path, grpo_data, local_run, tmp_path):
    # Step 2 samples from the synced weights, and its loss and KL are the first that are not 0.
    run(make_cfg(tiny_model_path, grpo_data, tmp_path / "ray", "rollout.backend=hf"))
    keys = ("step", "reward/overall", "response/length_mean", "actor/loss", "actor/kl", "actor/entropy", "actor/grad_norm")
    for local, ray in zip(train_rows(local_run), train_rows(tmp_path / "ray"), strict=True):
        assert {k: ray[k] for k in keys} == pytest.approx({k: local[k] for k in keys}, rel=1e-4, abs=1e-5)


@pytest.mark.vllm
def test_a_local_run_syncs_the_weights_into_an_in_process_vllm_engine(tiny_model_path, grpo_data, tmp_path):
    # In a process of its own: an engine closing in pytest's process tears down vLLM's process-wide
    # parallel state, which the suite's shared engine (conftest.tiny_vllm) still needs.
    run_cli(local_cfg(tiny_model_path, grpo_data, tmp_path / "run", "rollout.backend=vllm", "algorithm.filter_zero_variance=false"),
            tmp_path, "ray", "deepspeed")  # fmt: skip
    rows = train_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["actor/updates"] == 1 and "time/sync_s" in r for r in rows)


def test_a_local_vllm_engine_sleeps_on_cuda_as_it_shares_the_learners_device(tiny_model_path, grpo_data, tmp_path, monkeypatch):
    import torch

    from rexthinker.grpo.workers import rollout_sleeps

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rollout_sleeps(local_cfg(tiny_model_path, grpo_data, tmp_path, "rollout.backend=vllm"))  # resources.gpus=0 there
    assert not rollout_sleeps(make_cfg(tiny_model_path, grpo_data, tmp_path))  # through Ray with no GPUs: not colocated


@pytest.mark.parametrize(("override", "message"), [
    ("resources.learner_ranks=2", r"resources.mode=local .* resources.learner_ranks=1 \(got 2\)"),
    ("resources.rollout_engines=2", r"resources.mode=local .* resources.rollout_engines=1 \(got 2\)"),
    ("learner.strategy=zero2", r"resources.mode=local .* learner.strategy=single \(got zero2\)"),
    ("resources.mode=threads", r"resources.mode: 'threads' is not one of \['ray', 'local'\]"),
])  # fmt: skip
def test_local_mode_config_errors_name_the_setting(tiny_model_path, grpo_data, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        local_cfg(tiny_model_path, grpo_data, tmp_path, override)
