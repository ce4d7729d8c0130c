"""The GRPO driver: one controller process that reads top to bottom as the dataflow of a step.

    prompts -> rollouts (n per prompt) -> rewards -> group advantages -> [reference / old log-probs
    -> policy update] (PolicyWorker) -> weight sync to the rollout engines -> log -> checkpoint

The roles run as Ray actors (:mod:`rexthinker.grpo.workers`); the driver holds no model. The
learner may be several data-parallel ranks (``resources.learner_ranks``, DeepSpeed ZeRO): the
driver splits each step's responses over them by token count and calls them all at once. Every
stage is timed and logged as ``time/<stage>_s``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rexthinker.config import save_config, to_dict
from rexthinker.coords import PATCH_FACTOR
from rexthinker.data.sources import Head, open_samples, open_training_samples
from rexthinker.generation import render_request
from rexthinker.grpo import actors
from rexthinker.grpo import algorithm as A
from rexthinker.grpo.config import GRPOConfig
from rexthinker.models.load import check_model_path, set_pixel_limits
from rexthinker.prompts import pixel_limits
from rexthinker.rollout.base import Request
from rexthinker.train import checkpoint, faults
from rexthinker.train.metrics import MetricLogger

ACTOR_ENV = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "REXTHINKER_CACHE", "DS_ACCELERATOR",
             "TOKENIZERS_PARALLELISM", "WANDB_MODE", "HF_HOME", "REXTHINKER_COLLECTIVE_TIMEOUT_S")  # fmt: skip


def _seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (stable across processes and restarts)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def shard_by_cost(costs: Sequence[float], ranks: int, groups: Sequence[int] | None = None) -> list[list[int]]:
    """Item indices split over ``ranks`` with about equal summed cost: costliest first, each onto
    the rank with the least so far (deterministic); each shard in the items' order. With
    ``groups`` (one id per item) and at least as many groups as ranks, whole groups are the units
    (their items' summed cost), so a rank that shares prompt passes gets every response of a prompt."""
    units = [[i] for i in range(len(costs))]
    if groups is not None and len(set(groups)) >= ranks:
        by_group: dict = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        units = list(by_group.values())
    unit_costs = [sum(costs[i] for i in unit) for unit in units]
    loads, shards = [0.0] * ranks, [[] for _ in range(ranks)]
    for u in sorted(range(len(units)), key=lambda u: (-unit_costs[u], units[u][0])):
        r = min(range(ranks), key=lambda r: (loads[r], r))
        shards[r].extend(units[u])
        loads[r] += unit_costs[u]
    return [sorted(shard) for shard in shards]


@dataclass
class Placement:
    """Where the actors go: one placement-group bundle per entry of ``bundles``; learner rank i on
    ``learners[i]``; rollout engine j on ``engines[j]`` (one bundle per tensor-parallel rank: vLLM's
    Ray executor puts its workers there); ``share`` is the GPU each actor or vLLM worker takes."""

    bundles: list[dict]
    learners: list[int]
    engines: list[list[int]]
    share: float


def plan_placement(ranks: int, engines: int, gpus: bool, colocate: bool, tensor_parallel: int = 1) -> Placement:
    """On GPUs, one bundle (one GPU) per learner rank and per tensor-parallel rank of each rollout
    engine; with ``colocate`` the engines' GPUs are the learners' (half a GPU each), engines spread
    evenly and each on ``tensor_parallel`` consecutive bundles. On CPU, half a core per actor and
    one bundle per engine (a CPU engine's tensor parallelism stays inside its process)."""
    tp = tensor_parallel if gpus else 1
    if gpus and colocate:
        slots = max(ranks, engines * tp)
        stride = slots // engines
        spans = [list(range(j * stride, j * stride + tp)) for j in range(engines)]
        share = 0.5
    else:
        slots = ranks + engines * tp
        spans = [list(range(ranks + j * tp, ranks + (j + 1) * tp)) for j in range(engines)]
        share = 1.0 if gpus else 0.0
    bundle = {"CPU": 1, "GPU": 1} if gpus else {"CPU": 0.5}
    return Placement([dict(bundle) for _ in range(slots)], list(range(ranks)), spans, share)


@dataclass
class RankBatch:
    """One learner rank's share of a step: ``indices`` of the responses it trains on, the prompts
    they need, the responses re-indexed onto those prompts, and ``padding`` extra responses (a rank
    with no response of its own gets one to run, weightless, see PolicyWorker)."""

    indices: list[int]
    prompts: list
    responses: list[tuple[int, list[int]]]
    padding: int = 0


def rank_batches(prompts, responses, costs: Sequence[float], ranks: int, whole_groups: bool = False) -> list[RankBatch]:
    """Each rank's share of ``responses`` (``(prompt index, token ids)``), balanced by ``costs``;
    ``whole_groups`` keeps a prompt's responses on one rank where there are enough prompts."""
    out = []
    for shard in shard_by_cost(costs, ranks, [p for p, _ in responses] if whole_groups else None):
        rows, padding = (shard, 0) if shard else ([0], 1)
        used = sorted({responses[i][0] for i in rows})
        local = {p: k for k, p in enumerate(used)}
        out.append(RankBatch(shard, [prompts[p] for p in used], [(local[responses[i][0]], responses[i][1]) for i in rows], padding))
    return out


def merge_rank_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Rank 0's metrics (the learner already reduced them over ranks), with timings and memory as
    the slowest / fullest rank's."""
    merged = dict(per_rank[0])
    for key in merged:
        if key.startswith(("time/", "perf/")):
            merged[key] = max(m[key] for m in per_rank)
    return merged


def _rendezvous() -> tuple[str, int]:
    """This node's IP and a free TCP port: where learner rank 0 hosts the process group."""
    import socket

    import ray

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return ray.util.get_node_ip_address(), port


class GRPOTrainer:
    """setup -> fit (train_step x N) -> save -> evaluate -> cleanup."""

    def __init__(self, cfg: GRPOConfig):
        self.cfg = cfg
        self.out = Path(cfg.trainer.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        check_model_path(cfg.model.path)
        self.lock = checkpoint.RunLock(self.out)  # one run per output folder
        try:
            self._setup(cfg)
        except BaseException:  # a run that fails to start leaves the folder free
            self.lock.release()
            raise

    def _setup(self, cfg: GRPOConfig) -> None:
        import ray
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(cfg.model.path)
        set_pixel_limits(self.processor, cfg.model.min_pixels, cfg.model.max_pixels)
        self.min_pixels, self.max_pixels = pixel_limits(self.processor)
        self.samples = open_training_samples(cfg.data, self.out, "grpo", min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        if cfg.data.max_samples:
            self.samples = [self.samples[i] for i in range(min(cfg.data.max_samples, len(self.samples)))]
        self.reward = cfg.reward.load()  # with reward.timeout_s, in a worker process of its own
        per_epoch = len(self.samples) // cfg.algorithm.prompts_per_step
        if per_epoch == 0:
            raise SystemExit(f"{len(self.samples)} samples cannot fill one step of {cfg.algorithm.prompts_per_step} prompts")
        self.total_steps = cfg.trainer.max_steps or max(1, math.ceil(cfg.trainer.epochs * per_epoch))
        self.per_epoch = per_epoch
        self.step = 0
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "config.yaml")
        self.logger = MetricLogger(self.out, cfg.trainer.report_to, cfg.trainer.run_name, to_dict(cfg))

        found = []  # checkpoints to resume from, newest first
        if cfg.trainer.resume:
            checkpoint.recover(self.ckpt_root)
            found = checkpoint.candidates(self.ckpt_root)
        resume_from = found[0] if found else None
        env = {k: os.environ[k] for k in ACTOR_ENV if k in os.environ}
        if not ray.is_initialized():
            ray.init(address=cfg.resources.ray_address or os.environ.get("RAY_ADDRESS"), runtime_env={"env_vars": env},
                     include_dashboard=False, log_to_driver=True)  # fmt: skip
        self.placement_group = None
        self.learners, self.rollouts = self._start_actors(resume_from)
        if cfg.trainer.resume and checkpoint.step_dirs(self.ckpt_root):  # damaged ones too: never a silent fresh start
            self.resume(found)
        print(f"[grpo] {len(self.samples)} prompts, {per_epoch} steps/epoch, {self.total_steps} steps, "
              f"{cfg.algorithm.prompts_per_step} x {cfg.rollout.n} samples per step, rollouts: {cfg.rollout.backend}", flush=True)  # fmt: skip

    def _start_actors(self, resume_from: Path | None):
        """Placement (:func:`plan_placement`). On CPU, half a core per actor (they share the
        machine). A tensor-parallel vLLM engine gets one bundle per rank. Several learner ranks form
        one process group: rank 0's node and a free port there are looked up first, and every rank
        gets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT before it joins."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from rexthinker.grpo.workers import PolicyWorker, RolloutWorker

        r = self.cfg.resources
        ranks, gpu = r.learner_ranks, r.gpus > 0
        tp = self.cfg.rollout.tensor_parallel_size if self.cfg.rollout.backend == "vllm" else 1
        plan = plan_placement(ranks, r.rollout_engines, gpu, r.colocate, tp)
        pg = placement_group(plan.bundles, strategy="PACK")
        self.placement_group = pg
        ready, _ = ray.wait([pg.ready()], timeout=600)
        if not ready:
            raise RuntimeError(f"Ray could not reserve {plan.bundles} within 10 minutes; cluster resources: {ray.cluster_resources()}")

        def strategy(index: int, capture_children: bool | None = None):
            return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index,
                                                    placement_group_capture_child_tasks=capture_children)  # fmt: skip

        dist_envs = [None]
        if ranks > 1:
            address, port = ray.get(ray.remote(num_cpus=0)(_rendezvous).options(scheduling_strategy=strategy(0)).remote())
            common = {"WORLD_SIZE": str(ranks), "MASTER_ADDR": address, "MASTER_PORT": str(port)}
            if not gpu:
                common["DS_ACCELERATOR"] = os.environ.get("DS_ACCELERATOR", "cpu")
            # Ray shows each actor only its own GPU, so the local device is always 0 there.
            dist_envs = [{**common, "RANK": str(i), "LOCAL_RANK": "0" if gpu else str(i)} for i in range(ranks)]

        weights_path = str(resume_from / "hf") if resume_from is not None else self.cfg.model.path
        learners = [
            ray.remote(PolicyWorker).options(num_cpus=0.5, num_gpus=plan.share, scheduling_strategy=strategy(plan.learners[i])).remote(
                self.cfg, self.total_steps, weights_path, env
            )
            for i, env in enumerate(dist_envs)
        ]
        rollouts = []
        for j, span in enumerate(plan.engines):
            options = dict(num_cpus=0.5, num_gpus=plan.share, scheduling_strategy=strategy(span[0]))
            if len(span) > 1:
                # Tensor-parallel vLLM: the engine's actor holds no GPU; vLLM's Ray executor starts
                # one worker per rank on the bundles named here, in this placement group.
                env = {"VLLM_RAY_BUNDLE_INDICES": ",".join(map(str, span)), "VLLM_RAY_PER_WORKER_GPUS": str(plan.share)}
                options.update(num_gpus=0, runtime_env={"env_vars": env}, scheduling_strategy=strategy(span[0], capture_children=True))
            options["max_restarts"] = r.actor_restarts  # a restarted engine gets the current weights from the driver
            rollouts.append(ray.remote(RolloutWorker).options(**options).remote(self.cfg, weights_path, _seed(self.cfg.trainer.seed, j)))
        self.learners, self.rollouts = learners, rollouts
        self._gather([w.ping.remote() for w in [*learners, *rollouts]], self._names(learners, rollouts), "start-up")
        return learners, rollouts

    # --- actor calls ---------------------------------------------------------------------------
    def _names(self, learners=(), rollouts=()) -> list[str]:
        return [f"learner rank {i}" for i in range(len(learners))] + [f"rollout engine {j}" for j in range(len(rollouts))]

    def _gather(self, futures, names, call: str) -> list:
        """Every actor call's results, within ``resources.call_timeout_s`` (:func:`actors.gather`)."""
        return actors.gather(futures, names, call, self.cfg.resources.call_timeout_s)

    def stopped(self, failure: actors.ActorFailure) -> RuntimeError:
        """The error that ends a run an actor failure cannot be recovered from: what failed, and where
        the same command will resume."""
        found = checkpoint.latest(self.ckpt_root)
        where = f"the newest checkpoint is {found}; run the same command to resume from it" if found else \
            "no checkpoint was saved yet; the same command starts again from the beginning"  # fmt: skip
        return RuntimeError(f"[grpo] {failure}; the run stops at step {self.step}: {where}")

    def resume(self, found: list[Path]) -> None:
        """Load the newest checkpoint the learners can read (the rollout engines started from its
        ``hf/``); when it is damaged, the one before it, whose weights are then synced to the engines.
        A file that would run code when unpickled stops the run."""
        import ray

        for i, folder in enumerate(found):
            try:
                self._on_learners("load", str(folder))
                self.step = checkpoint.read_state(folder)["step"]
            except (ray.exceptions.RayTaskError, OSError, ValueError, KeyError) as exc:
                cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
                if isinstance(cause, checkpoint.UnsafeCheckpointError):
                    raise cause from None
                print(f"[grpo] cannot resume from {folder} ({type(cause).__name__}: {cause}); trying an older checkpoint", flush=True)
                continue
            if i:
                self.sync_weights()
            print(f"[grpo] resumed from {folder} at step {self.step}", flush=True)
            return
        raise RuntimeError(f"none of the checkpoints in {self.ckpt_root} could be loaded (see above); "
                           "remove them, or set trainer.resume=false in a new output_dir")  # fmt: skip

    def sync_weights(self) -> None:
        """The learners' weights into every rollout engine (rank 0 holds them in full)."""
        weights = [learner.weights.remote() for learner in self.learners]  # the other ranks' are empty
        names = self._names(rollouts=self.rollouts) + self._names(self.learners)[1:]
        self._gather([w.load_weights.remote(weights[0]) for w in self.rollouts] + weights[1:], names, "weight sync")

    def _on_learners(self, method: str, *args) -> list:
        """``method(*args)`` on every learner rank at once (their collectives must all meet)."""
        return self._gather([getattr(learner, method).remote(*args) for learner in self.learners], self._names(self.learners), method)

    # --- data ----------------------------------------------------------------------------------
    def prompts_for_step(self, step: int):
        """The step's prompts: a fixed per-epoch permutation, so a resumed run sees the same data."""
        b = self.cfg.algorithm.prompts_per_step
        epoch, within = divmod(step, self.per_epoch)
        order = np.random.default_rng([self.cfg.trainer.seed, epoch]).permutation(len(self.samples))
        return [self.samples[int(i)] for i in order[within * b : (within + 1) * b]], epoch

    def build_requests(self, samples, step: int, seed_base: int):
        requests, infos = [], []
        for i, sample in enumerate(samples):
            shuffle = _seed(self.cfg.trainer.seed, step, i, 7) if self.cfg.data.shuffle_hints else None
            r = render_request(sample, self.processor, self.cfg.data.template, self.cfg.data.instruction, shuffle_seed=shuffle)
            requests.append(Request(r.prompt, r.image, _seed(seed_base, step, i)))
            infos.append(r.info)
        return requests, infos

    def _generate(self, requests, n):
        """The groups of ``n`` completions, the requests split over the engines. An engine that dies is
        restarted by Ray (``resources.actor_restarts`` times), given the current weights, and the
        rollouts are run again: requests carry their own seeds, so the retry samples the same."""
        shards = np.array_split(np.arange(len(requests)), len(self.rollouts))
        used = [(j, idx) for j, idx in enumerate(shards) if len(idx)]
        for attempt in range(self.cfg.resources.actor_restarts + 1):
            try:
                futures = [self.rollouts[j].generate.remote([requests[i] for i in idx], n) for j, idx in used]
                parts = self._gather(futures, [f"rollout engine {j}" for j, _ in used], "rollout")
                return [group for part in parts for group in part]
            except actors.ActorDied as exc:
                if attempt == self.cfg.resources.actor_restarts:
                    raise
                print(f"[grpo] {exc}; waiting for Ray to restart it, then running step {self.step + 1}'s rollouts again", flush=True)
                actors.wait_alive(self.rollouts, self._names(rollouts=self.rollouts), self.cfg.resources.call_timeout_s or 3600.0)
                self.sync_weights()
        raise AssertionError("unreachable")

    # --- one step ------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg, alg = self.cfg, self.cfg.algorithm
        n = cfg.rollout.n
        metrics: dict[str, float] = {}
        t_step = time.perf_counter()

        with self.timed(metrics, "prompts"):
            samples, epoch = self.prompts_for_step(self.step)
            requests, infos = self.build_requests(samples, self.step, cfg.trainer.seed)

        with self.timed(metrics, "rollout"):
            groups = self._generate(requests, n)
        completions = [c for g in groups for c in g]
        group_ids = [i for i, g in enumerate(groups) for _ in g]

        with self.timed(metrics, "reward"):
            failed_before = self.reward.errors.failed  # the count accumulates over the run
            scores = self.reward(
                [c.text for c in completions],
                solution_boxes=[infos[g].answer_boxes for g in group_ids],
                hint_boxes=[infos[g].hint_boxes for g in group_ids],
                category=[samples[g].category for g in group_ids],
                domain=[samples[g].domain for g in group_ids],
                image_size=[infos[g].model_size for g in group_ids],
                prompt=[requests[g].prompt for g in group_ids],
            )
        metrics["reward/failed_samples"] = float(self.reward.errors.failed - failed_before)  # raised, non-finite or timed out: scored 0
        rewards = torch.tensor(scores["overall"], dtype=torch.float64)
        prompts = [(r.prompt, r.image) for r in requests]
        responses = [(g, c.token_ids) for g, c in zip(group_ids, completions)]
        # Sequence cost for splitting over learner ranks: response tokens plus an estimate of the
        # prompt's (one image token per PATCH_FACTOR x PATCH_FACTOR pixels of the model frame, ~4 characters a token).
        prompt_tokens = [info.model_size[0] * info.model_size[1] / PATCH_FACTOR**2 + len(r.prompt) / 4 for r, info in zip(requests, infos)]
        costs = [prompt_tokens[g] + len(ids) for g, ids in responses]

        if alg.kl_coef > 0 and alg.kl_mode == "reward":
            with self.timed(metrics, "kl_reward"):
                kl = torch.tensor(self.sequence_kl(prompts, responses, costs), dtype=torch.float64)
            rewards = rewards - alg.kl_coef * kl
            metrics["actor/kl"] = float(kl.mean())

        with self.timed(metrics, "advantage"):
            advantages = A.group_advantages(rewards, group_ids, alg.advantage)
            keep = torch.ones(len(rewards), dtype=torch.bool)
            if alg.filter_zero_variance:
                keep, counts = A.filter_groups(rewards, group_ids)
                metrics["batch/groups_kept"] = counts["groups_kept"] / max(1, counts["groups"])

        kept = keep.nonzero().flatten().tolist()
        faults.point("step.mid", self.step + 1)
        if kept:
            with self.timed(metrics, "update"):
                parts = rank_batches(prompts, [responses[i] for i in kept], [costs[i] for i in kept], len(self.learners), alg.share_prompts)
                kept_adv = advantages[keep]  # a rank's padding responses get 0 and are weightless there
                futures = [learner.train_step.remote(b.prompts, b.responses, torch.cat([kept_adv[b.indices], kept_adv.new_zeros(b.padding)]),
                                                     self.step, b.padding) for learner, b in zip(self.learners, parts)]  # fmt: skip
                metrics.update(merge_rank_metrics(self._gather(futures, self._names(self.learners), "update")))
            with self.timed(metrics, "sync"):
                self.sync_weights()
        metrics["batch/skipped_update"] = float(not kept)

        self.step += 1
        metrics.update(self.batch_metrics(scores, samples, group_ids, completions, rewards))
        elapsed = time.perf_counter() - t_step
        metrics["time/step_s"] = elapsed
        # Orchestration: the share of the step spent neither generating nor in the learner's
        # forward/backward passes (prompt rendering, rewards, transfers, encoding, weight sync).
        compute = metrics["time/rollout_s"] + sum(metrics.get(f"time/learner_{k}_s", 0.0) for k in ("ref_logprobs", "old_logprobs", "optimize"))
        metrics["time/orchestration_share"] = max(0.0, 1.0 - compute / elapsed)
        response_tokens = sum(len(c.token_ids) for c in completions)
        metrics["perf/rollout_tokens_per_s"] = response_tokens / max(metrics["time/rollout_s"], 1e-9)
        metrics["perf/samples_per_s"] = len(completions) / elapsed
        metrics["perf/peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        metrics["epoch"] = epoch + 1
        if cfg.trainer.sample_table_every and self.step % cfg.trainer.sample_table_every == 0:
            self.write_samples(samples, completions, group_ids, scores)
        return metrics

    def sequence_kl(self, prompts, responses, costs) -> list[float]:
        """KL(policy || reference) of each response, the responses split over the learner ranks."""
        parts = rank_batches(prompts, responses, costs, len(self.learners), self.cfg.algorithm.share_prompts)
        futures = [learner.sequence_kl.remote(b.prompts, b.responses) for learner, b in zip(self.learners, parts)]
        results = self._gather(futures, self._names(self.learners), "sequence KL")
        kl = [0.0] * len(responses)
        for b, values in zip(parts, results):
            for i, value in zip(b.indices, values):  # a padding response's value is dropped
                kl[i] = value
        return kl

    def batch_metrics(self, scores, samples, group_ids, completions, rewards) -> dict[str, float]:
        out = {f"reward/{k}": float(np.mean(v)) for k, v in scores.items()}
        out["reward/overall_std"] = float(rewards.std()) if len(rewards) > 1 else 0.0
        component = "accuracy" if "accuracy" in scores else "overall"  # a custom reward may have no accuracy
        by_domain = defaultdict(list)
        for g, value in zip(group_ids, scores[component]):
            by_domain[samples[g].domain or "unknown"].append(value)
        for domain, values in by_domain.items():
            out[f"domain/{domain}/{component}"] = float(np.mean(values))
        rejections = [(not c.text.count('"bbox_2d"')) for g, c in zip(group_ids, completions) if samples[g].is_rejection]
        if rejections:
            out["domain/rejection/no_box_rate"] = float(np.mean(rejections))
        lengths = [len(c.token_ids) for c in completions]
        out["response/length_mean"] = float(np.mean(lengths))
        out["response/length_max"] = float(np.max(lengths))
        out["response/truncated_share"] = float(np.mean([c.finish_reason == "length" for c in completions]))
        return out

    def write_samples(self, samples, completions, group_ids, scores) -> None:
        path = self.out / "samples.jsonl"
        with path.open("a") as f:
            for i in range(0, len(completions), max(1, len(completions) // 4)):
                g = group_ids[i]
                f.write(json.dumps({"step": self.step, "id": samples[g].id, "referring": samples[g].referring,
                                    "reward": scores["overall"][i], "completion": completions[i].text}) + "\n")  # fmt: skip

    @contextmanager
    def timed(self, metrics: dict, stage: str):
        start = time.perf_counter()
        yield
        metrics[f"time/{stage}_s"] = time.perf_counter() - start

    # --- lifecycle -----------------------------------------------------------------------------
    def fit(self) -> None:
        from tqdm import tqdm

        bar = tqdm(total=self.total_steps, initial=self.step, desc="grpo", unit="step", dynamic_ncols=True)
        while self.step < self.total_steps:
            try:
                metrics = self.train_step()
            except actors.ActorFailure as exc:
                raise self.stopped(exc) from exc
            if self.step % self.cfg.trainer.log_every == 0 or self.step == self.total_steps:
                self.logger.log(self.step, metrics)
            bar.set_postfix(reward=f"{metrics['reward/overall']:.3f}", acc=f"{metrics.get('reward/accuracy', float('nan')):.3f}",
                            s_step=f"{metrics['time/step_s']:.1f}")  # fmt: skip
            bar.update(1)
            if self.cfg.trainer.save_every and self.step % self.cfg.trainer.save_every == 0 and self.step < self.total_steps:
                self.save()
        bar.close()

    def save(self) -> Path:
        tmp = checkpoint.begin(self.ckpt_root, self.step)
        self._on_learners("save", str(tmp))  # every rank writes its DeepSpeed shards; rank 0 the hf/ export
        return checkpoint.commit(tmp, {"step": self.step, "total_steps": self.total_steps}, keep=self.cfg.trainer.keep_checkpoints)

    def finish(self) -> Path:
        final = self.save()
        target = self.out / "final"
        if target.is_symlink():
            target.unlink()
        target.symlink_to(final.relative_to(self.out) / "hf")
        self.logger.plot(["reward/overall", "reward/accuracy", "reward/format", "actor/kl", "response/length_mean"],
                         self.out / "reward_curves.png", "GRPO")  # fmt: skip
        print(f"[grpo] final checkpoint: {target} -> {final / 'hf'}", flush=True)
        return target

    def evaluate(self, tag: str) -> dict | None:
        """Greedy generations on ``data.val`` through the rollout engine (current weights), scored
        with the reward this run trains on (rexthinker.quickeval)."""

        from rexthinker import quickeval
        from rexthinker.generation import Generation

        e = self.cfg.eval
        if not e.enabled:
            return None
        if tag == "end":
            faults.point("eval.end")
        val = open_samples(self.cfg.data.val, on_error=self.cfg.data.on_error, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        val = Head(val, e.num_samples)
        requests, infos = self.build_requests(val, 0, 0)
        start = time.perf_counter()
        outs = self._gather([self.rollouts[0].generate_greedy.remote(requests, e.max_new_tokens)], ["rollout engine 0"], f"evaluation ({tag})")[0]
        gens = [Generation(s, info, r.prompt, c.text, len(c.token_ids)) for s, info, r, c in zip(val, infos, requests, outs)]
        result = quickeval.score(gens, self.reward)
        result["generate_s"] = time.perf_counter() - start
        (self.out / f"eval_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
        self.logger.log(self.step, {f"eval_{tag}/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
        print(f"[grpo] eval ({tag}) on {result['samples']} samples: format {result['format']:.3f}, accuracy-F1 "
              f"{result['accuracy_f1']:.3f}, rejection acc {result['rejection_acc']:.3f}", flush=True)  # fmt: skip
        return result

    def cleanup(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        self.logger.close()
        self.reward.close()  # its worker process, under reward.timeout_s
        for actor in [*self.learners, *self.rollouts]:
            ray.kill(actor)
        remove_placement_group(self.placement_group)
        self.lock.release()
