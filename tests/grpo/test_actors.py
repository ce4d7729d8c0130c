"""Bounded actor calls on a real local Ray cluster: a call that does not answer in time, an actor that
dies, and one that Ray restarts, each named in the error."""

from __future__ import annotations

import os
import time

import pytest

from rexthinker.grpo import actors


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class Toy:
    def ping(self) -> bool:
        return True

    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def die(self) -> None:
        os._exit(1)

    def fail(self) -> None:
        raise ValueError("the task's own error")


def test_results_come_back_in_order(ray_cluster):
    a, b = (ray_cluster.remote(Toy).options(num_cpus=0).remote() for _ in range(2))
    assert actors.gather([a.nap.remote(0.2), b.nap.remote(0.0)], ["a", "b"], "nap", timeout_s=30) == [0.2, 0.0]


def test_a_call_past_its_deadline_names_the_actor(ray_cluster):
    a, b = (ray_cluster.remote(Toy).options(num_cpus=0).remote() for _ in range(2))
    actors.wait_alive([a, b], ["a", "b"], timeout_s=60)  # started (a worker process takes seconds)
    start = time.monotonic()
    with pytest.raises(actors.ActorTimeout, match=r"rollout engine 1 did not answer within 1 s .* during rollout"):
        actors.gather([a.nap.remote(0.0), b.nap.remote(60)], ["rollout engine 0", "rollout engine 1"], "rollout", timeout_s=1)
    assert time.monotonic() - start < 10
    ray_cluster.kill(b)


def test_a_dead_actor_is_named_and_a_task_error_passes_through(ray_cluster):
    a = ray_cluster.remote(Toy).options(num_cpus=0).remote()
    with pytest.raises(ray_cluster.exceptions.RayTaskError, match="the task's own error"):
        actors.gather([a.fail.remote()], ["learner rank 0"], "update", timeout_s=30)
    with pytest.raises(actors.ActorDied, match=r"learner rank 0 died \(\w+\) during update"):
        actors.gather([a.die.remote()], ["learner rank 0"], "update", timeout_s=30)
    with pytest.raises(actors.ActorDied, match="did not come back"):
        actors.wait_alive([a], ["learner rank 0"], timeout_s=2)


def test_a_restarted_actor_answers_again(ray_cluster):
    a = ray_cluster.remote(Toy).options(num_cpus=0, max_restarts=1).remote()
    with pytest.raises(actors.ActorDied):
        actors.gather([a.die.remote()], ["rollout engine 0"], "rollout", timeout_s=30)
    actors.wait_alive([a], ["rollout engine 0"], timeout_s=60)
    assert actors.gather([a.nap.remote(0.0)], ["rollout engine 0"], "rollout", timeout_s=30) == [0.0]
