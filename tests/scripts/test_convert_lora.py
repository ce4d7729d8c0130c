"""Converting a LoRA run (``model.lora``): its ``hf/`` is the merged model, ``--layout adapter``
merges ``adapter/`` into the base to the same tensors, ``--adapter-only`` writes the checked adapter
alone in peft's format, and the adapter-only learner state is refused with a pointer."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rexthinker.config import load_config
from rexthinker.convert import ConversionError, convert
from scripts.convert_checkpoint import main as cli
from tests.scripts.conftest import _overrides
from tests.scripts.helpers import REPO


@pytest.fixture(scope="module")
def lora_step(tiny_model_path, sft_rows, tmp_path_factory):
    """``checkpoints/step-1`` of a one-step LoRA SFT run (its adapters made sizeable first)."""
    from rexthinker.sft.config import SFTConfig
    from rexthinker.sft.trainer import SFTTrainer

    out = tmp_path_factory.mktemp("convert_lora") / "run"
    overrides = _overrides(tiny_model_path, sft_rows, out) + ["learner.strategy=single", "model.freeze_projector=true",
                                                               "model.lora.r=4", "model.lora.alpha=8"]  # fmt: skip
    run = SFTTrainer(load_config(SFTConfig, REPO / "recipes/configs/sft_demo.yaml", overrides))
    with torch.no_grad():
        for name, p in run.model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)
    try:
        run.fit()
        run.finish()
    finally:
        run.cleanup()
    return out / "checkpoints" / "step-1"


def test_the_adapter_merges_into_its_base_like_the_run_export(lora_step, tmp_path):
    report = convert(lora_step, tmp_path / "merged", layout="adapter")
    assert report.layout == "adapter" and report.max_logit_diff <= report.tolerance
    assert any("LoRA adapter of" in n for n in report.notes)
    got = load_file(str(tmp_path / "merged" / "model.safetensors"))
    want = load_file(str(lora_step / "hf" / "model.safetensors"))  # what the run exported, merged by the learner
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert convert(lora_step, tmp_path / "as_hf").layout == "hf"  # the step's hf/ is a plain model already


def test_the_adapter_only_learner_state_is_refused_with_a_pointer(lora_step, tmp_path):
    with pytest.raises(ConversionError, match="LoRA adapters only .* --layout adapter"):
        convert(lora_step, tmp_path / "out", layout="learner")


def test_adapter_only_export_loads_in_peft(lora_step, tiny_model_path, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    assert cli([str(lora_step), "--adapter-only", "--out", str(tmp_path / "adapter")]) == 0
    assert "peft loads it onto the base" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, tmp_path / "adapter").merge_and_unload().state_dict()
    exported = AutoModelForImageTextToText.from_pretrained(lora_step / "hf", dtype=torch.float32).state_dict()
    assert merged.keys() == exported.keys()
    for key, value in exported.items():
        assert torch.allclose(merged[key], value, atol=1e-6), key
    with pytest.raises(SystemExit):
        cli([str(lora_step), "--adapter-only", "--dtype", "bf16", "--out", str(tmp_path / "x")])
