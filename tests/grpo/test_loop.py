"""The GRPO loop end to end on the tiny model: Ray actors, vLLM rollouts, a reward plug-in, the
update, the weight sync, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker.config import load_config
from rexthinker.data.synthref import generate
from rexthinker.grpo.config import GRPOConfig

pytestmark = pytest.mark.vllm
PLUGINS = Path(__file__).parent / "plugins" / "length_reward.py"


@pytest.fixture(scope="module")
def grpo_cot(tmp_path_factory):
    """The same kind of rows in original pixels (HumanRef-CoT), for runs that change the pixel limits."""
    from rexthinker.data.cot_tsv import write_cot_tsv

    root = tmp_path_factory.mktemp("grpo_cot")
    write_cot_tsv(generate(16, seed=9), root / "train")
    return root / "train"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_cfg(tiny_model_path, data, out, *extra) -> GRPOConfig:
    overrides = [
        f"model.path={tiny_model_path}", f"data.train=[{data}]", f"trainer.output_dir={out}",
        f"reward.function={PLUGINS}:length_score", "reward.kwargs={}", "algorithm.prompts_per_step=2", "rollout.n=4",
        "rollout.max_new_tokens=16", "rollout.max_model_len=1024", "rollout.enforce_eager=true",
        "optim.lr=1e-3", "trainer.max_steps=2", "trainer.save_every=0", "trainer.report_to=[jsonl]",
        "learner.strategy=single", "learner.precision=fp32", "trainer.sample_table_every=1",
    ]  # fmt: skip
    return load_config(GRPOConfig, "recipes/configs/grpo_demo.yaml", overrides + ["eval.enabled=false", *extra])


def run(cfg, steps=None):
    from rexthinker.grpo.trainer import GRPOTrainer

    trainer = GRPOTrainer(cfg)
    try:
        while trainer.step < (steps or trainer.total_steps):
            trainer.logger.log(trainer.step + 1, trainer.train_step())
        final = trainer.finish() if steps is None else trainer.save()
    finally:
        trainer.cleanup()
    return trainer, final


def test_two_steps_through_ray_with_vllm_change_the_policy(tiny_model_path, grpo_cot, tmp_path):
    # Pixel limits other than the checkpoint's: vLLM must resize exactly like the learner's processor,
    # or the learner's forward fails on a different number of image tokens.
    cfg = make_cfg(tiny_model_path, grpo_cot, tmp_path / "run", "model.freeze_vision=true", "model.freeze_projector=true",
                   "model.min_pixels=3136", "model.max_pixels=25088")
    trainer, final = run(cfg)
    before = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".language_model." in k or k.startswith("model.layers") for k in changed)
    assert not any("visual" in k for k in changed), sorted(changed)[:5]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/overall", "reward/length", "time/rollout_s", "time/reward_s", "time/update_s", "time/sync_s",
                "actor/kl", "actor/entropy", "actor/clip_frac", "actor/grad_norm", "perf/samples_per_s",
                "response/length_mean", "time/orchestration_share", "time/learner_optimize_s"):  # fmt: skip
        assert key in rows[0], key
    assert rows[0]["actor/updates"] == 1
    assert (tmp_path / "run" / "samples.jsonl").exists()
    assert (tmp_path / "run" / "reward_curves.png").exists()


def test_two_qwen3_vl_steps_reward_in_its_0_1000_frame_and_change_the_policy(grpo_cot, tmp_path):
    from rexthinker.models import tiny
    from rexthinker.models.families import FRAME_FILE

    model = tiny.get("tiny", "qwen3_vl")
    cfg = make_cfg(model, grpo_cot, tmp_path / "run", f"reward.function={PLUGINS}:relative_length_score")
    trainer, final = run(cfg)
    assert trainer.reward.errors.failed == 0
    before = load_file(str(Path(model) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert any(".language_model." in k for k in before if not torch.equal(before[k], after[k]))
    assert json.loads((final / FRAME_FILE).read_text()) == {"family": "qwen3_vl", "frame": "relative_1000"}


def test_a_reward_that_raises_on_some_samples_scores_them_zero(tiny_model_path, grpo_data, tmp_path):
    cfg = make_cfg(tiny_model_path, grpo_data, tmp_path / "flaky", f"reward.function={PLUGINS}:Flaky", "trainer.max_steps=1")
    trainer, _ = run(cfg)
    errors = trainer.reward.errors
    assert 0 < errors.failed < 8  # some of the 2 x 4 samples scored 0 and were reported, the rest scored
    assert "cannot score this batch" in errors.first_traceback
    rows = [json.loads(line) for line in (tmp_path / "flaky" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert rows[0]["reward/failed_samples"] == errors.failed  # the step's failures (the run's only step)


def test_a_broken_reward_stops_the_run(tiny_model_path, grpo_data, tmp_path):
    from rexthinker.rewards import RewardFailedError

    cfg = make_cfg(tiny_model_path, grpo_data, tmp_path / "broken", f"reward.function={PLUGINS}:broken", "trainer.max_steps=1")
    with pytest.raises(RewardFailedError):
        run(cfg)


def test_resumed_run_ends_with_the_same_weights(tiny_model_path, grpo_data, tmp_path):
    straight = make_cfg(tiny_model_path, grpo_data, tmp_path / "straight", "trainer.max_steps=3")
    _, final_a = run(straight)

    crashed = make_cfg(tiny_model_path, grpo_data, tmp_path / "crashed", "trainer.max_steps=3")
    run(crashed, steps=2)  # saves step 2, then the process "dies"
    trainer, final_b = run(crashed)  # a fresh start resumes from step 2
    assert trainer.step == 3
    a, b = load_file(str(final_a / "model.safetensors")), load_file(str(final_b / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
