"""Every shipped YAML loads into its schema, names reward plug-ins that load and bind their keyword
config, and names DeepSpeed configs that exist (style habit 6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rexthinker.config import load_config
from rexthinker.grpo.config import GRPOConfig
from rexthinker.rewards import load_reward
from rexthinker.sft.config import SFTConfig
from rexthinker.train.learner import DEEPSPEED_CONFIGS

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
SCHEMAS = {"sft": SFTConfig, "grpo": GRPOConfig}


def _shipped():
    return sorted(p for p in CONFIGS.glob("*.yaml"))


def test_every_yaml_has_a_schema():
    assert _shipped(), "no configs found"
    for path in _shipped():
        assert path.stem.split("_")[0] in SCHEMAS, f"{path.name}: name must start with one of {sorted(SCHEMAS)}"


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: p.name)
def test_config_loads_and_its_plugins_resolve(path):
    cfg = load_config(SCHEMAS[path.stem.split("_")[0]], path)
    if cfg.learner.strategy != "single":
        assert (DEEPSPEED_CONFIGS / f"{cfg.learner.strategy}.json").is_file()
    reward = cfg.reward if isinstance(cfg, GRPOConfig) else None
    spec = reward.function if reward else cfg.eval.reward
    load_reward(spec, **(reward.kwargs if reward else {}))  # raises on a bad path, name or signature


def test_recipes_point_at_shipped_configs():
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    named = 0
    for script in recipes.glob("*.sh"):
        for name in re.findall(r"recipes/configs/([\w.-]+\.yaml)", script.read_text()):
            named += 1
            assert (CONFIGS / name).is_file(), f"{script.name} names a missing config {name}"
    assert named >= 2


def test_qwen3_vl_refcocog_recipe_is_the_released_one_at_qwen3_vls_pixels():
    """The same settings as the released RefCOCOg recipe but what Qwen3-VL changes: its pixel limits
    (the same 16..1280 image tokens, 32 x 32 pixels each), the policy, the rows (0-1000) and the run's names."""
    from rexthinker.config import to_dict
    from rexthinker.models.families import QWEN3_VL

    released = to_dict(load_config(GRPOConfig, CONFIGS / "grpo_refcocog.yaml"))
    qwen3 = load_config(GRPOConfig, CONFIGS / "grpo_refcocog_qwen3_vl.yaml")
    assert (qwen3.model.min_pixels, qwen3.model.max_pixels) == QWEN3_VL.train_pixels == (16 * 32 * 32, 1280 * 32 * 32)
    assert QWEN3_VL.frame == "relative_1000" and "qwen3" in qwen3.model.path.lower()
    differ = {("model", "path"), ("model", "min_pixels"), ("model", "max_pixels"), ("data", "train"),
              ("trainer", "output_dir"), ("trainer", "run_name")}  # fmt: skip
    changed = {(section, key) for section, values in to_dict(qwen3).items() if isinstance(values, dict)
               for key, value in values.items() if released[section][key] != value}  # fmt: skip
    assert changed == differ


@pytest.mark.vllm
def test_qwen3_vl_refcocog_recipe_runs_a_step_on_the_tiny_qwen3_vl(tmp_path):
    """``bash recipes/grpo_refcocog_qwen3_vl.sh`` with the tiny Qwen3-VL, rows written by the data tool for
    Qwen3-VL (0-1000, recorded), shrunk to one step on CPU: the recipe's own reward, pixel limits and
    algorithm run through Ray and vLLM, and the export records the 0-1000 frame."""
    import json
    import os
    import subprocess
    import sys

    from data_tools.__main__ import main as data_tools
    from rexthinker.models import tiny
    from rexthinker.models.families import FRAME_FILE

    root = Path(__file__).resolve().parents[1]
    assert data_tools(["synthref", "--out", str(tmp_path / "data"), "--train", "4", "--val", "0", "--test", "0",
                       "--workers", "1", "--formats", "parquet", "--family", "qwen3_vl"]) == 0  # fmt: skip
    overrides = [
        f"model.path={tiny.get('tiny', 'qwen3_vl')}", f"data.train=[{tmp_path / 'data' / 'train' / 'grpo' / 'synthref.parquet'}]",
        f"trainer.output_dir={tmp_path / 'run'}", "trainer.max_steps=1", "trainer.report_to=[jsonl]", "trainer.save_every=0",
        "resources.gpus=0", "resources.learner_ranks=1", "resources.rollout_engines=1", "learner.strategy=single",
        "learner.precision=fp32", "learner.gradient_checkpointing=false", "rollout.tensor_parallel_size=1",
        "rollout.n=2", "rollout.max_new_tokens=8", "rollout.max_model_len=2048", "rollout.enforce_eager=true",
        "algorithm.prompts_per_step=2", "algorithm.micro_batch_tokens=4096",
    ]  # fmt: skip
    env = dict(os.environ, PY=sys.executable, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(["bash", "recipes/grpo_refcocog_qwen3_vl.sh", *overrides], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and "reward/overall" in rows[0]
    final = tmp_path / "run" / "final"
    assert json.loads((final / FRAME_FILE).read_text()) == {"family": "qwen3_vl", "frame": "relative_1000"}
