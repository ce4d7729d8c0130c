"""One typed config schema: a tree of dataclasses, values from a YAML file, ``a.b=c`` overrides.

    cfg = load_config(SFTConfig, "recipes/configs/sft.yaml", ["optim.lr=1e-5", "trainer.nproc=4"])

Every key is checked against the schema: an unknown key names itself, its place and the valid keys.
Values are converted to the field's declared type (``int``, ``float``, ``bool``, ``str``, ``list``,
``tuple``, ``dict``, optional and literal types, nested dataclasses). Override values are parsed as
YAML scalars (``1e-5``, ``true``, ``[1, 2]``, ``null``).

What leaves the process (``config.yaml``, the wandb config, model cards, messages) goes through
:func:`redact` first: a text value under a key that looks like a secret (``api_key``, ``hf_token``,
``secret``, ``password``...) is replaced by ``<redacted>``. Pass secrets through the environment when
a run must be repeated from its ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``schema`` from the YAML file at ``path`` (optional) and dotted ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        values = loaded
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set_dotted(values, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return build(schema, values)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} holds a value, not a section")
        tree = node
    tree[parts[-1]] = value


def build(schema: type[T], values: dict[str, Any], where: str = "") -> T:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]!r}; valid keys here: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(schema)
    kwargs = {name: _convert(hints[name], value, f"{where}{name}") for name, value in values.items()}
    try:
        return schema(**kwargs)
    except TypeError as exc:  # a required field without a value
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, where + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} fits none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dicts and lists (tuples become lists), ready for YAML or JSON."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


SECRET_KEY = re.compile(r"key|token|secret|passw|credential|auth", re.IGNORECASE)
REDACTED = "<redacted>"


def redact(value: Any) -> Any:
    """``value`` (dicts, lists, dataclass trees) with every non-empty text value under a secret-looking
    key replaced by :data:`REDACTED`. Numbers and flags stay (``max_new_tokens: 256`` is not a secret)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = to_dict(value)
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and SECRET_KEY.search(k) and _secret_like(v) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _secret_like(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return any(_secret_like(v) for v in value)
    return isinstance(value, dict)


def save_config(cfg: Any, path: str | Path) -> None:
    """The run's config as YAML, secrets redacted."""
    Path(path).write_text(yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False))
