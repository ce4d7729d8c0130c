"""Stage 2, GRPO: ``python -m rexthinker.grpo --config recipes/configs/grpo_refcocog.yaml key=value ...``.

Starts (or joins, with ``RAY_ADDRESS``) a Ray cluster, places the policy learner and the rollout
engines as actors, and runs the loop of :mod:`rexthinker.grpo.trainer`; with ``resources.mode=local``
the learner and one engine run in this process instead, without Ray. Resumes from the newest
complete checkpoint in ``trainer.output_dir``.

Differences from the released recipe (EasyR1-based, contracts §6): the learner batches by token
budget (``algorithm.micro_batch_tokens``) instead of a fixed number of sequences; hints and targets
are computed once, in the processor's own frame (the reference resized twice and drifted up to
28 px); vision placeholder tokens are suppressed at sampling time; when a rollout batch gets one
optimizer step, the old log-probs are the current ones (the ratio is exactly 1), so that forward
pass is skipped.
"""

from __future__ import annotations

import sys

from rexthinker.grpo.config import GRPOConfig
from rexthinker.train import cli


def main(argv: list[str] | None = None) -> int:
    def trainer(cfg: GRPOConfig):
        from rexthinker.grpo.trainer import GRPOTrainer

        return GRPOTrainer(cfg)

    return cli.main("rexthinker.grpo", GRPOConfig, trainer, argv, config_help="recipes/configs/grpo*.yaml",
                    description=__doc__.splitlines()[0])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
