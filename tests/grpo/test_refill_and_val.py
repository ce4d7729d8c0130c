"""The GRPO loop (Ray + vLLM on the tiny model) with DAPO-style dynamic sampling and with periodic
validation: a step refills its batch up to ``algorithm.refill_rounds`` extra rounds, trains on what
it kept at the cap, skips its update when it kept nothing, and a resumed run draws what an
uninterrupted one does; ``trainer.val_every`` evaluates between the start and end evaluations,
never twice at a step, also across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rexthinker.grpo.trainer import GRPOTrainer
from rexthinker.rewards import load_reward

from .conftest import write_tiny_grpo_parquet
from .test_loop import make_cfg

pytestmark = pytest.mark.vllm
SIGNAL = Path(__file__).parent / "plugins" / "signal_reward.py"
# Data positions whose prompts get signal. Two prompts a step, three refill rounds: step 1 draws
# positions 0-4 (0,1 | 2 | 3 | 4: full after four rounds), step 2 positions 5-9 (5,6 | 7 | 8 | 9: one
# group at the cap), step 3 positions 10-17 (two a round, none kept: the update is skipped).
SIGNAL_AT = (1, 4, 5)
EXPECTED = [  # per step: prompts drawn, groups kept, groups dropped, rounds, update skipped
    (5, 2, 3, 4, 0),
    (5, 1, 4, 4, 0),
    (8, 0, 8, 4, 1),
]
BATCH_KEYS = ("batch/prompts_drawn", "batch/groups_kept", "batch/groups_dropped", "batch/rounds", "batch/skipped_update")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data32(tmp_path_factory):
    return write_tiny_grpo_parquet(tmp_path_factory.mktemp("refill_data"), 32)


def refill_cfg(tiny_model_path, data, out):
    return make_cfg(tiny_model_path, data, out, "algorithm.filter_zero_variance=true", "algorithm.refill_rounds=3",
                    "trainer.max_steps=3", f"reward.function={SIGNAL}:signal_for", "reward.timeout_s=null")  # fmt: skip


def give_signal(trainer: GRPOTrainer, upto: int = 18) -> None:
    """Swap in the reward that gives the prompts at SIGNAL_AT (in the run's data order) signal."""
    start, trainer.data_position = trainer.data_position, 0
    drawn = [s.referring for s in trainer.draw_prompts(upto)[0]]
    trainer.data_position = start
    chosen = {drawn[p] for p in SIGNAL_AT}
    assert not chosen & {drawn[p] for p in range(upto) if p not in SIGNAL_AT}, "a chosen expression repeats in the data"
    trainer.reward.close()
    trainer.reward = load_reward(f"{SIGNAL}:signal_for", timeout_s=None, referrings=sorted(chosen))


def run(cfg, steps=None):
    trainer = GRPOTrainer(cfg)
    rows = []
    try:
        give_signal(trainer)
        while trainer.step < (steps or trainer.total_steps):
            rows.append({"step": trainer.step + 1, **trainer.train_step()})
        final = trainer.finish() if steps is None else trainer.save()
    finally:
        trainer.cleanup()
    return trainer, final, rows


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_path, data32, tmp_path_factory):
    return run(refill_cfg(tiny_model_path, data32, tmp_path_factory.mktemp("refill") / "straight"))


def batch_numbers(row: dict) -> tuple:
    return tuple(int(row[k]) for k in BATCH_KEYS)


def test_refill_fills_the_batch_holds_the_cap_and_skips_an_empty_step(uninterrupted):
    trainer, _, rows = uninterrupted
    assert [batch_numbers(r) for r in rows] == EXPECTED
    assert "actor/grad_norm" in rows[0] and "actor/grad_norm" in rows[1]  # trained on 2 groups, then on 1
    assert not any(k.startswith("actor/") for k in rows[2])  # nothing kept: no update, no crash
    assert rows[2]["time/rollout_s"] > 0 and "reward/overall" in rows[2]
    assert trainer.data_position == 18 == sum(e[0] for e in EXPECTED)


def test_a_resumed_run_draws_the_same_prompts(uninterrupted, tiny_model_path, data32, tmp_path):
    _, final_a, rows_a = uninterrupted
    cfg = refill_cfg(tiny_model_path, data32, tmp_path / "crashed")
    _, saved, _ = run(cfg, steps=1)  # saves step 1, then the process "dies"
    assert json.loads((saved / "trainer_state.json").read_text())["data_position"] == 5
    trainer, final_b, rows_b = run(cfg)  # a fresh start resumes from step 1 at data position 5
    assert trainer.step == 3 and trainer.data_position == 18
    assert [batch_numbers(r) for r in rows_b] == [batch_numbers(r) for r in rows_a[1:]]
    a, b = load_file(str(final_a / "model.safetensors")), load_file(str(final_b / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


class Killed(Exception):
    pass


def test_val_every_between_start_and_end_once_per_step_across_a_resume(tiny_model_path, grpo_data, tmp_path):
    out = tmp_path / "val"
    cfg = make_cfg(tiny_model_path, grpo_data, out, "eval.enabled=true", f"data.val=[{grpo_data}]", "eval.num_samples=2",
                   "eval.max_new_tokens=8", "trainer.val_every=1", "trainer.max_steps=3", "trainer.save_every=1")  # fmt: skip

    def lifecycle(trainer):  # rexthinker.train.cli.main's
        trainer.evaluate("start")
        trainer.fit()
        trainer.finish()
        trainer.evaluate("end")

    first = GRPOTrainer(cfg)
    save = first.save

    def save_then_die():
        save()
        raise Killed

    first.save = save_then_die  # killed right after the checkpoint of step 1 (after its evaluation)
    try:
        with pytest.raises(Killed):
            lifecycle(first)
    finally:
        first.cleanup()
    second = GRPOTrainer(cfg)  # resumes at step 1: no start evaluation, none at step 1 again
    try:
        assert second.step == 1
        lifecycle(second)
    finally:
        second.cleanup()

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], k.split("/")[0]) for r in rows for k in r if k in ("eval_start/overall", "val/overall", "eval_end/overall")]
    assert evals == [(0, "eval_start"), (1, "val"), (2, "val"), (3, "eval_end")]
    names = {prefix: {k.split("/", 1)[1] for r in rows for k in r if k.startswith(prefix + "/")} for _, prefix in evals}
    assert names["val"] == names["eval_start"] == names["eval_end"] >= {"overall", "format", "accuracy_f1", "acc_50", "samples"}
    assert sorted(p.name for p in out.glob("eval_*.json")) == ["eval_end.json", "eval_start.json", "eval_step1.json", "eval_step2.json"]
    assert "per_domain" in json.loads((out / "eval_step2.json").read_text())

    # the curves: the resumed run's history, val/overall beside reward/overall
    keys = ["reward/overall", "val/overall", "reward/accuracy", "val/accuracy_f1", "reward/format", "actor/kl", "response/length_mean"]
    drawn = [k for k in keys if any(k in row for row in second.logger.history)]
    assert drawn[:2] == ["reward/overall", "val/overall"]
    assert Image.open(out / "reward_curves.png").size[0] == round(4.2 * len(drawn) * 110)
