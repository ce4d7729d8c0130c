"""The GRPO driver: one controller process that reads top to bottom as the dataflow of a step.

    prompts -> rollouts (n per prompt) -> rewards -> group advantages -> [reference / old log-probs
    -> policy update] (PolicyWorker) -> weight sync to the rollout engines -> log -> checkpoint

Prompts, rollouts, rewards and the zero-variance filter run as one round (``rollout_round``, a
:class:`Rollouts`); with ``algorithm.refill_rounds``, further rounds draw new prompts for the groups
the filter dropped (DAPO's dynamic sampling).

The roles run as Ray actors (:mod:`rexthinker.grpo.workers`); the driver holds no model. With
``resources.mode: local`` they are objects in the driver process instead, called the same way
(:class:`~rexthinker.grpo.actors.LocalActor`), and Ray is never imported. The
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

from rexthinker.config import ConfigError, save_config, to_dict
from rexthinker.data.sources import Head, open_samples, open_training_samples
from rexthinker.generation import render_request
from rexthinker.grpo import actors
from rexthinker.grpo import algorithm as A
from rexthinker.grpo.config import GRPOConfig
from rexthinker.models.families import model_family
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


@dataclass
class Rollouts:
    """Prompts and their scored groups of completions: ``group_ids[k]`` is the prompt (index into
    ``samples``) of ``completions[k]``; ``keep`` marks the completions of groups with signal (all of
    them without ``algorithm.filter_zero_variance``)."""

    samples: list
    requests: list[Request]
    infos: list
    completions: list
    group_ids: list[int]
    scores: dict[str, list[float]]
    rewards: torch.Tensor  # the overall reward, less the KL penalty with kl_mode=reward
    keep: torch.Tensor
    epoch: int  # of the last prompt
    kl: torch.Tensor | None = None  # each completion's KL to the reference (kl_mode=reward only)

    @property
    def groups_kept(self) -> int:
        return len({g for g, k in zip(self.group_ids, self.keep.tolist()) if k})

    def learner_inputs(self) -> tuple[list, list, list[float]]:
        """``(prompt, image)`` per prompt, ``(prompt index, token ids)`` per completion, and each
        completion's cost for splitting over learner ranks: its tokens plus an estimate of its
        prompt's (one image token per factor x factor pixels of the model frame, the family's, ~4
        characters a token)."""
        prompts = [(r.prompt, r.image) for r in self.requests]
        responses = [(g, c.token_ids) for g, c in zip(self.group_ids, self.completions)]
        prompt_tokens = [info.model_size[0] * info.model_size[1] / info.family.factor**2 + len(r.prompt) / 4
                         for r, info in zip(self.requests, self.infos)]  # fmt: skip
        return prompts, responses, [prompt_tokens[g] + len(ids) for g, ids in responses]

    @classmethod
    def concat(cls, parts: Sequence[Rollouts]) -> Rollouts:
        """The rounds of a step as one batch (their prompts one after another)."""
        offsets = np.cumsum([0, *(len(p.samples) for p in parts)]).tolist()
        return cls(
            samples=[s for p in parts for s in p.samples],
            requests=[r for p in parts for r in p.requests],
            infos=[i for p in parts for i in p.infos],
            completions=[c for p in parts for c in p.completions],
            group_ids=[g + offset for p, offset in zip(parts, offsets) for g in p.group_ids],
            scores={k: [v for p in parts for v in p.scores[k]] for k in parts[0].scores},
            rewards=torch.cat([p.rewards for p in parts]),
            keep=torch.cat([p.keep for p in parts]),
            epoch=parts[-1].epoch,
            kl=torch.cat([p.kl for p in parts]) if parts[0].kl is not None else None,
        )


def _rendezvous() -> tuple[str, int]:
    """This node's IP and a free TCP port: where learner rank 0 hosts the process group."""
    import socket

    import ray

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return ray.util.get_node_ip_address(), port


