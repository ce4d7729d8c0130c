"""SFT training on the tiny model: parameters move as configured, checkpoints load in HF and vLLM,
an interrupted run resumes to the same weights, DeepSpeed ZeRO-2 runs on CPU with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rexthinker.models import tiny
from rexthinker.models.families import FRAME_FILE, QWEN3_5, QWEN3_VL, model_family
from rexthinker.sft.trainer import SFTTrainer


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_steps_change_trainable_parameters_only(make_cfg):
    run = SFTTrainer(make_cfg("model.freeze_vision=true", "model.freeze_projector=false"))
    before = _params(run.model)
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.visual.merger.") for n in trainable)
    assert not any(n.startswith("model.visual.blocks.") for n in trainable)
    run.fit()
    after = _params(run.model)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (name in trainable), name
    losses = [json.loads(line)["loss"] for line in (run.out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(l > 0 for l in losses)
    run.cleanup()


def test_bf16_mixed_keeps_fp32_weights_and_runs_the_forward_in_bf16(make_cfg):
    """learner.precision=bf16-mixed: the weights and their updates stay fp32, the forward's matmuls run
    in bf16 (autocast), and the loss is close to the fp32 one on the same first batch."""
    def first_loss(run) -> float:
        return json.loads((run.out / "metrics.jsonl").read_text().splitlines()[0])["loss"]

    plain = SFTTrainer(make_cfg("learner.precision=fp32"))
    plain.fit()
    reference = first_loss(plain)
    plain.cleanup()
    mixed = SFTTrainer(make_cfg("learner.precision=bf16-mixed", f"trainer.output_dir={plain.out.parent / 'mixed'}"))
    before = _params(mixed.model)
    seen = []
    hook = mixed.model.model.language_model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    mixed.fit()
    hook.remove()
    after = _params(mixed.model)
    assert all(p.dtype == torch.float32 for p in after.values()) and torch.bfloat16 in seen
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert first_loss(mixed) == pytest.approx(reference, rel=2e-2)
    mixed.cleanup()
    with pytest.raises(ValueError, match="bf16-mixed runs with strategy 'single'"):
        from rexthinker.train.learner import Learner, LearnerConfig, OptimConfig

        Learner(torch.nn.Linear(2, 2), OptimConfig(), LearnerConfig(strategy="zero2", precision="bf16-mixed"), 1)


def test_bad_model_path_fails_at_once_with_a_hint(make_cfg):
    with pytest.raises(SystemExit, match="model.path '/nope/model' is not a local folder and not in the local Hugging Face cache"):
        SFTTrainer(make_cfg("model.path=/nope/model"))


def test_recipe_with_an_uncached_hub_model_fails_before_launching(tmp_path):
    """The 8-process paper recipe with a hub id that is not downloaded: a message in seconds, not a hang."""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(["bash", "recipes/sft.sh", "model.path=Qwen/Qwen2.5-VL-7B-Instruct"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    assert "not in the local Hugging Face cache" in proc.stderr + proc.stdout
    assert "launching:" not in proc.stdout


def test_final_checkpoint_loads_in_transformers(make_cfg):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run = SFTTrainer(make_cfg())
    run.fit()
    final = run.finish()
    trained = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.cleanup()
    model = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.float32)
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    assert AutoProcessor.from_pretrained(final).chat_template
    assert (run.out / "loss_curve.png").stat().st_size > 1000
    assert json.loads((final / FRAME_FILE).read_text()) == {"family": "qwen2_5_vl", "frame": "model_pixels"}


@pytest.mark.parametrize("family", [QWEN3_VL, QWEN3_5], ids=lambda f: f.name)
def test_qwen3_vl_steps_change_its_weights_and_the_export_records_its_frame(make_cfg, family):
    """Qwen3-VL and Qwen3.5 (whose template opens the think block in the prompt, tests/sft/test_sft_data.py)."""
    run = SFTTrainer(make_cfg(f"model.path={tiny.get('tiny', family.name)}"))
    assert run.family is family
    before = _params(run.model)
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    run.fit()
    after = _params(run.model)
    assert trainable and all(not torch.equal(before[n], after[n]) for n in trainable if n.startswith("model.language_model.layers."))
    assert all(torch.equal(before[n], after[n]) for n in before if n not in trainable)
    final = run.finish()
    run.cleanup()
    assert json.loads((final / FRAME_FILE).read_text()) == {"family": family.name, "frame": "relative_1000"}
    assert model_family(final) is family


class Crash(RuntimeError):
    pass


def test_interrupted_run_resumes_to_the_same_weights(make_cfg, tmp_path, monkeypatch):
    reference = SFTTrainer(make_cfg("trainer.max_steps=4", f"trainer.output_dir={tmp_path / 'ref'}"))
    reference.fit()
    expected = {k: v.clone() for k, v in reference.model.state_dict().items()}
    reference.cleanup()

    cfg = make_cfg("trainer.max_steps=4", "trainer.save_every=2", f"trainer.output_dir={tmp_path / 'crash'}")
    run = SFTTrainer(cfg)
    real_step, calls = run.learner.step, []

    def failing_step():
        calls.append(1)
        if len(calls) == 3:
            raise Crash("simulated crash during step 3")
        return real_step()

    monkeypatch.setattr(run.learner, "step", failing_step)
    with pytest.raises(Crash):
        run.fit()
    run.cleanup()
    assert sorted(p.name for p in (tmp_path / "crash" / "checkpoints").iterdir()) == ["step-2"]

    resumed = SFTTrainer(cfg)
    assert resumed.step == 2
    resumed.fit()
    assert resumed.step == 4
    for key, value in resumed.model.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6, rtol=0), key
    resumed.cleanup()


def test_feature_workers_give_the_same_run(make_cfg, tmp_path):
    """data.num_workers builds the next steps' features in other processes; the steps are the same."""
    weights, losses = [], []
    for workers in (0, 2):
        run = SFTTrainer(make_cfg("trainer.max_steps=3", f"data.num_workers={workers}", f"trainer.output_dir={tmp_path / str(workers)}"))
        run.fit()
        weights.append({k: v.clone() for k, v in run.model.state_dict().items()})
        losses.append([json.loads(line)["loss"] for line in (run.out / "metrics.jsonl").read_text().splitlines()])
        run.cleanup()
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


