"""Reward plumbing: load a reward function from a plain file and call it safely on a batch.

A reward is named ``"path/to/file.py:name"`` plus keyword config, and loaded once at start-up by
:func:`load_reward`, which checks everything it can before training begins: the file exists and
imports, ``name`` exists and is callable, and its signature can take a batch. A wrong spec is a
:class:`RewardLoadError` at once, never a silent ``None``.

The calling convention (the only one):

- ``name`` is a function, or a class. A function gets the keyword config on every call; a class
  is instantiated once with the keyword config and the instance is called (a picklable way to
  carry parameters, state or a loaded model).
- It is called once per batch: the completions as the first positional argument, then one keyword
  per batch key, each a list aligned with the completions. The GRPO trainer passes
  :data:`BATCH_KEYS`. A function with ``**kwargs`` receives every key; one without receives only
  the keys it names.
- It returns ``{component: [float per completion]}`` with an ``"overall"`` entry (the scalar that
  is trained on; every component is logged as ``reward/<name>``). Two other shapes are accepted
  and converted: a list of per-sample dicts (EasyR1's batch rewards) and a plain list of floats
  (taken as ``overall``).

When the function raises on a batch, it is called again on each sample alone; the samples that
still raise, or give a non-finite value, score 0 on every component and are counted in
:attr:`RewardFn.errors` with the first traceback (also logged once). ``strict=True`` re-raises
instead. Failures that are the reward's, not a sample's, always raise: a result of the wrong shape
(no ``overall``, wrong length, not numbers) is a :class:`RewardOutputError`, and a batch of several
samples on which every sample fails is a :class:`RewardFailedError` (a broken reward must not train
on zeros).

``timeout_s`` bounds each call (GRPO: ``reward.timeout_s``, 300 s unless set). A hung Python call
cannot be interrupted in a thread, so then the reward runs in a worker process of its own (spawned
once, holding its own copy of the reward) and the caller waits at most ``timeout_s`` for each call:
for the batch, and for each sample alone when the batch did not return (or raised). A call that
does not return in time has its worker killed (the next call starts a fresh one) and raises
:class:`RewardTimeoutError`, so a sample that hangs scores 0 and is counted like one that raises,
while the others score normally; a reward that hangs on every sample is a :class:`RewardFailedError`
after ``timeout_s`` per sample. The worker costs one idle process and the batch piped to it and
back (milliseconds for a GRPO step). A stateful reward keeps its state in the worker, which a
timeout resets; the worker is a daemon process, so a reward that starts processes of its own (a
multiprocessing pool) needs ``timeout_s=None``. ``timeout_s=None`` calls the reward in-process,
unbounded. :meth:`RewardFn.close` ends the worker (so do garbage collection and the interpreter's
exit).

A :class:`RewardFn` pickles as its spec and config, and reloads the file where it is unpickled (a
file that changed in between is refused), so a reward can be sent to other processes (a Ray actor or a
process pool for an expensive reward). The GRPO driver and the evaluations call it in their own
process, or in its worker under ``timeout_s``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import math
import multiprocessing
import pickle
import sys
import traceback
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

from rexthinker.config import redact

logger = logging.getLogger(__name__)

BATCH_KEYS = ("solution_boxes", "hint_boxes", "category", "domain", "image_size", "prompt")
"""The per-sample lists the GRPO trainer passes, besides the completions:

