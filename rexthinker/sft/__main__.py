"""Stage 1, SFT: ``python -m rexthinker.sft --config recipes/configs/sft.yaml key=value ...``.

Reads HumanRef-CoT (or any sample file with traces), builds each chat sample through the shared
prompt builder, trains on the assistant turn only with the vision tower and projector frozen (by
default), and writes Hugging Face checkpoints that ``from_pretrained`` and vLLM load. Resumes from
the newest complete checkpoint in ``trainer.output_dir``. With ``trainer.nproc > 1`` it relaunches
itself under torchrun; ``learner.strategy`` picks single-process or DeepSpeed ZeRO-2/3.

Differences from the paper (contracts §6; no code was released): the loss is normalised by the
number of assistant tokens in the whole optimizer step (not per micro-batch), so it does not depend
on how a step is split; samples longer than ``data.max_length`` are skipped and counted rather than
truncated (a truncated trace teaches an answer-less output).
"""

from __future__ import annotations

import sys

from rexthinker.sft.config import SFTConfig
from rexthinker.train import cli


def main(argv: list[str] | None = None) -> int:
    def trainer(cfg: SFTConfig):
        from rexthinker.sft.trainer import SFTTrainer

        return SFTTrainer(cfg)

    return cli.main("rexthinker.sft", SFTConfig, trainer, argv, config_help="recipes/configs/sft*.yaml",
                    description=__doc__.splitlines()[0], relaunch=lambda cfg: cfg.trainer.nproc)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
