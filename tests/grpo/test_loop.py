"""The GRPO loop end to end on the tiny model: Ray actors, vLLM rollouts, a reward plug-in, the
update, the weight sync, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker.config import load_config
from rexthinker.data.synthref import generate
from rexthinker.grpo.config import GRPOConfig

pytestmark = pytest.mark.vllm
PLUGINS = Path(__file__).parent / "plugins" / "length_reward.py"


@pytest.fixture(scope="module")
def grpo_cot(tmp_path_factory):
    """The same kind of rows in original pixels (HumanRef-CoT), for runs that change the pixel limits."""
    from rexthinker.data.cot_tsv import write_cot_tsv

    root = tmp_path_factory.mktemp("grpo_cot")
    write_cot_tsv(generate(16, seed=9), root / "train")
    return root / "train"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_cfg(tiny_model_path, data, out, *extra) -> GRPOConfig:
    overrides = [
        f"model.path={tiny_model_path}", f"data.train=[{data}]", f"trainer.output_dir={out}",
        f"reward.function={PLUGINS}:length_score", "reward.kwargs={}", "algorithm.prompts_per_step=2", "rollout.n=4",
        "rollout.max_new_tokens=16", "rollout.max_model_len=1024", "rollout.enforce_eager=true",
        "optim.lr=1e-3", "trainer.max_steps=2", "trainer.save_every=0", "trainer.report_to=[jsonl]",
        "learner.strategy=single", "learner.precision=fp32", "trainer.sample_table_every=1",
    ]  # fmt: skip
    return load_config(GRPOConfig, "recipes/configs/grpo_demo.yaml", overrides + ["eval.enabled=false", *extra])


def run(cfg, steps=None, after_steps=None):
    """``steps`` steps of ``cfg``'s run (all of them, then the final checkpoint; else a saved one);
    ``after_steps(trainer)`` runs between the last step and the checkpoint."""
    from rexthinker.grpo.trainer import GRPOTrainer

    trainer = GRPOTrainer(cfg)
    try:
        while trainer.step < (steps or trainer.total_steps):
            trainer.logger.log(trainer.step + 1, trainer.train_step())
        if after_steps is not None:
            after_steps(trainer)
        final = trainer.finish() if steps is None else trainer.save()
    finally:
        trainer.cleanup()
    return trainer, final


def run_then_sample(cfg):
    """Every step of ``cfg``'s run, then 2 samples of 2 prompts from the engine holding the weights of
    the last sync, then the final checkpoint: ``(trainer, requests, groups, final)``."""
    drawn = {}

    def sample(trainer):
        drawn["requests"], _ = trainer.build_requests([trainer.samples[i] for i in range(2)], trainer.step + 1, cfg.trainer.seed)
        drawn["groups"] = trainer._generate(drawn["requests"], 2)

    trainer, final = run(cfg, after_steps=sample)
    return trainer, drawn["requests"], drawn["groups"], final


def test_two_steps_through_ray_with_vllm_change_the_policy(tiny_model_path, grpo_cot, tmp_path):
    # Pixel limits other than the checkpoint's: vLLM must resize exactly like the learner's processor,
    # or the learner's forward fails on a different number of image tokens.
    cfg = make_cfg(tiny_model_path, grpo_cot, tmp_path / "run", "model.freeze_vision=true", "model.freeze_projector=true",
                   "model.min_pixels=3136", "model.max_pixels=25088")
    trainer, final = run(cfg)
    before = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".language_model." in k or k.startswith("model.layers") for k in changed)
    assert not any("visual" in k for k in changed), sorted(changed)[:5]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/overall", "reward/length", "time/rollout_s", "time/reward_s", "time/update_s", "time/sync_s",
                "actor/kl", "actor/entropy", "actor/clip_frac", "actor/grad_norm", "perf/samples_per_s",
                "response/length_mean", "time/orchestration_share", "time/learner_optimize_s"):  # fmt: skip
        assert key in rows[0], key
    assert rows[0]["actor/updates"] == 1
    assert (tmp_path / "run" / "samples.jsonl").exists()
    assert (tmp_path / "run" / "reward_curves.png").exists()


def test_two_qwen3_vl_steps_reward_in_its_0_1000_frame_and_change_the_policy(grpo_cot, tmp_path):
    from rexthinker.models import tiny
    from rexthinker.models.families import FRAME_FILE

    model = tiny.get("tiny", "qwen3_vl")
    cfg = make_cfg(model, grpo_cot, tmp_path / "run", f"reward.function={PLUGINS}:relative_length_score")
    trainer, final = run(cfg)
    assert trainer.reward.errors.failed == 0
    before = load_file(str(Path(model) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert any(".language_model." in k for k in before if not torch.equal(before[k], after[k]))
    assert json.loads((final / FRAME_FILE).read_text()) == {"family": "qwen3_vl", "frame": "relative_1000"}


def test_two_qwen3_5_steps_roll_out_in_bf16_and_the_synced_engine_matches_the_learner(grpo_cot, tmp_path):
    """Qwen3.5 through Ray: its vLLM engines run in bf16 without prefix caching (the family's engine
    settings), rewards see the whole assistant turn (the ``<think>`` its prompt opened included), two
    steps change the policy, and after the last sync the engine's sampler log-probs equal the
    learner's (fp32, transformers) within bf16's precision, 1e-2 (tests/models/test_tiny_families.py).
    The learner runs the one-pass layout: the shared-prompt layout is refused for a hybrid model."""
    from transformers import AutoModelForImageTextToText

    from rexthinker.config import ConfigError
    from rexthinker.grpo.experience import collate
    from rexthinker.grpo.trainer import GRPOTrainer
    from rexthinker.models import tiny
    from rexthinker.models.families import FRAME_FILE
    from tests.rollout.test_weight_sync import logprob_diffs

    model = tiny.get("tiny", "qwen3_5")
    cfg = make_cfg(model, grpo_cot, tmp_path / "run", f"reward.function={PLUGINS}:relative_length_score", "rollout.logprobs=true")
    with pytest.raises(ConfigError, match="hybrid model \\(qwen3_5\\).*set algorithm.share_prompts=false"):
        GRPOTrainer(cfg)
    cfg = make_cfg(model, grpo_cot, tmp_path / "run", f"reward.function={PLUGINS}:relative_length_score", "rollout.logprobs=true",
                   "algorithm.share_prompts=false")
    trainer, requests, groups, final = run_then_sample(cfg)
    assert trainer.reward.errors.failed == 0
    before = load_file(str(Path(model) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert any(".language_model." in k for k in before if not torch.equal(before[k], after[k]))
    assert json.loads((final / FRAME_FILE).read_text()) == {"family": "qwen3_5", "frame": "relative_1000"}
    assert all(r.prompt.endswith("<|im_start|>assistant\n<think>\n") for r in requests)
    assert all(c.text.startswith("<think>\n") for g in groups for c in g)
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(row["completion"].startswith("<think>\n") for row in samples)
    learner = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.float32).eval()
    diffs = logprob_diffs(learner, trainer.processor, requests, groups, collate)
    print(f"qwen3_5 GRPO: max |vLLM (bf16) - learner (fp32)| log-prob after the sync = {max(diffs):.2e}")
    assert 1e-5 < max(diffs) < 1e-2  # bf16 really ran (fp32 agrees to ~1e-6), and within its precision


def test_two_lora_steps_through_ray_train_the_adapters_and_the_engine_samples_the_merged_model(tiny_model_path, grpo_data, tmp_path):
    """LoRA in a Ray run with vLLM rollouts: two steps move the adapters only (the learner state holds
    them alone; the merged export differs from the base in the adapted linear layers only), and after
    the last sync the engine samples the merged model: its log-probs equal the merged export's (fp32),
    not the base's. tests/grpo/test_lora_update.py checks the update and the merge on one worker."""
    import re

    from transformers import AutoModelForImageTextToText

    from rexthinker.grpo.experience import collate
    from rexthinker.models import lora
    from tests.rollout.test_weight_sync import logprob_diffs

    cfg = make_cfg(tiny_model_path, grpo_data, tmp_path / "run", "model.lora.r=4", "model.lora.alpha=8", "model.freeze_vision=true",
                   "model.freeze_projector=true", "optim.lr=1e-2", "rollout.logprobs=true", "trainer.save_every=2")  # fmt: skip
    trainer, requests, groups, final = run_then_sample(cfg)
    step = tmp_path / "run" / "checkpoints" / "step-2"
    saved = torch.load(step / "learner" / "learner.pt", weights_only=True)["model"]
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)  # the frozen base is model.path's
    before = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapted = {k for k in before if re.fullmatch(rf"{lora.LANGUAGE_BLOCKS}(?:{'|'.join(lora.TARGETS)})\.weight",
                                                 k.replace("model.layers.", "model.language_model.layers."))}  # fmt: skip
    assert changed == adapted and len(adapted) == 2 * len(lora.TARGETS)
    merged = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.float32).eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    to_merged = max(logprob_diffs(merged, trainer.processor, requests, groups, collate))
    to_base = max(logprob_diffs(base, trainer.processor, requests, groups, collate))
    print(f"LoRA GRPO: max |vLLM - merged| log-prob after the sync = {to_merged:.2e}, |vLLM - base| = {to_base:.2e}")
    assert to_merged < 1e-4 and to_base > 100 * to_merged