``solution_boxes``  ground-truth ``[x0, y0, x1, y1]`` boxes in the prompt's box frame (``[]``: rejection)
``hint_boxes``      the candidate boxes shown in the prompt, in hint order ("Person k" is k-1)
``category``        the hint's category word ("person", "helmet")
``domain``          the sample's domain (HumanRef domains, or the data set's own)
``image_size``      ``(width, height)`` of the box frame: the model-input frame (Qwen2.5-VL), (1000, 1000) (Qwen3-VL)
``prompt``          the user text of the prompt (with the hint)
"""


class RewardLoadError(RuntimeError):
    """A reward spec that cannot be loaded or cannot take a batch."""


class RewardOutputError(RuntimeError):
    """A reward returned something that is not one score per completion."""


class RewardFailedError(RuntimeError):
    """A reward failed on every sample of a batch: the reward is broken, not the samples."""


class RewardTimeoutError(RuntimeError):
    """A reward call that did not return within ``timeout_s``; its worker process was killed."""


class RewardWorkerError(RuntimeError):
    """The worker process of a reward under ``timeout_s`` died in a call, or the reward raised there
    an exception that cannot be sent back (its traceback is the message)."""


WORKER_START_S = 300.0
"""How long a reward's worker process may take to start (spawn, imports, the reward's own set-up,
such as loading a model), or ``timeout_s`` if that is longer."""


@dataclass
class RewardErrors:
    """Samples on which a reward raised (or gave a non-finite value) and scored 0 instead."""

    failed: int = 0
    first_traceback: str | None = None

    def __str__(self) -> str:
        if not self.failed:
            return "no failed samples"
        return f"{self.failed} samples failed and scored 0; first failure:\n{self.first_traceback}"


class RewardFn:
    """A loaded reward: ``reward(completions, **batch) -> {component: [float, ...]}``.

    Build it with :func:`load_reward`. ``errors`` accumulates over calls.
    """

    def __init__(self, spec: str, strict: bool = False, timeout_s: float | None = None, **config: Any):
        if timeout_s is not None and (type(timeout_s) not in (int, float) or not 0 < timeout_s < math.inf):
            raise RewardLoadError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
        self.spec = spec
        self.strict = strict
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.config = config
        self.errors = RewardErrors()
        self.path, self.name = _split_spec(spec)
        self.digest = _digest(self.path)
        self._worker: _Worker | None = None
        self._setup()

    def _setup(self) -> None:
        module = _import_file(self.path)
        if not hasattr(module, self.name):
            available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise RewardLoadError(f"{self.path} has no {self.name!r}; callables defined there: {available}")
        target = getattr(module, self.name)
        if isinstance(target, type):
            try:
                self._fn: Callable = target(**self.config)
            except Exception as exc:
                raise RewardLoadError(
                    f"{self.spec}: building the reward with config {redact(self.config)} failed: {type(exc).__name__}: {exc}"
                ) from exc
            self._call_config: dict[str, Any] = {}
        elif callable(target):
            self._fn, self._call_config = target, dict(self.config)
        else:
            raise RewardLoadError(f"{self.spec} is a {type(target).__name__}, not a function or class")
        self._accepted, self._required = _check_signature(self._fn, self._call_config, self.spec)

    def __call__(self, completions: Sequence[str], **batch: Sequence) -> dict[str, list[float]]:
        completions = list(completions)
        n = len(completions)
        for key, values in batch.items():
            if len(values) != n:
                raise ValueError(f"batch key {key!r} has {len(values)} entries for {n} completions")
        missing = sorted(self._required - set(batch))
        if missing:
            raise TypeError(f"{self.spec} needs batch keys {missing}, which this call does not pass")
        if self._accepted is not None:
            batch = {k: v for k, v in batch.items() if k in self._accepted}
        try:
            result = self._call(completions, batch)
        except RewardLoadError:
            raise
        except Exception as exc:
            if self.strict:
                raise
            if isinstance(exc, RewardTimeoutError):
                logger.warning("%s; scoring the samples one by one", exc)
                if n == 1:  # that sample alone already had its timeout_s
                    self._record(traceback.format_exc())
                    return {"overall": [0.0]}
            return self._one_by_one(completions, batch)
        scores = _normalise(result, n, self.spec)
        if not all(all(map(math.isfinite, values)) for values in scores.values()):
            bad = [i for i in range(n) if not all(math.isfinite(values[i]) for values in scores.values())]
            if self.strict:
                raise RewardOutputError(f"{self.spec} gave a non-finite score for samples {bad}")
            if n > 1 and len(bad) == n:
                raise RewardFailedError(f"{self.spec} gave a non-finite score for all {n} samples")
            for i in bad:
                self._record(f"non-finite score for sample {i}: {[values[i] for values in scores.values()]}")
                for values in scores.values():
                    values[i] = 0.0
        return scores

    def _one_by_one(self, completions: list[str], batch: dict[str, Sequence]) -> dict[str, list[float]]:
        rows: list[dict[str, float] | None] = []
        failures: list[str] = []
        for i, completion in enumerate(completions):
            try:
                result = self._call([completion], {k: [v[i]] for k, v in batch.items()})
            except RewardLoadError:
                raise
            except Exception:
                failures.append(traceback.format_exc())
                rows.append(None)
                continue
            row = {name: values[0] for name, values in _normalise(result, 1, self.spec).items()}
            if not all(math.isfinite(v) for v in row.values()):
                failures.append(f"non-finite score for sample {i}: {row}")
                row = None
            rows.append(row)
        if len(rows) > 1 and len(failures) == len(rows):
            raise RewardFailedError(f"{self.spec} failed on all {len(rows)} samples; first failure:\n{failures[0]}")
        for failure in failures:
            self._record(failure)
        names = next((list(row) for row in rows if row is not None), ["overall"])
        return {name: [row[name] if row is not None else 0.0 for row in rows] for name in names}

    def _call(self, completions: list[str], batch: dict[str, Sequence]) -> Any:
        """One call of the reward: in-process, or in the worker with ``timeout_s`` (see the module
        docstring); a worker that timed out or died is ended here, and the next call starts another."""
        if self.timeout_s is None:
            return self._fn(completions, **batch, **self._call_config)
        if self._worker is None:
            self._worker = _Worker(self)
        try:
            return self._worker.call(completions, batch, self.timeout_s)
        except (RewardTimeoutError, RewardWorkerError):
            if self._worker is not None:
                self._worker.close(kill=True)
                self._worker = None
            raise

    def close(self) -> None:
        """End the worker process, if there is one (a later call starts a new one)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _record(self, failure: str) -> None:
        if self.errors.first_traceback is None:
            self.errors.first_traceback = failure
            logger.warning("reward %s failed on a sample, which scores 0 (reported once):\n%s", self.spec, failure)
        self.errors.failed += 1

    def __getstate__(self) -> dict[str, Any]:
        keys = ("spec", "strict", "timeout_s", "config", "errors", "path", "name", "digest")
        return {k: getattr(self, k) for k in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._worker = None
        if _digest(self.path) != self.digest:
            raise RewardLoadError(f"{self.path} changed since the reward was loaded; refusing to run another reward")
        self._setup()

    def __repr__(self) -> str:
        return f"RewardFn({self.spec!r}, strict={self.strict}, timeout_s={self.timeout_s}, config={redact(self.config)})"


def load_reward(spec: str, strict: bool = False, timeout_s: float | None = None, **config: Any) -> RewardFn:
    """Load ``"path/to/file.py:name"`` with keyword ``config``; see the module docstring."""
    return RewardFn(spec, strict=strict, timeout_s=timeout_s, **config)


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, attached as its cause."""

    def __str__(self) -> str:
        return self.args[0]


class _Worker:
    """A spawned process holding its own copy of a reward (unpickled: the file is imported again),
    called with a time bound. ``close`` ends it: it leaves its loop, or is killed."""

    def __init__(self, reward: RewardFn):
        ctx = multiprocessing.get_context("spawn")  # no fork of a driver holding threads, CUDA or Ray
        self.spec = reward.spec
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, reward), name="reward-worker", daemon=True)
        self.process.start()
        child.close()
        self._close = weakref.finalize(self, _stop, self.process, self.conn)
        start_s = max(WORKER_START_S, reward.timeout_s or 0.0)
        try:
            if not self.conn.poll(start_s):
                raise RewardLoadError(f"{self.spec}: the reward's worker process did not start within {start_s:g} s")
            self.conn.recv()  # "ready"
        except (EOFError, OSError):
            self.close(kill=True)
            raise RewardLoadError(
                f"{self.spec}: the reward's worker process failed to start (exit code {self.process.exitcode}); "
                "its error is printed above"
            ) from None
        except RewardLoadError:
            self.close(kill=True)
            raise

    def call(self, completions: list[str], batch: dict[str, Sequence], timeout_s: float) -> Any:
        try:
            self.conn.send((completions, batch))
            reply = self.conn.recv() if self.conn.poll(timeout_s) else None
        except (EOFError, OSError) as exc:
            self.process.join(1.0)
            raise RewardWorkerError(f"{self.spec}: the reward's worker process died (exit code {self.process.exitcode})") from exc
        if reply is None:
            raise RewardTimeoutError(
                f"{self.spec} did not return within {timeout_s:g} s on {len(completions)} sample(s); "
                "its worker process was killed"
            )
        result, error, text = reply
        if text is None:
            return result
        if error is None:  # an exception that does not pickle, or a result that does not
            error = RewardWorkerError(f"{self.spec} failed in its worker process: {text.strip().splitlines()[-1]}")
        raise error from _RemoteTraceback(text)

    def close(self, kill: bool = False) -> None:
        if kill and self.process.is_alive():
            self.process.kill()
        self._close()


def _stop(process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
    """End a worker: with its pipe closed it leaves its loop; killed if it has not within a second."""
    conn.close()
    process.join(1.0)
    if process.is_alive():
        process.kill()
        process.join(5.0)


def _serve(conn: Connection, reward: RewardFn) -> None:
    """The worker process: score each batch received and send back ``(result, exception, traceback)``
    (the exception only when it survives pickling, the traceback None on success)."""
    conn.send("ready")
    while True:
        try:
            completions, batch = conn.recv()
        except EOFError:  # the caller closed its end
            return
        try:
            reply = (reward._fn(completions, **batch, **reward._call_config), None, None)
        except Exception as exc:
            text = traceback.format_exc()
            try:
                pickle.loads(pickle.dumps(exc))
            except Exception:
                exc = None
            reply = (None, exc, text)
        try:
            conn.send(reply)
        except Exception as exc:  # a result that does not pickle
            conn.send((None, None, f"the reward's result cannot be sent back: {type(exc).__name__}: {exc}"))


def _split_spec(spec: str) -> tuple[Path, str]:
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise RewardLoadError(f"reward spec must look like 'path/to/file.py:function', got {spec!r}")
    file = Path(path).expanduser().resolve()
    if file.suffix != ".py":
        raise RewardLoadError(f"reward spec must name a .py file, got {path!r}")
    if not file.is_file():
        raise RewardLoadError(f"reward file not found: {path} (resolved to {file})")
    return file, name


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise RewardLoadError(f"cannot read reward file {path}: {exc}") from exc


def _import_file(path: Path) -> ModuleType:
    """Import a file under a name derived from its path (so two ``reward.py`` files do not clash)."""
    module_name = "rexthinker_reward_" + hashlib.sha1(str(path).encode()).hexdigest()[:12] + "_" + path.stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RewardLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickle look classes up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise RewardLoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _check_signature(
    fn: Callable, config: Mapping[str, Any], spec: str
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """Check that ``fn(completions, **batch, **config)`` binds. Returns the batch keys ``fn`` takes
    (None: all of them, it has ``**kwargs``) and the batch keys it cannot do without."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise RewardLoadError(f"{spec}: cannot read the signature: {exc}") from exc
    params = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in (*positional, inspect.Parameter.VAR_POSITIONAL):
        raise RewardLoadError(f"{spec}{signature}: the first parameter must take the list of completions")
    rest = params[1:] if params[0].kind in positional else params
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {p.name for p in rest if p.kind in by_name}

    clashes = sorted(set(config) & set(BATCH_KEYS))
    if clashes:
        raise RewardLoadError(f"{spec}: config keys {clashes} are batch keys the trainer fills in")
    unknown = sorted(k for k in config if k not in named)
    if unknown and not takes_all:
        raise RewardLoadError(f"{spec}{signature} has no parameters {unknown} given in its config")
    required_keys = set()
    for p in rest:
        required = p.default is inspect.Parameter.empty and p.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if required and p.name in BATCH_KEYS:
            required_keys.add(p.name)
        if required and p.name not in config and p.name not in BATCH_KEYS:
            raise RewardLoadError(
                f"{spec}{signature}: parameter {p.name!r} is neither a batch key {list(BATCH_KEYS)} nor in the config"
                " (rewards are called once per batch, with the completions first)"
            )
        if required and p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise RewardLoadError(f"{spec}{signature}: {p.name!r} is positional-only; batch keys come by name")
    try:
        signature.bind([], **{k: [] for k in BATCH_KEYS if takes_all or k in named}, **config)
    except TypeError as exc:
        raise RewardLoadError(f"{spec}{signature} cannot take a batch: {exc}") from exc
    return (None if takes_all else frozenset(named)), frozenset(required_keys)


def _normalise(result: Any, n: int, spec: str) -> dict[str, list[float]]:
    """``{name: [n floats]}`` with an ``overall`` entry, from any of the accepted result shapes."""
    if hasattr(result, "tolist") and not isinstance(result, Mapping):
        result = result.tolist()  # a numpy or torch vector
    if isinstance(result, Mapping):
        columns = dict(result)
    elif isinstance(result, (list, tuple)) and all(isinstance(r, Mapping) for r in result) and result:
        names = list(result[0])
        if any(set(r) != set(names) for r in result):
            raise RewardOutputError(f"{spec}: per-sample dicts have different keys")
        columns = {name: [r[name] for r in result] for name in names}
    elif isinstance(result, (list, tuple)):
        columns = {"overall": list(result)}
    else:
        raise RewardOutputError(f"{spec} returned a {type(result).__name__}; expected a dict of per-sample lists")
    if "overall" not in columns:
        raise RewardOutputError(f"{spec} returned components {sorted(columns)} without 'overall'")
    out: dict[str, list[float]] = {}
    for name, values in columns.items():
        if hasattr(values, "tolist"):
            values = values.tolist()
        if not isinstance(name, str) or not isinstance(values, (list, tuple)) or len(values) != n:
            raise RewardOutputError(f"{spec}: component {name!r} is not a list of {n} scores")
        if not set(map(type, values)) <= {float, int}:  # else check the slow way (numpy scalars, junk)
            if any(isinstance(v, (str, bytes)) or not hasattr(v, "__float__") for v in values):
                raise RewardOutputError(f"{spec}: component {name!r} holds a value that is not a number")
        out[name] = list(map(float, values))
    return out