def warn_frame_mismatch(paths: Sequence[str], family) -> list[str]:
    """Warn, per GRPO parquet of ``paths`` written in another box frame than ``family``'s, that its
    boxes are re-encoded at every read (one more rounding), and how to write it in the model's frame.
    Returns the warnings."""
    from rexthinker.coords import MODEL_PIXELS
    from rexthinker.data.grpo_parquet import parquet_frame

    out = []
    for path in map(str, paths):
        if not (path.endswith(".parquet") and Path(path).is_file()):
            continue
        record = parquet_frame(path)
        written = record["frame"] if record else MODEL_PIXELS
        if written != family.frame:
            out.append(f"[grpo] warning: {path} holds boxes in the {written} frame, the model ({family.name}) reads "
                       f"{family.frame}: they are re-encoded from it, one more rounding; write the data with "
                       f"--family {family.name} to avoid it")  # fmt: skip
            print(out[-1], flush=True)
    return out


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
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(cfg.model.path)
        set_pixel_limits(self.processor, cfg.model.min_pixels, cfg.model.max_pixels)
        self.min_pixels, self.max_pixels = pixel_limits(self.processor)
        self.family = model_family(cfg.model.path)  # the box frame of every prompt and reward
        if self.family.hybrid and cfg.algorithm.share_prompts:
            raise ConfigError(f"algorithm.share_prompts=true runs the responses on the prompt's cache, whose linear-attention "
                              f"states a hybrid model ({self.family.name}) updates in place, which breaks the backward pass: "
                              "set algorithm.share_prompts=false")  # fmt: skip
        self.samples = open_training_samples(cfg.data, self.out, "grpo", min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        warn_frame_mismatch(cfg.data.train, self.family)
        if cfg.data.max_samples:
            self.samples = [self.samples[i] for i in range(min(cfg.data.max_samples, len(self.samples)))]
        self.reward = cfg.reward.load()  # with reward.timeout_s, in a worker process of its own
        per_epoch = len(self.samples) // cfg.algorithm.prompts_per_step
        if per_epoch == 0:
            raise SystemExit(f"{len(self.samples)} samples cannot fill one step of {cfg.algorithm.prompts_per_step} prompts")
        self.total_steps = cfg.trainer.max_steps or max(1, math.ceil(cfg.trainer.epochs * per_epoch))
        self.per_epoch = per_epoch
        self.step = 0
        self.data_position = 0  # prompts drawn so far (draw_prompts); a checkpoint stores it
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation of the samples)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "config.yaml")
        self.logger = MetricLogger(self.out, cfg.trainer.report_to, cfg.trainer.run_name, to_dict(cfg))

        found = []  # checkpoints to resume from, newest first
        if cfg.trainer.resume:
            checkpoint.recover(self.ckpt_root)
            found = checkpoint.candidates(self.ckpt_root)
        weights_path = str(found[0] / "hf") if found else cfg.model.path
        self.placement_group = None
        start = self._start_local if cfg.resources.mode == "local" else self._start_actors
        self.learners, self.rollouts = start(weights_path)
        if cfg.trainer.resume and checkpoint.step_dirs(self.ckpt_root):  # damaged ones too: never a silent fresh start
            self.resume(found)
        print(f"[grpo] {len(self.samples)} prompts, {per_epoch} steps/epoch, {self.total_steps} steps, "
              f"{cfg.algorithm.prompts_per_step} x {cfg.rollout.n} samples per step, rollouts: {cfg.rollout.backend}", flush=True)  # fmt: skip

    def _start_local(self, weights_path: str):
        """``resources.mode: local``: the learner and one rollout engine in this process. A role's own
        exception reaches the driver as is (``task_error``)."""
        from rexthinker.grpo.workers import PolicyWorker, RolloutWorker

        self.task_error = Exception
        learner = PolicyWorker(self.cfg, self.total_steps, weights_path)
        engine = RolloutWorker(self.cfg, weights_path, _seed(self.cfg.trainer.seed, 0))
        return [actors.LocalActor(learner)], [actors.LocalActor(engine)]

    def _start_actors(self, weights_path: str):
        """The Ray cluster joined (or started), then placement (:func:`plan_placement`). On CPU, half
        a core per actor (they share the machine). A tensor-parallel vLLM engine gets one bundle per
        rank. Several learner ranks form one process group: rank 0's node and a free port there are looked up first, and every rank
        gets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT before it joins."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from rexthinker.grpo.workers import PolicyWorker, RolloutWorker

        r = self.cfg.resources
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in ACTOR_ENV if k in os.environ}
            ray.init(address=r.ray_address or os.environ.get("RAY_ADDRESS"), runtime_env={"env_vars": env},
                     include_dashboard=False, log_to_driver=True)  # fmt: skip
        self.task_error = ray.exceptions.RayTaskError  # how a role's own exception reaches the driver
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
        for i, folder in enumerate(found):
            try:
                self._on_learners("load", str(folder))
                state = checkpoint.read_state(folder)
                self.step = state["step"]
                # A checkpoint written before refills existed holds no position: every step then drew one batch.
                self.data_position = state.get("data_position", self.step * self.cfg.algorithm.prompts_per_step)
            except (self.task_error, OSError, ValueError, KeyError) as exc:
                cause = getattr(exc, "cause", exc)  # a RayTaskError's cause, else the exception itself
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
    def draw_prompts(self, count: int):
        """The next ``count`` prompts from ``data_position`` on (which they advance), and the epoch of
        the last one. Each epoch is a fixed permutation of the samples (seeded by ``trainer.seed`` and
        the epoch) cut to whole steps, so the prompts depend only on the position, which a checkpoint
        stores: a resumed run draws what an uninterrupted one would, refills included."""
        epoch_len = self.per_epoch * self.cfg.algorithm.prompts_per_step
        prompts, epoch = [], 0
        for position in range(self.data_position, self.data_position + count):
            epoch, within = divmod(position, epoch_len)
            if self._order is None or self._order[0] != epoch:
                self._order = (epoch, np.random.default_rng([self.cfg.trainer.seed, epoch]).permutation(len(self.samples)))
            prompts.append(self.samples[int(self._order[1][within])])
        self.data_position += count
        return prompts, epoch

    def build_requests(self, samples, step: int, seed_base: int, first: int = 0):
        """Requests for ``samples``, the step's prompts ``first`` on: their sampling (and hint shuffle)
        seeds come from the step and that index."""
        requests, infos = [], []
        for i, sample in enumerate(samples, first):
            shuffle = _seed(self.cfg.trainer.seed, step, i, 7) if self.cfg.data.shuffle_hints else None
            r = render_request(sample, self.processor, self.cfg.data.template, self.cfg.data.instruction, shuffle_seed=shuffle,
                               family=self.family)  # fmt: skip
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
        metrics: dict[str, float] = {}
        t_step = time.perf_counter()
        failed_before = self.reward.errors.failed  # the count accumulates over the run

        # prompts -> rollouts -> rewards -> zero-variance filter; with algorithm.refill_rounds, more
        # rounds of new prompts for the groups it dropped (DAPO's dynamic sampling), as many as missing.
        rounds = [self.rollout_round(alg.prompts_per_step, 0, metrics)]
        while (missing := alg.prompts_per_step - sum(r.groups_kept for r in rounds)) > 0 and len(rounds) <= alg.refill_rounds:
            rounds.append(self.rollout_round(missing, sum(len(r.samples) for r in rounds), metrics))
        batch = Rollouts.concat(rounds)
        metrics["reward/failed_samples"] = float(self.reward.errors.failed - failed_before)  # raised, non-finite or timed out: scored 0
        if batch.kl is not None:
            metrics["actor/kl"] = float(batch.kl.mean())
        if alg.filter_zero_variance:
            kept_groups = batch.groups_kept
            metrics.update({"batch/prompts_drawn": len(batch.samples), "batch/groups_kept": kept_groups,
                            "batch/groups_dropped": len(batch.samples) - kept_groups, "batch/rounds": len(rounds)})  # fmt: skip

        with self.timed(metrics, "advantage"):
            advantages = A.group_advantages(batch.rewards, batch.group_ids, alg.advantage)

        keep = batch.keep
        kept = keep.nonzero().flatten().tolist()
        faults.point("step.mid", self.step + 1)
        if kept:
            with self.timed(metrics, "update"):
                prompts, responses, costs = batch.learner_inputs()
                parts = rank_batches(prompts, [responses[i] for i in kept], [costs[i] for i in kept], len(self.learners), alg.share_prompts)
                kept_adv = advantages[keep]  # a rank's padding responses get 0 and are weightless there
                futures = [learner.train_step.remote(b.prompts, b.responses, torch.cat([kept_adv[b.indices], kept_adv.new_zeros(b.padding)]),
                                                     self.step, b.padding) for learner, b in zip(self.learners, parts)]  # fmt: skip
                metrics.update(merge_rank_metrics(self._gather(futures, self._names(self.learners), "update")))
            with self.timed(metrics, "sync"):
                self.sync_weights()
        metrics["batch/skipped_update"] = float(not kept)

        self.step += 1
        completions = batch.completions
        metrics.update(self.batch_metrics(batch.scores, batch.samples, batch.group_ids, completions, batch.rewards))
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
        metrics["epoch"] = batch.epoch + 1
        if cfg.trainer.sample_table_every and self.step % cfg.trainer.sample_table_every == 0:
            self.write_samples(batch.samples, completions, batch.group_ids, batch.scores)
        return metrics

    def rollout_round(self, count: int, first: int, metrics: dict) -> Rollouts:
        """The next ``count`` prompts (the step's ``first`` on), ``rollout.n`` completions each, their
        rewards (less the KL penalty with kl_mode=reward) and which groups have signal; each stage's
        time is added to ``metrics``."""
        cfg, alg = self.cfg, self.cfg.algorithm
        with self.timed(metrics, "prompts"):
            samples, epoch = self.draw_prompts(count)
            requests, infos = self.build_requests(samples, self.step, cfg.trainer.seed, first)

        with self.timed(metrics, "rollout"):
            groups = self._generate(requests, cfg.rollout.n)
        completions = [c for g in groups for c in g]
        group_ids = [i for i, g in enumerate(groups) for _ in g]

        with self.timed(metrics, "reward"):
            scores = self.reward(
                [c.text for c in completions],
                solution_boxes=[infos[g].answer_boxes for g in group_ids],
                hint_boxes=[infos[g].hint_boxes for g in group_ids],
                category=[samples[g].category for g in group_ids],
                domain=[samples[g].domain for g in group_ids],
                image_size=[infos[g].frame.size for g in group_ids],
                prompt=[requests[g].prompt for g in group_ids],
            )
        rewards = torch.tensor(scores["overall"], dtype=torch.float64)
        every = torch.ones(len(rewards), dtype=torch.bool)  # kept until the filter says otherwise
        part = Rollouts(samples, requests, infos, completions, group_ids, scores, rewards, every, epoch)

        if alg.kl_coef > 0 and alg.kl_mode == "reward":
            with self.timed(metrics, "kl_reward"):
                part.kl = torch.tensor(self.sequence_kl(*part.learner_inputs()), dtype=torch.float64)
            part.rewards = rewards - alg.kl_coef * part.kl

        if alg.filter_zero_variance:
            with self.timed(metrics, "filter"):
                part.keep = A.filter_groups(part.rewards, group_ids)[0]
        return part

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
        """Adds the block's seconds to ``time/<stage>_s`` (a stage may run in several rounds)."""
        start = time.perf_counter()
        yield
        metrics[f"time/{stage}_s"] = metrics.get(f"time/{stage}_s", 0.0) + time.perf_counter() - start

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
            # Before the checkpoint of the same step: a run killed in between redoes the step and
            # its evaluation (as it redoes every step after its checkpoint); a run resumed from that
            # checkpoint continues with the next step and never repeats it. The last step gets
            # the end evaluation instead.
            val_every = self.cfg.trainer.val_every
            if val_every and self.step % val_every == 0 and self.step < self.total_steps:
                self.evaluate("val")
            if self.cfg.trainer.save_every and self.step % self.cfg.trainer.save_every == 0 and self.step < self.total_steps:
                self.save()
        bar.close()

    def save(self) -> Path:
        tmp = checkpoint.begin(self.ckpt_root, self.step)
        self._on_learners("save", str(tmp))  # every rank writes its DeepSpeed shards; rank 0 the hf/ export
        state = {"step": self.step, "total_steps": self.total_steps, "data_position": self.data_position}
        return checkpoint.commit(tmp, state, keep=self.cfg.trainer.keep_checkpoints)

    def finish(self) -> Path:
        final = self.save()
        target = self.out / "final"
        if target.is_symlink():
            target.unlink()
        target.symlink_to(final.relative_to(self.out) / "hf")
        self.logger.plot(["reward/overall", "val/overall", "reward/accuracy", "val/accuracy_f1", "reward/format", "actor/kl",
                          "response/length_mean"], self.out / "reward_curves.png", "GRPO")  # fmt: skip
        print(f"[grpo] final checkpoint: {target} -> {final / 'hf'}", flush=True)
        return target

    def evaluate(self, tag: str) -> dict | None:
        """Greedy generations on ``data.val`` through the rollout engine (current weights), scored
        with the reward this run trains on (rexthinker.quickeval). ``tag`` "start" and "end" log
        ``eval_<tag>/<name>`` and write ``eval_<tag>.json``; "val" (every ``trainer.val_every``
        steps) logs ``val/<name>`` and writes ``eval_step<N>.json``. A resumed run skips "start":
        its first run evaluated the starting weights."""

        from rexthinker import quickeval
        from rexthinker.generation import Generation

        e = self.cfg.eval
        if not e.enabled:
            return None
        if tag == "start" and not e.at_start:
            return None
        if tag == "start" and self.step > 0:
            print(f"[grpo] resumed at step {self.step}: no start evaluation (the first run made it)", flush=True)
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
        prefix, name = ("val", f"eval_step{self.step}") if tag == "val" else (f"eval_{tag}", f"eval_{tag}")
        (self.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        self.logger.log(self.step, {f"{prefix}/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
        print(f"[grpo] eval ({tag}, step {self.step}) on {result['samples']} samples: format {result['format']:.3f}, accuracy-F1 "
              f"{result['accuracy_f1']:.3f}, rejection acc {result['rejection_acc']:.3f}, Acc@0.5 {result['acc_50']:.3f} "
              f"({result['acc_50_samples']} single-target samples)", flush=True)  # fmt: skip
        return result

    def cleanup(self) -> None:
        self.logger.close()
        self.reward.close()  # its worker process, under reward.timeout_s
        if self.cfg.resources.mode == "ray":
            import ray
            from ray.util.placement_group import remove_placement_group

            for actor in [*self.learners, *self.rollouts]:
                ray.kill(actor)
            remove_placement_group(self.placement_group)
        self.learners, self.rollouts = [], []  # local mode: the models go with them
        self.lock.release()
