"""The model card (``README.md``) of a converted checkpoint, written only from what is on disk.

Facts come from the run the checkpoint belongs to: ``trainer_state.json`` of ``step-N`` (step and
total steps), the run's ``config.yaml`` (stage, base model, data, reward), its ``eval.json`` (quick
evaluation, copied only when the checkpoint is the run's last step, which is the one it measured),
or the reference trainer's ``global_step_N`` folder name. What is not found is left out, never
guessed; ``--base-model`` and ``--stage`` fill in what the files cannot tell.

A card is meant to be published: secrets in the run's config are redacted
(:func:`rexthinker.config.redact`) and local absolute paths are shown by their last part only.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rexthinker.config import redact
from rexthinker.prompts import THINK_PROMPT

# A run's config.yaml is recognised by the schema it binds to (rexthinker.config.build).
STAGE_SCHEMAS = {"sft": "rexthinker.sft.config:SFTConfig", "grpo": "rexthinker.grpo.config:GRPOConfig"}
REFERENCE_STEP = re.compile(r"^global_step_(\d+)$")


@dataclass
class RunFacts:
    stage: str | None = None
    base_model: str | None = None
    step: int | None = None
    total_steps: int | None = None
    data: dict[str, list[str]] = field(default_factory=dict)
    reward: str | None = None
    eval: dict | None = None
    eval_note: str | None = None
    sources: list[str] = field(default_factory=list)  # files the facts were read from


def _stage_of(config: dict) -> str | None:
    from rexthinker.config import ConfigError, build

    for stage, target in STAGE_SCHEMAS.items():
        module, _, name = target.partition(":")
        try:
            schema = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue  # that stage is not part of this checkout
        try:
            build(schema, config)
        except ConfigError:
            continue
        return stage
    return None


def gather(weights: Path, hf_config, layout: str) -> RunFacts:
    facts = RunFacts()
    chain = [weights, *weights.parents][:4]
    step_dir = next((p for p in chain if (p / "trainer_state.json").is_file()), None)
    if step_dir is not None:
        state = json.loads((step_dir / "trainer_state.json").read_text())
        facts.step, facts.total_steps = state.get("step"), state.get("total_steps")
        facts.sources.append(str(step_dir / "trainer_state.json"))
        run = step_dir.parent.parent if step_dir.parent.name == "checkpoints" else None
        if run is not None:
            _read_run(run, facts)
    if layout == "reference":
        match = next((m for p in chain if (m := REFERENCE_STEP.match(p.name))), None)
        if match:
            facts.step = int(match.group(1))
            facts.sources.append(f"folder name {match.group(0)}")
        facts.stage = "grpo"  # the reference trainer (EasyR1) is the GRPO stage of Rex-Thinker
    if facts.base_model is None:
        facts.base_model = getattr(hf_config, "_name_or_path", None) or None
    return facts


def _read_run(run: Path, facts: RunFacts) -> None:
    config_path = run / "config.yaml"
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text()) or {}
        facts.sources.append(str(config_path))
        facts.stage = _stage_of(config)
        facts.base_model = (config.get("model") or {}).get("path") or None
        data = config.get("data") or {}
        facts.data = {k: list(data[k]) for k in ("train", "val") if isinstance(data.get(k), list) and data[k]}
        if "reward" in config:
            facts.reward = yaml.safe_dump(_public(redact(config["reward"])), sort_keys=False).strip()
    eval_path = run / "eval.json"
    if eval_path.is_file():
        if facts.step is not None and facts.step == facts.total_steps:
            facts.eval = json.loads(eval_path.read_text())
            facts.sources.append(str(eval_path))
        else:
            facts.eval_note = f"{eval_path} measures the run's last step, not step {facts.step}; not copied"


def _shown(path: str) -> str:
    """A path as a card shows it: a local absolute path by its last part only."""
    return Path(path).name if Path(path).is_absolute() else path


def _public(value):
    """``value`` with the absolute paths in its texts (``/home/me/rewards/r.py:score``) cut to their last part."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return re.sub(r"(?<![\w.:/])/(?:[^/\s:]+/)*([^/\s:]+)", r"\1", value) if isinstance(value, str) else value


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not Path(name).exists()


def render(name: str, facts: RunFacts, report) -> str:
    """The README.md text; ``report`` is the ConversionReport of the conversion that wrote the folder."""
    front = ["library_name: transformers", "pipeline_tag: image-text-to-text", "tags:", "- rexthinker", "- qwen2_5_vl"]
    if _is_hub_id(facts.base_model):
        front.append(f"base_model: {facts.base_model}")
    rows = [("Architecture", "Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`)")]
    if facts.base_model:
        rows.append(("Base model", f"`{_shown(facts.base_model)}`"))
    if facts.stage:
        rows.append(("Training stage", {"sft": "SFT (chain-of-thought traces)", "grpo": "GRPO"}.get(facts.stage, facts.stage)))
    if facts.step is not None:
        rows.append(("Steps", f"{facts.step}" + (f" of {facts.total_steps}" if facts.total_steps else "")))
    for split, paths in facts.data.items():
        rows.append((f"Data ({split})", ", ".join(f"`{_shown(p)}`" for p in paths)))
    rows.append(("Weights", f"{report.dtype_out}, {report.parameters:,} parameters in {report.num_shards} safetensors file(s)"))
    rows.append(("Converted from", f"`{_shown(report.source)}` ({report.layout} layout)"))
    check = f"max abs difference {report.max_logit_diff:.3g} against the source weights (tolerance {report.tolerance:.3g})"
    rows.append(("Logit check", check))
    if report.vllm is not None:
        rows.append(("vLLM", f"loads and generates ({report.vllm})"))
    lines = ["---", *front, "---", "", f"# {name}", "",
             "A Qwen2.5-VL model trained with the rexthinker pipeline to find the objects a referring expression "
             "describes by reasoning over numbered box hints (plan, check each candidate, summarise), and to answer "
             "with no box when nothing matches.", "",
             "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]  # fmt: skip
    if facts.reward:
        lines += ["## Reward", "", "```yaml", facts.reward, "```", ""]
    lines += ["## Evaluation", ""]
    if facts.eval:
        numbers = {k: v for k, v in facts.eval.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines += [f"Quick held-out evaluation written by the run at step {facts.step} (`eval.json`):", "",
                  "| metric | value |", "|---|---|", *[f"| {k} | {v:.4g} |" for k, v in numbers.items()], ""]  # fmt: skip
    else:
        lines += ["No evaluation result was found for this checkpoint." + (f" ({facts.eval_note})" if facts.eval_note else ""), ""]
    lines += [
        "## Use", "",
        "The model expects the system prompt below, an image, and a user turn of the form "
        "`Hint: Object and its coordinates in this image: {\"person\": [[x0, y0, x1, y1], ...]}` newline "
        "`Please detect <referring expression> in this image.`, with box coordinates in the resized model-input frame.", "",
        "```text", THINK_PROMPT, "```", "",
        "```python", "from transformers import AutoModelForImageTextToText, AutoProcessor", "",
        "model = AutoModelForImageTextToText.from_pretrained(PATH, dtype=\"auto\")",
        "processor = AutoProcessor.from_pretrained(PATH)", "```", "",
        "It also loads in vLLM: `vllm serve PATH`.", "",
    ]  # fmt: skip
    if facts.sources:
        lines += ["## Provenance", "", *[f"- `{_shown(s)}`" for s in facts.sources], ""]
    return "\n".join(lines)
