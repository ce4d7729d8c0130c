"""What every training stage's command shares: ``--config FILE`` plus dotted ``key=value``
overrides, the torchrun relaunch for several processes, and one lifecycle:

    trainer = build(cfg)           # setup: model, data, learner; resumes from the newest checkpoint
    trainer.evaluate("start")      # a held-out evaluation before training (stages may skip it)
    trainer.fit()                  # the optimizer steps, with checkpoints
    trainer.finish()               # the final checkpoint, <output_dir>/final, curves
    trainer.evaluate("end")        # the held-out evaluation of the result
    trainer.cleanup()              # always, also after an error
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from rexthinker.config import load_config

C = TypeVar("C")


@dataclass
class TrainerConfig:
    """The ``trainer`` section of every training stage: how long, where to, how often."""

    output_dir: str = "outputs/run"
    max_steps: int | None = None  # optimizer steps; None: epochs x steps per epoch
    epochs: float = 1.0
    seed: int = 1
    log_every: int = 1
    save_every: int = 50  # steps between checkpoints; 0 disables intermediate saves
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the newest complete checkpoint in output_dir
    trust_pickle: bool = False  # resume from DeepSpeed files that name classes beyond DeepSpeed's own (runs their code)
    report_to: list[str] = field(default_factory=lambda: ["console", "jsonl", "tensorboard", "wandb"])
    run_name: str = "run"


class Trainer(Protocol):
    def evaluate(self, tag: str) -> dict | None: ...

    def fit(self) -> None: ...

    def finish(self): ...

    def cleanup(self) -> None: ...


def parse(schema: type[C], prog: str, argv: list[str], config_help: str = "", description: str = "") -> C:
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--config", default=None, help=f"YAML file ({config_help})" if config_help else "YAML file")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    return load_config(schema, args.config, args.overrides)


def main(module: str, schema: type[C], build: Callable[[C], Trainer], argv: list[str] | None = None, *,
         config_help: str = "", description: str = "", relaunch: Callable[[C], int] | None = None) -> int:  # fmt: skip
    """Parse ``argv`` into ``schema``, check the model path, relaunch ``module`` under torchrun when
    ``relaunch(cfg)`` asks for more than one process, then run the lifecycle of ``build(cfg)``."""
    from rexthinker.models.load import check_model_path
    from rexthinker.train import dist

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse(schema, module, argv, config_help, description)
    check_model_path(cfg.model.path)  # before launching any process
    if relaunch is not None:
        code = dist.relaunch(relaunch(cfg), module, argv)
        if code is not None:
            return code
    trainer = build(cfg)
    try:
        trainer.evaluate("start")
        trainer.fit()
        trainer.finish()
        trainer.evaluate("end")
    finally:
        trainer.cleanup()
    return 0
