"""Nothing secret leaves the machine: an API key in ``reward.kwargs`` appears in no file a run or a
conversion writes (``config.yaml``, the wandb files, the model card) nor in the reward's messages,
and the model card names no local absolute path."""

from __future__ import annotations

import shutil

import pytest

from rexthinker.config import REDACTED, load_config, redact, save_config, to_dict
from rexthinker.convert import convert
from rexthinker.grpo.config import GRPOConfig
from rexthinker.rewards import RewardLoadError, load_reward
from rexthinker.train.metrics import MetricLogger

SECRET = "sk-live-0123456789abcdef"


def test_redact_hides_text_under_secret_keys_and_keeps_numbers():
    value = {"reward": {"kwargs": {"api_key": SECRET, "judge": {"hf_token": "hf_x", "Password": ["p"]}, "max_new_tokens": 64,
                                   "use_auth": True, "model": "gpt", "token_budget": 0}}}  # fmt: skip
    assert redact(value) == {"reward": {"kwargs": {"api_key": REDACTED, "judge": {"hf_token": REDACTED, "Password": REDACTED},
                                                   "max_new_tokens": 64, "use_auth": True, "model": "gpt", "token_budget": 0}}}  # fmt: skip


def test_an_api_key_in_reward_kwargs_reaches_no_output_file(single_run, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    shutil.copytree(single_run / "checkpoints", run / "checkpoints")
    cfg = load_config(GRPOConfig, "recipes/configs/grpo_demo.yaml", [f"reward.kwargs={{api_key: {SECRET}, rounds: 3}}",
                                                                     f"trainer.output_dir={run}"])  # fmt: skip
    assert cfg.reward.kwargs["api_key"] == SECRET  # the run itself still has it
    save_config(cfg, run / "config.yaml")
    logger = MetricLogger(run, ["jsonl", "wandb"], "secret-test", to_dict(cfg))
    logger.log(1, {"loss": 1.0})
    logger.close()
    out = tmp_path / "release"
    convert(run / "checkpoints" / "step-1", out)
    written = [p for p in [*run.rglob("*"), *out.rglob("*")] if p.is_file()]
    run_file = next(p for p in written if p.suffix == ".wandb")  # wandb's offline record holds the config
    assert b"api_key" in run_file.read_bytes() and REDACTED.encode() in run_file.read_bytes()
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    card = (out / "README.md").read_text()
    assert "rounds: 3" in card and REDACTED in card
    assert str(tmp_path) not in card and str(single_run.parent) not in card


def test_reward_messages_redact_their_config(tmp_path):
    plugin = tmp_path / "judge.py"
    plugin.write_text("class Judge:\n    def __init__(self, api_key, rounds):\n        raise ValueError('no network')\n"
                      "    def __call__(self, completions):\n        return [0.0] * len(completions)\n")  # fmt: skip
    with pytest.raises(RewardLoadError) as failure:
        load_reward(f"{plugin}:Judge", api_key=SECRET, rounds=3)
    assert SECRET not in str(failure.value) and REDACTED in str(failure.value)
    plugin.write_text("def judge(completions, api_key, rounds):\n    return [0.0] * len(completions)\n")
    assert SECRET not in repr(load_reward(f"{plugin}:judge", api_key=SECRET, rounds=3))


class _Marker:
    """Unpickling this creates a file: what a hostile checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_conversion_refuses_a_deepspeed_file_that_would_run_code(deepspeed_runs, tmp_path, capsys):
    import torch

    from scripts.convert_checkpoint import main as cli

    step = tmp_path / "step-1"
    shutil.copytree(deepspeed_runs["zero2"] / "checkpoints" / "step-1", step)
    states = next((step / "learner").rglob("mp_rank_00_model_states.pt"))
    marker = tmp_path / "pwned"
    state = torch.load(states, weights_only=False)  # our own file, made by the fixture
    state["hook"] = _Marker(marker)
    torch.save(state, states)
    assert cli([str(step / "learner"), "--out", str(tmp_path / "out")]) == 1
    assert "posix.system" in capsys.readouterr().err and not marker.exists()
    assert not (tmp_path / "out").exists()
    assert cli([str(step / "learner"), "--out", str(tmp_path / "out"), "--trust-pickle"]) == 0  # the user's explicit choice
    assert marker.exists()  # which is exactly what trusting means
