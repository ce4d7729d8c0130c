"""Fault injection for the reliability tests: a process that SIGKILLs itself at a named point.

``REXTHINKER_FAULT`` holds a comma-separated list of ``point[@step][#rank]``; the process whose
rank and step match dies with SIGKILL (no ``finally``, no ``atexit``: what a pre-empted node
does) when it reaches that point. Unset, :func:`point` is a dictionary lookup and nothing else.

The points, in the order a run meets them:

``step.mid``           SFT: after the first micro-batch's backward; GRPO: after the rollouts, before the update
``commit.stamped``     a checkpoint's temporary folder is complete and stamped, nothing renamed yet
``commit.swap``        an older checkpoint of the same step was moved aside, the new one not yet in place
``commit.delete_old``  inside the removal of that older copy (part of its files gone)
``commit.prune``       the new checkpoint is in place, older ones not yet pruned
``eval.end``           at the start of the final held-out evaluation (the final checkpoint is saved)

``REXTHINKER_FAULT=commit.swap@4`` kills the run while it commits step 4; ``step.mid@3#1`` kills
rank 1 in the middle of step 3.
"""

from __future__ import annotations

import os
import signal

ENV = "REXTHINKER_FAULT"


def _matches(item: str, name: str, step: int | None, rank: int) -> bool:
    item, _, want_rank = item.partition("#")
    want_name, _, want_step = item.partition("@")
    if want_name.strip() != name:
        return False
    if want_step and (step is None or int(want_step) != step):
        return False
    return not want_rank or int(want_rank) == rank


def point(name: str, step: int | None = None) -> None:
    """Die here with SIGKILL when ``REXTHINKER_FAULT`` names this point (and step, and rank)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    rank = int(os.environ.get("RANK", 0))
    if any(_matches(item, name, step, rank) for item in spec.split(",") if item.strip()):
        os.kill(os.getpid(), signal.SIGKILL)
