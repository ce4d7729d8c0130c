"""``timeout_s`` in the reward loader: a sample that hangs scores 0, is counted and reported, and its
worker process is killed; everything else reads as without a bound."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import textwrap
import time

import pytest

from rexthinker.rewards import RewardFailedError, RewardLoadError, load_reward
from tests.rewards.test_reward_loader import BATCH, FRAGILE, TEXTS

PLUGIN = """
import os
import time


def score(completions, pid_file=None, **kwargs):
    values = []
    for text in completions:
        if "DIE" in text:
            os._exit(3)
        if "HANG" in text:
            if pid_file:
                with open(pid_file, "a") as f:
                    f.write(f"{os.getpid()}\\n")
            time.sleep(3600)
        values.append(len(text) / 100)
    return {"overall": values, "length": values}
"""


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "hanging.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return f"{path}:score"


def workers() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == "reward-worker"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_sample_that_hangs_scores_zero_and_its_worker_is_killed(plugin, tmp_path):
    pids = tmp_path / "pids"
    reward = load_reward(plugin, timeout_s=1.0, pid_file=str(pids))
    start = time.perf_counter()
    scores = reward(["a" * 10, "HANG", "b" * 30])
    elapsed = time.perf_counter() - start
    assert scores == {"overall": [0.1, 0.0, 0.3], "length": [0.1, 0.0, 0.3]}
    assert elapsed < 30, elapsed  # two timeouts of 1 s and three worker starts, not an hour
    assert reward.errors.failed == 1
    assert "RewardTimeoutError" in reward.errors.first_traceback
    assert "did not return within 1 s on 1 sample(s)" in reward.errors.first_traceback
    hung = [int(pid) for pid in pids.read_text().split()]
    assert len(hung) == 2  # the batch's worker, then the one that scored the sample alone
    assert not any(alive(pid) for pid in hung)
    assert len(workers()) == 1  # the fresh one, for the next call
    assert reward(["c" * 50])["overall"] == [0.5]
    reward.close()
    assert workers() == []


def test_a_worker_that_dies_scores_its_sample_zero(plugin):
    reward = load_reward(plugin, timeout_s=5.0)
    assert reward(["a" * 10, "DIE"])["overall"] == [0.1, 0.0]
    assert reward.errors.failed == 1 and "worker process died (exit code 3)" in reward.errors.first_traceback
    reward.close()


def test_a_reward_that_hangs_on_every_sample_is_broken(plugin):
    reward = load_reward(plugin, timeout_s=0.5)
    with pytest.raises(RewardFailedError, match="failed on all 2 samples"):
        reward(["HANG 1", "HANG 2"])
    reward.close()
    assert workers() == []


def test_errors_in_the_worker_read_as_in_process(tmp_path):
    path = tmp_path / "fragile.py"
    path.write_text(FRAGILE)
    bounded, unbounded = load_reward(f"{path}:f", timeout_s=10), load_reward(f"{path}:f")
    assert bounded(TEXTS, **BATCH) == unbounded(TEXTS, **BATCH) == {"overall": [0.75, 0.0], "accuracy": [1.0, 0.0]}
    assert bounded.errors.failed == unbounded.errors.failed == 1
    assert "KeyError: 'no rule for rejection samples'" in bounded.errors.first_traceback
    bounded.close()
    strict = load_reward(f"{path}:f", strict=True, timeout_s=10)
    with pytest.raises(KeyError, match="no rule"):
        strict(TEXTS, **BATCH)
    strict.close()


def test_without_a_bound_there_is_no_worker(plugin):
    reward = load_reward(plugin)
    assert reward(["a" * 10])["overall"] == [0.1]
    assert reward.timeout_s is None and workers() == []


def test_the_bound_pickles_and_is_checked(plugin):
    reward = load_reward(plugin, timeout_s=2)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.timeout_s == 2.0 and clone(["a" * 20])["overall"] == [0.2]
    clone.close()
    for bad in (0, -1.0, float("nan"), float("inf"), "10"):
        with pytest.raises(RewardLoadError, match="timeout_s must be"):
            load_reward(plugin, timeout_s=bad)
