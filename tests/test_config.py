"""The typed config loader: YAML values, dotted overrides, type conversion, loud errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from rexthinker.config import ConfigError, load_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    path: str
    steps: int = 10
    strategy: Literal["none", "zero2", "zero3"] = "none"
    eval_every: int | None = None
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    optim: Optim = field(default_factory=Optim)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("path: /models/a\nsteps: 5\noptim:\n  lr: 2.0e-5\n")
    cfg = load_config(Run, path, ["optim.lr=1e-6", "strategy=zero3", "report_to=[jsonl, wandb]", "eval_every=null"])
    assert cfg == Run(path="/models/a", steps=5, strategy="zero3", report_to=["jsonl", "wandb"], optim=Optim(lr=1e-6))
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.optim.betas, tuple)


def test_scientific_notation_without_dot_is_a_float():
    # YAML 1.1 reads "1e-5" as a string; the schema says float, so it must convert.
    assert load_config(Run, overrides=["path=x", "optim.lr=1e-5"]).optim.lr == 1e-5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["path=x", "optim.lrr=1"], "unknown key optim.'lrr'; valid keys here: betas, lr"),
        (["path=x", "steps=1.5"], "steps: expected an integer"),
        (["path=x", "strategy=zero4"], "strategy: 'zero4' is not one of"),
        (["path=x", "optim.betas=[1]"], "optim.betas: expected 2 items"),
        (["steps=3"], "missing 1 required positional argument: 'path'"),
        (["path"], "not of the form key=value"),
        (["path=x", "steps.sub=1"], "steps: expected an integer"),
        (["path=x", "steps=2", "steps.sub=1"], "'steps' holds a value"),
    ],
)
def test_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(Run, overrides=overrides)
    assert message in str(info.value)


def test_missing_file_is_loud(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Run, tmp_path / "nope.yaml")


def test_save_round_trip(tmp_path):
    cfg = load_config(Run, overrides=["path=x", "optim.betas=[0.8, 0.9]"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Run, tmp_path / "c.yaml") == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.8, 0.9]