def test_a_reward_that_raises_on_some_samples_scores_them_zero(tiny_model_path, grpo_data, tmp_path):
    cfg = make_cfg(tiny_model_path, grpo_data, tmp_path / "flaky", f"reward.function={PLUGINS}:Flaky", "trainer.max_steps=1")
    trainer, _ = run(cfg)
    errors = trainer.reward.errors
    assert 0 < errors.failed < 8  # some of the 2 x 4 samples scored 0 and were reported, the rest scored
    assert "cannot score this batch" in errors.first_traceback
    rows = [json.loads(line) for line in (tmp_path / "flaky" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert rows[0]["reward/failed_samples"] == errors.failed  # the step's failures (the run's only step)


def test_a_broken_reward_stops_the_run(tiny_model_path, grpo_data, tmp_path):
    from rexthinker.rewards import RewardFailedError

    cfg = make_cfg(tiny_model_path, grpo_data, tmp_path / "broken", f"reward.function={PLUGINS}:broken", "trainer.max_steps=1")
    with pytest.raises(RewardFailedError):
        run(cfg)


def test_resumed_run_ends_with_the_same_weights(tiny_model_path, grpo_data, tmp_path):
    straight = make_cfg(tiny_model_path, grpo_data, tmp_path / "straight", "trainer.max_steps=3")
    _, final_a = run(straight)

    crashed = make_cfg(tiny_model_path, grpo_data, tmp_path / "crashed", "trainer.max_steps=3")
    run(crashed, steps=2)  # saves step 2, then the process "dies"
    trainer, final_b = run(crashed)  # a fresh start resumes from step 2
    assert trainer.step == 3
    a, b = load_file(str(final_a / "model.safetensors")), load_file(str(final_b / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
