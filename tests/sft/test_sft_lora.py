"""SFT with LoRA (``model.lora``) on the tiny model: only the adapters train, the learner state holds
them alone and resumes to the same adapters, the final export is the merged plain model (transformers
and vLLM load it and agree), and ``adapter/`` is peft's format."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rexthinker.models import lora
from rexthinker.sft.trainer import SFTTrainer

LORA = ("model.lora.r=4", "model.lora.alpha=8")


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _adapters(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in lora.adapter_state(model.state_dict()).items()}


@pytest.fixture(scope="module")
def trained(tiny_model_path, sft_data, tmp_path_factory):
    """A 2-step LoRA SFT run, finished: (parameters before, parameters after, the run)."""
    from rexthinker.config import load_config
    from rexthinker.sft.config import SFTConfig

    out = tmp_path_factory.mktemp("sft_lora") / "run"
    cfg = load_config(SFTConfig, "recipes/configs/sft_demo.yaml", [
        f"model.path={tiny_model_path}", f"data.train=[{sft_data / 'train'}]", *LORA, "model.freeze_vision=true",
        "model.freeze_projector=true", "learner.strategy=single",
        "learner.precision=fp32", "optim.lr=1e-2", "optim.warmup_ratio=0.0", "trainer.per_device_batch_size=2",
        "trainer.grad_accum=1", f"trainer.output_dir={out}", "trainer.report_to=[jsonl]", "trainer.max_steps=2",
        "trainer.save_every=0", "data.max_length=4096",
    ])  # fmt: skip
    run = SFTTrainer(cfg)
    before = _params(run.model)
    run.fit()
    after = _params(run.model)
    run.finish()
    run.cleanup()
    return before, after, run


def test_only_the_adapters_train(trained):
    before, after, run = trained
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(".language_model." in n for n in trainable)  # the vision tower has none
    for name in before:
        assert torch.equal(before[name], after[name]) != (name in trainable), name  # every adapter moved, nothing else


def test_checkpoint_holds_the_adapters_and_the_merged_model(trained):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rexthinker.convert.verify import logits, probe_inputs

    _, _, run = trained
    step = run.out / "checkpoints" / "step-2"
    saved = torch.load(step / "learner" / "learner.pt", weights_only=True)["model"]
    assert saved.keys() == _adapters(run.model).keys()  # the frozen base is model.path's, not saved again

    merged = AutoModelForImageTextToText.from_pretrained(run.out / "final", dtype=torch.float32)
    expected = lora.merged_state_dict(run.model.state_dict(), 8 / 4)
    plain = merged.state_dict()
    assert plain.keys() == expected.keys()
    for key, value in plain.items():
        assert torch.equal(value, expected[key]), key
    base = AutoModelForImageTextToText.from_pretrained(run.cfg.model.path, dtype=torch.float32)
    assert not torch.equal(plain["model.language_model.layers.0.self_attn.q_proj.weight"],
                           base.state_dict()["model.language_model.layers.0.self_attn.q_proj.weight"])  # fmt: skip

    inputs = probe_inputs(AutoProcessor.from_pretrained(run.out / "final"))
    want = logits(run.model, inputs)  # the trained adapters, unmerged
    assert (logits(merged, inputs) - want).abs().max() < 1e-4
    with_adapter = PeftModel.from_pretrained(base, step / "adapter")  # peft's own format
    assert (logits(with_adapter, inputs) - want).abs().max() < 1e-4


class Crash(RuntimeError):
    pass


def test_interrupted_lora_run_resumes_to_the_same_adapters(make_cfg, tmp_path, monkeypatch):
    reference = SFTTrainer(make_cfg(*LORA, "trainer.max_steps=3", "trainer.grad_accum=1", f"trainer.output_dir={tmp_path / 'ref'}"))
    reference.fit()
    expected = _adapters(reference.model)
    reference.cleanup()

    cfg = make_cfg(*LORA, "trainer.max_steps=3", "trainer.grad_accum=1", "trainer.save_every=1", f"trainer.output_dir={tmp_path / 'crash'}")
    run = SFTTrainer(cfg)
    real_step, calls = run.learner.step, []

    def failing_step():
        calls.append(1)
        if len(calls) == 2:
            raise Crash("simulated crash during step 2")
        return real_step()

    monkeypatch.setattr(run.learner, "step", failing_step)
    with pytest.raises(Crash):
        run.fit()
    run.cleanup()

    resumed = SFTTrainer(cfg)
    assert resumed.step == 1
    resumed.fit()
    got = _adapters(resumed.model)
    assert got.keys() == expected.keys()
    for key, value in got.items():
        assert torch.equal(value, expected[key]), key
    resumed.cleanup()


@pytest.mark.vllm
def test_merged_export_generates_the_same_greedy_tokens_in_vllm(trained):
    """vLLM (a child process: one engine per process) and transformers, greedy, on the merged export."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rexthinker.convert.verify import _MARK, probe_inputs

    _, _, run = trained
    final = run.out / "final"
    proc = subprocess.run([sys.executable, "-m", "rexthinker.convert.verify", str(final), "8"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    vllm_tokens = json.loads([line for line in proc.stdout.splitlines() if line.startswith(_MARK)][-1][len(_MARK) :])

    model = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.float32).eval()
    inputs = probe_inputs(AutoProcessor.from_pretrained(final))
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=None)
    hf_tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert vllm_tokens == hf_tokens[: len(vllm_tokens)] and len(vllm_tokens) >= 1


