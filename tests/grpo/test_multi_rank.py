"""Several learner ranks through Ray, and the vLLM sleep-mode gating.

The test that matters: a step on 2 DeepSpeed ranks (the responses split over them, one rank with
fewer micro-batches or only padding) ends on the same weights as the same step on 1 process. The
loop test runs the driver end to end with 2 ranks and the transformers rollout backend (one
in-process vLLM engine per test process is the limit, and the suite's is elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker.config import ConfigError, load_config
from rexthinker.grpo.config import GRPOConfig
from rexthinker.grpo.trainer import RankBatch, merge_rank_metrics, rank_batches, shard_by_cost
from rexthinker.rollout.base import RolloutConfig, sleep_enabled

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "configs"
PLUGINS = Path(__file__).parent / "plugins" / "length_reward.py"


# --- splitting a step over ranks ------------------------------------------------------------------


def test_shard_by_cost_covers_every_item_once_and_balances():
    costs = [50, 10, 40, 30, 30, 20, 5]
    shards = shard_by_cost(costs, 3)
    assert sorted(i for s in shards for i in s) == list(range(len(costs)))
    assert all(s == sorted(s) for s in shards)
    loads = [sum(costs[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= 10, loads
    assert shard_by_cost(costs, 1) == [list(range(len(costs)))]


def test_shard_by_cost_keeps_groups_whole_when_there_are_enough():
    costs = [5, 1, 4, 4, 2, 2, 9, 1]
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    shards = shard_by_cost(costs, 2, groups)
    assert sorted(i for s in shards for i in s) == list(range(len(costs)))
    for s in shards:  # every group on exactly one rank
        assert all(groups.count(g) == sum(1 for i in s if groups[i] == g) for g in {groups[i] for i in s})
    assert sorted(sum(costs[i] for i in s) for s in shards) == [14, 14]  # groups 3 + 2 and 1 + 0
    # fewer groups than ranks: items are split individually so no rank is left with nothing
    assert all(shard_by_cost([3, 2, 1], 3, [0, 0, 0]))


def test_rank_batches_send_each_rank_its_prompts_and_pad_an_empty_rank():
    prompts = ["p0", "p1", "p2"]
    responses = [(2, [1, 2, 3]), (0, [4]), (2, [5, 6])]
    parts = rank_batches(prompts, responses, [3, 1, 2], 4)
    real = [b for b in parts if not b.padding]
    assert sorted(i for b in parts for i in b.indices) == [0, 1, 2]
    for b in real:
        assert [(b.prompts[p], ids) for p, ids in b.responses] == [(prompts[responses[i][0]], responses[i][1]) for i in b.indices]
    (pad,) = [b for b in parts if b.padding]
    assert pad.indices == [] and pad.padding == 1 and len(pad.responses) == 1
    assert pad.prompts == [prompts[responses[0][0]]]


def test_rank_metrics_are_rank_0s_with_the_slowest_timings():
    a = {"actor/loss": 1.0, "time/learner_optimize_s": 2.0, "perf/peak_gpu_memory_gb": 3.0}
    b = {"actor/loss": 1.0, "time/learner_optimize_s": 5.0, "perf/peak_gpu_memory_gb": 1.0}
    assert merge_rank_metrics([a, b]) == {"actor/loss": 1.0, "time/learner_optimize_s": 5.0, "perf/peak_gpu_memory_gb": 3.0}


# --- config ---------------------------------------------------------------------------------------


def test_several_ranks_with_strategy_single_are_refused_at_load():
    with pytest.raises(ConfigError, match="learner_ranks=2 needs learner.strategy=zero2 or zero3"):
        load_config(GRPOConfig, RECIPES / "grpo_demo.yaml", ["resources.learner_ranks=2", "learner.strategy=single"])
    with pytest.raises(ConfigError, match="at least 1"):
        load_config(GRPOConfig, RECIPES / "grpo_demo.yaml", ["resources.learner_ranks=0"])


def test_refcocog_recipe_with_8_zero3_ranks_validates():
    cfg = load_config(GRPOConfig, RECIPES / "grpo_refcocog.yaml")
    assert (cfg.resources.learner_ranks, cfg.learner.strategy, cfg.rollout.sleep) == (8, "zero3", "auto")


def test_rollout_sleep_takes_on_off_auto():
    for raw, value in (("on", True), ("off", False), ("true", True), ("auto", "auto")):
        assert load_config(GRPOConfig, RECIPES / "grpo_demo.yaml", [f"rollout.sleep={raw}"]).rollout.sleep == value
    with pytest.raises(ConfigError):
        load_config(GRPOConfig, RECIPES / "grpo_demo.yaml", ["rollout.sleep=sometimes"])


# --- vLLM sleep mode: which calls are made (vLLM's GPU side cannot run here) ----------------------


@pytest.mark.parametrize(
    "setting, colocated, cuda, expected",
    [("auto", True, True, True), ("auto", False, True, False), (True, False, True, True), (False, True, True, False),
     ("auto", True, False, False), (True, True, False, False)],
)  # fmt: skip
def test_sleep_gating(setting, colocated, cuda, expected):
    assert sleep_enabled(setting, colocated, cuda) is expected


def test_rollout_worker_gating_from_the_run_config(monkeypatch):
    from rexthinker.grpo.workers import rollout_sleeps

    def cfg(*extra):
        return load_config(GRPOConfig, RECIPES / "grpo_refcocog.yaml", list(extra))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rollout_sleeps(cfg())  # 8 GPUs, colocated, auto
    assert not rollout_sleeps(cfg("resources.colocate=false"))
    assert rollout_sleeps(cfg("resources.colocate=false", "rollout.sleep=on"))
    assert not rollout_sleeps(cfg("rollout.sleep=off"))
    assert not rollout_sleeps(cfg("rollout.backend=hf"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not rollout_sleeps(cfg())
    assert not rollout_sleeps(cfg("rollout.sleep=on"))  # a no-op on CPU (it says so)


class FakeLLM:
    """Records the calls VLLMRollout makes on ``vllm.LLM``."""

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        self.llm_engine = self

    def generate(self, inputs, params, use_tqdm=False):
        self.calls.append("generate")
        return []

    def sleep(self, level=1, mode="abort"):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.calls.append(f"wake_up({tags})")
        return True

    def collective_rpc(self, method, kwargs=None):
        self.calls.append(f"rpc({getattr(method, '__name__', method)})")

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def reset_encoder_cache(self):
        self.calls.append("reset_encoder_cache")

    def reset_mm_cache(self):
        self.calls.append("reset_mm_cache")


def test_vllm_engine_is_built_with_sleep_mode_only_when_asked(monkeypatch, tiny_model_path):
    import vllm

    from rexthinker.rollout.vllm_engine import VLLMRollout

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    model = str(tiny_model_path)  # a real checkpoint: the engine settings read its family from its config
    assert VLLMRollout(model, RolloutConfig(), sleep=True).llm.kwargs["enable_sleep_mode"] is True
    assert "enable_sleep_mode" not in VLLMRollout(model, RolloutConfig(), sleep=False).llm.kwargs


@pytest.mark.parametrize("sleeps", [True, False])
def test_vllm_engine_sleeps_after_generating_and_wakes_for_the_sync(sleeps):
    from rexthinker.rollout.vllm_engine import VLLMRollout

    engine = VLLMRollout.__new__(VLLMRollout)
    engine.llm, engine.cfg, engine.forbidden, engine.sleeps = FakeLLM(), RolloutConfig(), [], sleeps
    engine.generate([], 2)
    first = list(engine.llm.calls)
    engine.llm.calls.clear()
    engine.load_weights([("w", torch.zeros(1))])
    sync = list(engine.llm.calls)
    engine.llm.calls.clear()
    engine.generate([], 2)
    engine.generate([], 2)  # a step whose update was skipped: no sync in between
    again = list(engine.llm.calls)
    resets = ["reset_prefix_cache", "reset_encoder_cache", "reset_mm_cache"]
    if sleeps:
        assert first == ["generate", "sleep(1)"]
        assert sync == ["wake_up(['weights'])", "rpc(reload_weights)", "rpc(_refresh_tied_head)", "wake_up(None)", *resets]
        assert again == ["generate", "sleep(1)", "wake_up(None)", "generate", "sleep(1)"]
    else:
        assert first == ["generate"] and again == ["generate", "generate"]
        assert sync == ["rpc(reload_weights)", "rpc(_refresh_tied_head)", *resets]


# --- through Ray -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _fixed_batch(tiny_model_path):
    """3 prompts and 5 responses of fixed tokens with fixed advantages: the same rollouts for every
    learner layout."""
    from transformers import AutoProcessor

    from rexthinker.data.synthref import generate
    from rexthinker.generation import render
    from rexthinker.rollout.base import forbidden_token_ids

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    prompts = [(prompt, image) for _, _, prompt, image in render(generate(3, seed=21, split="val"), processor)]
    forbidden = set(forbidden_token_ids(processor.tokenizer))
    vocab = [t for t in range(260, 650) if t not in forbidden]
    gen = torch.Generator().manual_seed(0)
    responses = [(p, [vocab[int(i)] for i in torch.randint(len(vocab), (n,), generator=gen)])
                 for p, n in ((0, 5), (2, 9), (1, 3), (0, 12), (2, 7))]  # fmt: skip
    return prompts, responses


def _learner_cfg(tiny_model_path, strategy: str, ranks: int, lora_r: int = 0) -> GRPOConfig:
    # ppo_epochs=2: old log-probs (a forward in lockstep) and two optimizer steps per call;
    # micro_batch_tokens=1: one sequence per micro-batch, so the ranks' counts differ.
    # lora_r > 0: LoRA adapters (alpha = 2 r) with lr 1e-2, so the adapters move visibly in two steps.
    return load_config(GRPOConfig, None, [
        f"model.path={tiny_model_path}", f"learner.strategy={strategy}", "learner.precision=fp32",
        f"optim.lr={1e-2 if lora_r else 1e-3}", f"model.lora.r={lora_r}", f"model.lora.alpha={2 * lora_r}",
        "algorithm.ppo_epochs=2", "algorithm.micro_batch_tokens=1", "algorithm.kl_coef=0.05", "algorithm.entropy_coef=0.01",
        f"resources.learner_ranks={ranks}", "resources.threads_per_actor=1", "rollout.max_new_tokens=16",
    ])  # fmt: skip


def _local_state(actor) -> dict[str, torch.Tensor]:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: {k: v.detach().clone() for k, v in self.learner.module.state_dict().items()}))


def _start_ranks(cfg, ranks: int):
    import ray

    from rexthinker.grpo.trainer import _rendezvous
    from rexthinker.grpo.workers import PolicyWorker

    if ranks == 1:
        return [ray.remote(PolicyWorker).options(num_cpus=0.5).remote(cfg, 10)]
    address, port = ray.get(ray.remote(num_cpus=0)(_rendezvous).remote())
    envs = [{"RANK": str(i), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(i), "MASTER_ADDR": address, "MASTER_PORT": str(port),
             "DS_ACCELERATOR": "cpu"} for i in range(ranks)]  # fmt: skip
    return [ray.remote(PolicyWorker).options(num_cpus=0.5).remote(cfg, 10, None, env) for env in envs]


def _rank_states(actors, strategy: str) -> list[dict[str, torch.Tensor]]:
    """Every rank's own full copy (ZeRO-2), or under ZeRO-3 (the ranks hold shards) the copy all
    ranks gather for rank 0 (:meth:`PolicyWorker.weights`)."""
    import ray

    if strategy == "zero3":
        gathered = ray.get([w.weights.remote() for w in actors])
        assert all(g == [] for g in gathered[1:])
        return [dict(gathered[0])]
    return [_local_state(w) for w in actors]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("strategy, lora_r", [
    pytest.param("zero2", 0, id="zero2"), pytest.param("zero3", 0, marks=pytest.mark.slow, id="zero3"),
    pytest.param("zero2", 4, id="zero2-lora"), pytest.param("zero3", 4, marks=pytest.mark.slow, id="zero3-lora"),
])  # fmt: skip
def test_two_ranks_end_on_the_weights_of_one_process(tiny_model_path, ray_cluster, strategy, lora_r):
    """With LoRA (``lora_r``) only the adapters move, and the ranks send the rollout engines the merged
    plain model, as one process does."""
    import ray

    from rexthinker.models import lora

    prompts, responses = _fixed_batch(tiny_model_path)
    steps = [
        ([1.0, -0.5, 0.3, -1.2, 0.8], False),  # split by cost over both ranks (3 and 2 micro-batches)
        ([-0.7, 0.9, 1.1, -0.2, -0.6], True),  # all on rank 0; rank 1 has only a padding response
    ]
    single = _start_ranks(_learner_cfg(tiny_model_path, "single", 1, lora_r), 1)[0]
    pair = _start_ranks(_learner_cfg(tiny_model_path, strategy, 2, lora_r), 2)
    try:
        before = _local_state(single)
        for step, (adv, padded) in enumerate(steps):
            if padded:
                parts = [RankBatch(list(range(len(responses))), prompts, responses), RankBatch([], prompts[:1], [(0, responses[0][1])], 1)]
            else:
                parts = rank_batches(prompts, responses, [len(ids) for _, ids in responses], 2)
                assert sorted(len(b.indices) for b in parts) == [2, 3]
            futures = [w.train_step.remote(b.prompts, b.responses, [adv[i] for i in b.indices] + [0.0] * b.padding, step, b.padding)
                       for w, b in zip(pair, parts)]  # fmt: skip
            one = ray.get(single.train_step.remote(prompts, responses, adv, step))
            two = merge_rank_metrics(ray.get(futures))
            for key in ("actor/loss", "actor/kl", "actor/entropy", "actor/clip_frac", "actor/approx_kl", "actor/ratio_max"):
                assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-7), key
            assert two["actor/grad_norm"] == pytest.approx(one["actor/grad_norm"], rel=1e-4)
            assert two["actor/updates"] == one["actor/updates"] == 2

            expected = _local_state(single)
            changed = {k for k in before if not torch.equal(before[k], expected[k])}
            assert any("layers" in k for k in changed)
            if lora_r:
                assert all(lora.LIVE_KEY.match(k) for k in changed), sorted(changed)[:3]  # the adapters only
            states = _rank_states(pair, strategy)
            if lora_r and strategy == "zero3":  # gathered through weights(): the merged plain model
                expected = lora.merged_state_dict(expected, 2.0)
            assert all(k.endswith("lm_head.weight") for k in set(expected) - set(states[0]))  # tied to the embedding
            for key in states[0]:
                assert all(torch.equal(states[0][key], other[key]) for other in states[1:]), f"ranks differ at {key} after step {step}"
                assert torch.allclose(states[0][key], expected[key], atol=1e-5, rtol=0), f"{key} after step {step}"

        weights = ray.get([w.weights.remote() for w in pair])  # what the rollout engines get
        if lora_r and strategy == "zero2":
            expected = lora.merged_state_dict(expected, 2.0)
        assert weights[1] == [] and len(weights[0]) >= len(expected) - 1
        for key, value in weights[0]:
            assert torch.allclose(value, expected[key], atol=1e-5, rtol=0), key
    finally:
        for actor in (single, *pair):
            ray.kill(actor)


# --- the driver ------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_driver_trains_saves_and_resumes_on_two_zero2_ranks(tiny_model_path, grpo_data, tmp_path, ray_cluster):
    """Step 1 on 2 ranks and save; a fresh driver resumes both ranks from it and runs step 2. KL as
    a reward penalty, so sequence_kl is split over the ranks too."""
    from transformers import AutoModelForImageTextToText

    from rexthinker.grpo.trainer import GRPOTrainer
    from rexthinker.train import checkpoint

    def run(total_steps: int):
        cfg = load_config(GRPOConfig, RECIPES / "grpo_demo.yaml", [
            f"model.path={tiny_model_path}", f"data.train=[{grpo_data}]", f"trainer.output_dir={tmp_path / 'run'}",
            f"reward.function={PLUGINS}:length_score", "algorithm.prompts_per_step=2", "rollout.n=3", "rollout.backend=hf",
            "rollout.max_new_tokens=12", "optim.lr=1e-3", f"trainer.max_steps={total_steps}", "trainer.save_every=0",
            "trainer.report_to=[jsonl]", "learner.strategy=zero2", "learner.precision=fp32", "resources.learner_ranks=2",
            "resources.threads_per_actor=1", "algorithm.kl_mode=reward", "algorithm.kl_estimator=k1", "eval.enabled=false",
            "trainer.sample_table_every=0",
        ])  # fmt: skip
        trainer = GRPOTrainer(cfg)
        try:
            assert len(trainer.learners) == 2
            start = trainer.step, _local_state(trainer.learners[0])
            row = trainer.train_step()
            final = trainer.finish().resolve()  # DeepSpeed shards from both ranks, the hf/ export from rank 0
            states = [_local_state(w) for w in trainer.learners]
        finally:
            trainer.cleanup()
        for key in states[0]:
            assert torch.equal(states[0][key], states[1][key]), key
        assert row["batch/skipped_update"] == 0.0 and row["actor/updates"] == 1 and "time/kl_reward_s" in row
        return start, row, final, states[0]

    (step0, _), row1, first, trained1 = run(1)
    assert step0 == 0 and abs(row1["actor/kl"]) < 1e-6  # the policy is still the reference
    (step1, resumed), row2, final, trained2 = run(2)
    assert step1 == 1 and row2["actor/kl"] != 0.0
    for key, value in trained1.items():  # both ranks resumed from the step-1 DeepSpeed state
        assert torch.equal(resumed[key], value), key

    before = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if "layers" in k)
    exported = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.float32).state_dict()
    for key, value in trained2.items():  # the hf/ export holds the trained weights
        assert torch.allclose(exported[key], value, atol=1e-6, rtol=0), key
    saved = checkpoint.step_dirs(tmp_path / "run" / "checkpoints")
    assert [step for step, _ in saved] == [1, 2] and first == saved[0][1] / "hf"
    for step, folder in saved:
        assert (folder / "learner").is_dir() and checkpoint.read_state(folder)["step"] == step


def test_placement_of_the_released_recipe_colocated_with_tensor_parallel_rollouts():
    from rexthinker.grpo.trainer import plan_placement

    # 8 GPUs: 8 learner ranks, 4 vLLM engines of tensor-parallel 2, all sharing the GPUs
    plan = plan_placement(ranks=8, engines=4, gpus=True, colocate=True, tensor_parallel=2)
    assert len(plan.bundles) == 8 and all(b == {"CPU": 1, "GPU": 1} for b in plan.bundles)
    assert plan.learners == list(range(8)) and plan.share == 0.5
    assert plan.engines == [[0, 1], [2, 3], [4, 5], [6, 7]]  # each GPU: one learner rank + one engine rank


def test_placement_separate_and_single_gpu_engines():
    from rexthinker.grpo.trainer import plan_placement

    plan = plan_placement(ranks=4, engines=2, gpus=True, colocate=False, tensor_parallel=2)
    assert len(plan.bundles) == 8 and plan.learners == [0, 1, 2, 3] and plan.share == 1.0
    assert plan.engines == [[4, 5], [6, 7]]
    plan = plan_placement(ranks=2, engines=1, gpus=True, colocate=True)
    assert len(plan.bundles) == 2 and plan.engines == [[0]]  # one engine on the first GPU, the second learner alone
    plan = plan_placement(ranks=2, engines=4, gpus=True, colocate=True)
    assert len(plan.bundles) == 4 and plan.engines == [[0], [1], [2], [3]]
    # engine ranks never overlap and never leave the group
    for ranks, engines, tp in [(8, 4, 2), (8, 2, 4), (3, 2, 2), (1, 1, 2), (6, 3, 2)]:
        for colocate in (True, False):
            plan = plan_placement(ranks, engines, True, colocate, tp)
            used = [b for span in plan.engines for b in span]
            assert len(used) == len(set(used)) == engines * tp and max(used) < len(plan.bundles), (ranks, engines, tp, colocate)
            assert all(span == list(range(span[0], span[0] + tp)) for span in plan.engines)


def test_placement_on_cpu_ignores_tensor_parallel_bundles():
    from rexthinker.grpo.trainer import plan_placement

    plan = plan_placement(ranks=2, engines=1, gpus=False, colocate=True, tensor_parallel=2)
    assert plan.bundles == [{"CPU": 0.5}] * 3 and plan.engines == [[2]] and plan.share == 0.0
