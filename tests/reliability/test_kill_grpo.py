"""GRPO through Ray + vLLM, killed with SIGKILL at chosen points and restarted (``-m slow``: each run
starts a Ray cluster and a vLLM engine), and a rollout engine killed mid-step in one process (default
suite): Ray restarts it, the driver gives it the current weights and runs the step's rollouts again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker.config import load_config
from rexthinker.grpo.config import GRPOConfig
from rexthinker.train import checkpoint
from tests.grpo.conftest import grpo_data  # noqa: F401
from tests.reliability import harness

pytestmark = pytest.mark.vllm
CONFIG = "recipes/configs/grpo_demo.yaml"
REWARD = Path(__file__).parents[1] / "grpo" / "plugins" / "length_reward.py"


def overrides(tiny_model_path, data, *extra: str) -> list[str]:
    return [
        f"model.path={tiny_model_path}", f"data.train=[{data}]", f"data.val=[{data}]", f"reward.function={REWARD}:length_score",
        "algorithm.prompts_per_step=2", "rollout.n=4", "rollout.max_new_tokens=16", "rollout.max_model_len=1024",
        "rollout.enforce_eager=true", "optim.lr=1e-3", "trainer.max_steps=3", "trainer.save_every=1",
        "trainer.keep_checkpoints=1", "trainer.report_to=[jsonl]", "learner.strategy=single", "learner.precision=fp32",
        "eval.enabled=true", "eval.num_samples=2", "eval.max_new_tokens=8", "resources.threads_per_actor=1", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight(tiny_model_path, grpo_data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("grpo_straight") / "run"
    assert harness.run("rexthinker.grpo", CONFIG, overrides(tiny_model_path, grpo_data), out) == 0, harness.tail(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["step.mid@2", "commit.stamped@2", "eval.end", "commit.delete_old@3"])
def test_grpo_killed_then_resumed_ends_on_the_same_weights(tiny_model_path, grpo_data, straight, tmp_path, fault):  # noqa: F811
    out = tmp_path / "killed"
    args = overrides(tiny_model_path, grpo_data)
    if fault == "commit.delete_old@3":  # killed in the final evaluation first, so the restart saves step 3 again
        assert harness.run("rexthinker.grpo", CONFIG, args, out, fault="eval.end") != 0, harness.tail(out)
    # Ray's node agents notice their raylet is gone and exit on their own, after a while
    harness.killed_then_resumed("rexthinker.grpo", CONFIG, args, out, fault, linger_s=180)
    harness.same_weights(straight, out)
    assert checkpoint.latest(out / "checkpoints") == out / "checkpoints" / "step-3"


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(cfg: GRPOConfig, kill_rollout_at: int | None = None, kill_learner_at: int | None = None):
    import ray

    from rexthinker.grpo.trainer import GRPOTrainer

    trainer = GRPOTrainer(cfg)
    real_generate = trainer._generate

    def generate(requests, n):
        if trainer.step + 1 == kill_rollout_at:
            ray.kill(trainer.rollouts[0], no_restart=False)  # as if its process died: Ray restarts it
        if trainer.step + 1 == kill_learner_at:
            ray.kill(trainer.learners[0])
        return real_generate(requests, n)

    trainer._generate = generate
    try:
        while trainer.step < trainer.total_steps:
            trainer.logger.log(trainer.step + 1, trainer.train_step())
        final = trainer.finish()
    finally:
        trainer.cleanup()
    return final


def _cfg(tiny_model_path, data, out, *extra) -> GRPOConfig:
    args = overrides(tiny_model_path, data, "eval.enabled=false", "trainer.save_every=0", "trainer.max_steps=2", *extra)
    return load_config(GRPOConfig, CONFIG, args + [f"trainer.output_dir={out}"])


def test_a_rollout_engine_killed_mid_step_is_restarted_and_the_step_retried(tiny_model_path, grpo_data, tmp_path, ray_cluster, capfd):  # noqa: F811
    final_a = _run(_cfg(tiny_model_path, grpo_data, tmp_path / "a"))
    final_b = _run(_cfg(tiny_model_path, grpo_data, tmp_path / "b"), kill_rollout_at=2)
    assert "rollout engine 0 died" in capfd.readouterr().out
    a, b = load_file(str(final_a / "model.safetensors")), load_file(str(final_b / "model.safetensors"))
    for key in a:  # the retried step sampled the same completions with the same weights
        assert torch.equal(a[key], b[key]), key


def test_a_dead_learner_stops_the_run_naming_it_and_the_checkpoint(tiny_model_path, grpo_data, tmp_path, ray_cluster):  # noqa: F811
    cfg = _cfg(tiny_model_path, grpo_data, tmp_path / "c", "trainer.save_every=1", "trainer.max_steps=3")
    from rexthinker.grpo.trainer import GRPOTrainer

    trainer = GRPOTrainer(cfg)
    try:
        trainer.logger.log(1, trainer.train_step())
        trainer.save()
        import ray

        ray.kill(trainer.learners[0])
        with pytest.raises(RuntimeError, match=r"learner rank 0 died \(ActorDiedError\) during update; the run stops at step 1: the newest checkpoint is .*step-1"):
            trainer.fit()
    finally:
        trainer.cleanup()