# --- LoRA under DeepSpeed ZeRO: two CPU processes over gloo -----------------------------------------


def _ds_lora_overrides(tiny_model_path, sft_data, nproc: int, strategy: str, batch: int) -> list[str]:
    from .test_sft_train import _common

    return _common(tiny_model_path, sft_data) + [*LORA, "model.freeze_vision=true", "model.freeze_projector=true",
                                                 "trainer.max_steps=2", "trainer.save_every=1", "trainer.keep_checkpoints=2", f"trainer.nproc={nproc}",
                                                 f"learner.strategy={strategy}", f"trainer.per_device_batch_size={batch}"]  # fmt: skip


def _load_adapter(run_dir, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / f"step-{step}" / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def single_lora_cli_run(tiny_model_path, sft_data, tmp_path_factory):
    from .test_sft_train import _cli

    root = tmp_path_factory.mktemp("sft_lora_single")
    return _cli(_ds_lora_overrides(tiny_model_path, sft_data, 1, "single", 4), root, "single"), root / "single"


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_lora_under_deepspeed_two_cpu_processes_trains_the_adapters_as_one_process(
    tiny_model_path, sft_data, tmp_path, strategy, single_lora_cli_run
):
    """Same global batch (2 x 2 processes vs 4 x 1), two steps: the same losses, the same adapters, and a
    merged export that differs from the base in the adapted linear layers only."""
    from safetensors.torch import load_file

    from .test_sft_train import _cli

    single, single_dir = single_lora_cli_run
    multi = _cli(_ds_lora_overrides(tiny_model_path, sft_data, 2, strategy, 2), tmp_path, strategy)
    assert [m["loss"] for m in multi] == pytest.approx([m["loss"] for m in single], rel=1e-5)
    run_dir = tmp_path / strategy
    for step in (1, 2):
        want, got = _load_adapter(single_dir, step), _load_adapter(run_dir, step)
        assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in got.items())  # B left zero: nothing trained
    base = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    merged = load_file(str(run_dir / "final" / "model.safetensors"))
    assert merged.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    adapted = {k for k in base if re.fullmatch(rf"{lora.LANGUAGE_BLOCKS}(?:{'|'.join(lora.TARGETS)})\.weight",
                                               k.replace("model.layers.", "model.language_model.layers."))}  # fmt: skip
    assert changed == adapted and len(adapted) == 2 * len(lora.TARGETS)  # 2 layers x 7 linears; vision, norms, head untouched
    reference = load_file(str(single_dir / "final" / "model.safetensors"))
    assert all(torch.allclose(merged[k], reference[k], atol=1e-6) for k in changed)


def test_lora_under_zero2_resumes_to_the_same_adapters(tiny_model_path, sft_data, tmp_path, single_lora_cli_run):
    """A 2-process ZeRO-2 LoRA run killed after its step-1 checkpoint (the later outputs removed) resumes
    from it, loading the adapters and their optimizer state, and ends on the uninterrupted run's adapters."""
    import shutil

    from .test_sft_train import _cli

    _, single_dir = single_lora_cli_run
    overrides = _ds_lora_overrides(tiny_model_path, sft_data, 2, "zero2", 2)
    _cli(overrides, tmp_path, "run")
    run_dir = tmp_path / "run"
    final = run_dir / "final"  # a link to the last checkpoint's hf/
    final.unlink() if final.is_symlink() else shutil.rmtree(final)
    shutil.rmtree(run_dir / "checkpoints" / "step-2")
    kept = (run_dir / "checkpoints" / "step-1" / "COMPLETE").stat().st_mtime_ns
    resumed = _cli(overrides, tmp_path, "run")
    assert resumed[-1]["step"] == 2
    assert (run_dir / "checkpoints" / "step-1" / "COMPLETE").stat().st_mtime_ns == kept  # resumed, not redone
    want, got = _load_adapter(single_dir, 2), _load_adapter(run_dir, 2)
    assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
