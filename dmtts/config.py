"""Typed configuration: YAML files loaded into dataclasses that reject unknown keys.

Every experiment writes its resolved config next to its outputs (``exp/<name>/config.yaml``)
so a run can always be reproduced from what it wrote.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Type, TypeVar

import yaml

from dmtts.errors import DmttsError
from dmtts.utils import atomic_write_text

T = TypeVar("T")


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise DmttsError(f"config: '{where}' must be a mapping, got {type(value).__name__}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], where) if len(non_none) == 1 else value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise DmttsError(
            f"config: '{where}' must be {annotation.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def from_dict(cls: Type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys are an error, not ignored."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise DmttsError(
            f"config: unknown key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {
        name: _convert(value, hints[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    """Dataclass to plain dict (tuples become lists so YAML stays readable)."""

    def clean(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return clean(dataclasses.asdict(obj))


def read_yaml(path: str | Path) -> dict:
    """Read a YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DmttsError(f"config file '{path}' does not exist: pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DmttsError(f"config file '{path}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise DmttsError(f"config file '{path}' must hold a mapping at the top level")
    return data


def load_config(path: str | Path, cls: Type[T]) -> T:
    """Load a YAML file into dataclass ``cls``; errors name the file and the bad key."""
    data = read_yaml(path)
    try:
        return from_dict(cls, data)
    except DmttsError as e:
        raise DmttsError(f"{path}: {e}") from None


def save_config(obj: Any, path: str | Path) -> None:
    """Write a dataclass config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def check_choice(key: str, value: Any, choices: Iterable | dict[Any, str]) -> None:
    """Raise a one-line ``DmttsError`` naming the config ``key``, its ``value`` and every allowed
    value, unless ``value`` is one of ``choices``.

    ``choices``: the allowed values, or ``{value: what it means}`` to say that in the message too.
    """
    choices = choices if isinstance(choices, dict) else dict.fromkeys(choices, "")
    if value in choices:
        return
    names = [f"'{c}' ({meaning})" if meaning else f"'{c}'" for c, meaning in choices.items()]
    allowed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    raise DmttsError(f"{key} '{value}' must be {allowed}")
