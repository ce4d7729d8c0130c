"""Bounded calls to the GRPO actors, and what a dead one means.

Every call the driver makes to its actors goes through :func:`gather`: it waits at most
``resources.call_timeout_s`` and, when an actor does not answer in time or has died, raises an error
that names it (``rollout engine 1``, ``learner rank 0``) and the call it was making. The driver then
either retries (a rollout engine, which Ray restarts: ``resources.actor_restarts``) or stops with a
message that says which checkpoint the same command will resume from.

With ``resources.mode: local`` the roles are objects in the driver process behind
:class:`LocalActor`, called the same way; their calls finish before :func:`gather` sees them, so
no bound applies, nothing dies apart from the driver, and Ray is never imported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass


class ActorFailure(RuntimeError):
    """An actor that did not answer a call: ``name`` is the actor, ``call`` what it was asked."""

    def __init__(self, name: str, call: str, reason: str):
        super().__init__(f"{name} {reason} during {call}")
        self.name, self.call, self.reason = name, call, reason


class ActorTimeout(ActorFailure):
    pass


class ActorDied(ActorFailure):
    pass


@dataclass
class Done:
    """The outcome of an in-process call: its value, or the exception it raised (raised again where
    the driver collects it, as ``ray.get`` raises a task's error)."""

    value: object = None
    error: BaseException | None = None

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class LocalActor:
    """A role held in the driver process and called like a Ray actor: ``actor.method.remote(*args)``
    runs the call at once and returns a :class:`Done`. A Done among the arguments passes its value,
    as Ray passes an ObjectRef's."""

    def __init__(self, role):
        self.role = role

    def __getattr__(self, name: str):
        return _LocalMethod(getattr(self.role, name))


class _LocalMethod:
    def __init__(self, method):
        self.method = method

    def remote(self, *args) -> Done:
        try:
            return Done(self.method(*(a.result() if isinstance(a, Done) else a for a in args)))
        except Exception as exc:
            return Done(error=exc)


def gather(futures: Sequence, names: Sequence[str], call: str, timeout_s: float | None) -> list:
    """``ray.get`` of ``futures`` (``names[i]`` is the actor behind ``futures[i]``) within
    ``timeout_s`` seconds in all (None: no bound). Raises :class:`ActorTimeout` naming the first
    actor still busy, or :class:`ActorDied` naming the first that died; a task's own exception
    (``RayTaskError``) passes through unchanged. Calls of :class:`LocalActor` roles (all
    :class:`Done`) give their results, or raise their own exception."""
    futures = list(futures)
    if all(isinstance(f, Done) for f in futures):
        return [f.result() for f in futures]
    import ray

    _, pending = ray.wait(futures, num_returns=len(futures), timeout=timeout_s)
    if pending:
        late = [name for name, f in zip(names, futures) if f in set(pending)]
        raise ActorTimeout(late[0], call, f"did not answer within {timeout_s:.0f} s (resources.call_timeout_s)"
                           + (f"; also waiting on {', '.join(late[1:])}" if len(late) > 1 else ""))  # fmt: skip
    results = []
    for name, future in zip(names, futures):
        try:
            results.append(ray.get(future))
        except ray.exceptions.RayActorError as exc:
            raise ActorDied(name, call, f"died ({type(exc).__name__})") from exc
    return results


def wait_alive(actors: Sequence, names: Sequence[str], timeout_s: float) -> None:
    """Until every actor answers a ping (a restarted one has run its constructor again), at most
    ``timeout_s`` seconds; :class:`ActorDied` names one that does not come back."""
    import ray

    deadline = time.monotonic() + timeout_s
    for actor, name in zip(actors, names):
        while True:
            left = deadline - time.monotonic()
            try:
                ray.get(actor.ping.remote(), timeout=max(1.0, left))
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise ActorDied(name, "restart", f"did not come back within {timeout_s:.0f} s ({type(exc).__name__})") from exc
                time.sleep(1.0)
