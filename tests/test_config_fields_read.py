"""Every setting a user can write is read somewhere: a config field that no code of its stage reads
is a dead knob (a user sets it and nothing changes), so this test fails on it.

"Read" is textual: ``.name`` (attribute access, also through a local alias such as ``t = cfg.trainer``)
or ``"name"`` (``getattr``, ``asdict`` keys) in a module the stage's entry point imports, directly or
through other project modules (imports inside functions included)."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from rexthinker.grpo.config import GRPOConfig
from rexthinker.models.base import BaseRecipe
from rexthinker.sft.config import SFTConfig

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    base = ROOT / name.replace(".", "/")
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def project_closure(entry: str) -> set[Path]:
    """The project's source files that ``entry`` imports, transitively."""
    seen: dict[str, Path | None] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = path = module_file(name)
        if path is None:
            continue
        parts = name.split(".")
        package = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = ".".join([*package[: len(package) - node.level + 1], node.module or ""]).strip(".") if node.level else node.module
                todo += [module, *(f"{module}.{a.name}" for a in node.names)]
    return {p for p in seen.values() if p is not None}


def leaf_fields(schema: type, where: str = ""):
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from leaf_fields(type(default), f"{where}{f.name}.")
        else:
            yield f"{where}{f.name}", f.name


def unread_fields(schema: type, entry: str) -> list[str]:
    files = project_closure(entry)
    assert module_file(entry) in files and len(files) > 3
    text = "\n".join(f.read_text() for f in sorted(files))
    return [dotted for dotted, name in leaf_fields(schema) if not re.search(rf"\.{name}\b|[\"']{name}[\"']", text)]


@pytest.mark.parametrize(
    "schema, entry",
    [(SFTConfig, "rexthinker.sft.__main__"), (GRPOConfig, "rexthinker.grpo.__main__"), (BaseRecipe, "rexthinker.models.base")],
    ids=["sft", "grpo", "base"],
)
def test_every_config_field_is_read_by_its_stage(schema, entry):
    unread = unread_fields(schema, entry)
    assert not unread, f"{schema.__name__} fields read by no module of {entry}: {unread}"


def test_the_check_names_a_dead_field_and_only_it():
    @dataclasses.dataclass
    class Trainer:
        per_device_batch_size: int = 4  # read by the SFT loop
        never_read_anywhere_xyz: int = 0

    @dataclasses.dataclass
    class Config:
        trainer: Trainer = dataclasses.field(default_factory=Trainer)

    assert unread_fields(Config, "rexthinker.sft.__main__") == ["trainer.never_read_anywhere_xyz"]