@pytest.mark.vllm
def test_sft_checkpoint_loads_and_generates_in_vllm(make_cfg):
    from rexthinker.convert.verify import check_vllm

    run = SFTTrainer(make_cfg("trainer.max_steps=1"))
    run.fit()
    final = run.finish()
    run.cleanup()
    assert "greedy token(s)" in check_vllm(final)


def _cli(make_cfg_overrides, tmp_path, name, env_extra=None):
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "rexthinker.sft", "--config", "recipes/configs/sft_demo.yaml", *make_cfg_overrides,
           f"trainer.output_dir={tmp_path / name}", "eval.enabled=false"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def _common(tiny_model_path, sft_data):
    return [f"model.path={tiny_model_path}", f"data.train=[{sft_data / 'train'}]", "learner.precision=fp32",
            "optim.lr=1e-3", "optim.warmup_ratio=0.0", "trainer.max_steps=1", "trainer.grad_accum=1",
            "trainer.report_to=[jsonl]", "data.max_length=4096"]  # fmt: skip


@pytest.fixture(scope="module")
def single_process_run(tiny_model_path, sft_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_single")
    overrides = _common(tiny_model_path, sft_data) + ["trainer.nproc=1", "learner.strategy=single", "trainer.per_device_batch_size=4"]
    return _cli(overrides, root, "single"), root / "single"


@pytest.mark.parametrize("strategy", ["ddp", "zero2", "zero3"])
def test_deepspeed_two_cpu_processes_match_one_process(tiny_model_path, sft_data, tmp_path, strategy, single_process_run):
    """Same global batch (2 x 2 processes vs 4 x 1): same loss at step 1 and same weights after a step,
    with torch DDP and with DeepSpeed."""
    single, single_dir = single_process_run
    overrides = _common(tiny_model_path, sft_data) + ["trainer.nproc=2", f"learner.strategy={strategy}", "trainer.per_device_batch_size=2"]
    multi = _cli(overrides, tmp_path, strategy)
    assert multi[0]["loss"] == pytest.approx(single[0]["loss"], rel=1e-5)
    assert multi[0]["grad_norm"] == pytest.approx(single[0]["grad_norm"], rel=1e-3)
    a = load_file(str(single_dir / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / strategy / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key



@pytest.mark.vllm
def test_two_ddp_processes_then_a_vllm_evaluation_on_rank_0(tiny_model_path, sft_data, tmp_path):
    """The ranks leave their process group after training: rank 0's vLLM engine, which sets up a group
    of its own, used to wait there for the rank that had already exited."""
    overrides = _common(tiny_model_path, sft_data) + ["trainer.nproc=2", "learner.strategy=ddp", "trainer.per_device_batch_size=2",
                                                     "learner.precision=bf16-mixed"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", REXTHINKER_COLLECTIVE_TIMEOUT_S="120")
    cmd = [sys.executable, "-m", "rexthinker.sft", "--config", "recipes/configs/sft_demo.yaml", *overrides,
           f"trainer.output_dir={tmp_path / 'run'}", "eval.enabled=true", "eval.backend=vllm", f"data.val=[{sft_data / 'train'}]",
           "eval.num_samples=2", "eval.max_new_tokens=8"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["samples"] == 2

def test_resume_refuses_an_rng_file_that_would_run_code(make_cfg, tmp_path):
    from rexthinker.train.checkpoint import UnsafeCheckpointError

    cfg = make_cfg("trainer.max_steps=2", "trainer.save_every=1")
    run = SFTTrainer(cfg)
    run.fit()
    run.cleanup()
    marker = tmp_path / "pwned"

    class Marker:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    step = tmp_path / "run" / "checkpoints" / "step-1"  # the only one (the last step is saved by finish)
    torch.save({"python": Marker()}, step / "rng" / "rank0.pt")
    with pytest.raises(RuntimeError, match="none of the checkpoints .* could be loaded"):
        SFTTrainer(cfg)  # its size no longer matches the manifest: damaged, and never a silent fresh start
    manifest = json.loads((step / "COMPLETE").read_text())
    manifest["files"]["rng/rank0.pt"] = (step / "rng" / "rank0.pt").stat().st_size
    (step / "COMPLETE").write_text(json.dumps(manifest))  # a forger who fixes the manifest too
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        SFTTrainer(cfg)
    assert not marker.exists()
