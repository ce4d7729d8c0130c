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
