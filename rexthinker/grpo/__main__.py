"""Stage 2, GRPO: ``python -m rexthinker.grpo --config recipes/configs/grpo_refcocog.yaml key=value ...``.

Starts (or joins, with ``RAY_ADDRESS``) a Ray cluster, places the policy learner and the rollout
engines as actors, and runs the loop of :mod:`rexthinker.grpo.trainer`. Resumes from the newest
complete checkpoint in ``trainer.output_dir``.

Differences from the released recipe (EasyR1-based, contracts §6): the learner batches by token
budget (``algorithm.micro_batch_tokens``) instead of a fixed number of sequences; hints and targets
are computed once, in the processor's own frame (the reference resized twice and drifted up to
28 px); vision placeholder tokens are suppressed at sampling time; when a rollout batch gets one
optimizer step, the old log-probs are the current ones (the ratio is exactly 1), so that forward
pass is skipped.
"""

from __future__ import annotations

import argparse
import sys

from rexthinker.config import load_config
from rexthinker.grpo.config import GRPOConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rexthinker.grpo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML file (recipes/configs/grpo*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load_config(GRPOConfig, args.config, args.overrides)

    from rexthinker.grpo.trainer import GRPOTrainer

    trainer = GRPOTrainer(cfg)
    try:
        trainer.evaluate("start")
        trainer.fit()
        trainer.finish()
        trainer.evaluate("end")
    finally:
        trainer.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
