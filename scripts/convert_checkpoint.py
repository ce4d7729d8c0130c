"""Turn any checkpoint of this project or of the reference trainer into a verified Hugging Face folder.

    python scripts/convert_checkpoint.py outputs/sft/checkpoints/step-500 --out release/rexthinker-sft
    python scripts/convert_checkpoint.py outputs/sft/checkpoints/step-500 --layout deepspeed --dtype bf16 --out release/sft-bf16
    python scripts/convert_checkpoint.py checkpoints/easy_r1/rexthinker/global_step_300/actor --out release/grpo --check-vllm
    python scripts/convert_checkpoint.py release/grpo-src --out release/grpo --push-to-hub me/rexthinker-grpo
    python scripts/convert_checkpoint.py outputs/sft-lora/checkpoints/step-500 --layout adapter --out release/sft-lora-merged
    python scripts/convert_checkpoint.py outputs/sft-lora/checkpoints/step-500 --adapter-only --out release/sft-lora-adapter

Inputs (detected, or forced with ``--layout``): a Hugging Face folder or our ``step-N`` folder
(``hf``), our single-process ``learner/learner.pt`` (``learner``), our DeepSpeed ZeRO-2/3 states
under ``learner/`` (``deepspeed``, full fp32 weights rebuilt from the shards, frozen ones
included), the reference trainer's ``model_world_size_{W}_rank_{r}.pt`` files beside
``huggingface/`` (``reference``), and a peft LoRA adapter (``step-N/adapter`` of a ``model.lora``
run, ``adapter``) merged into its base model (``adapter_config.json`` names it; ``--hf-files``
overrides). A LoRA run's ``step-N/hf`` is already merged and converts as ``hf``; ``--adapter-only``
writes the checked adapter alone, in peft's format, instead of a merged model. Output: safetensors (sharded above ``--max-shard-size``), config,
generation config, processor with its chat template, and a ``README.md`` model card filled from the
run's files (base model, stage, steps, data, reward, quick-eval numbers), nothing invented.

The conversion checks itself and fails rather than write a wrong model: every tensor the config's
model needs is present and no other (names go through one declared rename table per layout), shapes
match, the written files load back bit for bit, and the logits of the written model on a fixed
image + prompt match the source weights' (the report prints the max difference). ``--check-vllm``
also loads the result in vLLM and generates a few tokens.

How it differs from the reference merger (contracts §7): a key missing from a rank file is an
error naming the key and the file (the reference reused the previous tensor); the dtype is kept
unless ``--dtype`` asks (the reference cast everything to bf16); replicated tensors must agree
across ranks; ``--push-to-hub`` creates a private repository unless ``--public`` is given (the
reference's upload was public).
"""

from __future__ import annotations

import argparse
import sys

from rexthinker.convert import DTYPES, ConversionError, convert, export_adapter, push_to_hub
from rexthinker.convert.layouts import LAYOUTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python scripts/convert_checkpoint.py", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="checkpoint folder (step-N, hf, learner, DeepSpeed, reference actor folder) or learner.pt")
    parser.add_argument("--out", required=True, help="new folder for the Hugging Face model (must not exist or be empty)")
    parser.add_argument("--layout", choices=LAYOUTS, default=None, help="force the input layout (default: detected)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast floating tensors (default: keep the source dtype)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB)")
    parser.add_argument("--hf-files", default=None, help="folder with config.json + processor when the source lacks them")
    parser.add_argument("--base-model", default=None, help="base model named in the model card (default: from the run's config)")
    parser.add_argument("--stage", choices=["sft", "grpo"], default=None, help="stage named in the model card (default: from the run)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="let DeepSpeed unpickle files that hold classes beyond its own (runs their code; only for files you made)")
    parser.add_argument("--check-vllm", action="store_true", help="also load the result in vLLM and generate a few tokens")
    parser.add_argument("--adapter-only", action="store_true",
                        help="write the LoRA adapter alone (peft format) instead of a merged model; --hf-files names its base")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload to this Hugging Face repository after the checks")
    parser.add_argument("--public", action="store_true", help="make the --push-to-hub repository public (default: private)")
    args = parser.parse_args(argv)
    if args.public and not args.push_to_hub:
        parser.error("--public only applies with --push-to-hub")
    if args.adapter_only and (args.dtype or args.check_vllm or args.layout not in (None, "adapter")):
        parser.error("--adapter-only copies the adapter as it is: no --dtype, --check-vllm or other --layout")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.adapter_only:
            print(export_adapter(args.source, args.out, hf_files=args.hf_files), flush=True)
            if args.push_to_hub:
                print(f"pushed   {push_to_hub(args.out, args.push_to_hub, public=args.public)} ({'public' if args.public else 'private'})")
            return 0
        report = convert(
            args.source, args.out, layout=args.layout, dtype=args.dtype, max_shard_size=args.max_shard_size,
            hf_files=args.hf_files, base_model=args.base_model, stage=args.stage, vllm=args.check_vllm,
            trust_pickle=args.trust_pickle,
        )  # fmt: skip
        print(report.format(), flush=True)
        if args.push_to_hub:
            url = push_to_hub(report.out, args.push_to_hub, public=args.public)
            print(f"pushed   {url} ({'public' if args.public else 'private'})", flush=True)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
