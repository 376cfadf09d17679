"""Typed configs: dataclasses loadable from YAML, overridable from the command line, saved next to outputs."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import InputError
from common.files import write_text

T = TypeVar("T")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts."""
    return dataclasses.asdict(config)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise InputError(f"config {where} must be a mapping, got {value!r}", "fix the YAML")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if annotation is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise InputError(f"config {where} must be true or false, got {value!r}", "fix the value")
    if annotation in (int, float, str):
        try:
            out = annotation(value)
        except (TypeError, ValueError):
            raise InputError(
                f"config {where} must be {annotation.__name__}, got {value!r}", "fix the value"
            ) from None
        if annotation is int and isinstance(value, float) and value != out:
            raise InputError(f"config {where} must be a whole number, got {value!r}", "fix the value")
        return out
    if origin is tuple or annotation is tuple:
        return tuple(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a (partial) nested dict; unknown keys are an error naming the key."""
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        key = f"{where}.{sorted(unknown)[0]}".lstrip(".")
        raise InputError(f"unknown config key {key!r}", f"valid keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise InputError(f"config override {dotted!r} goes through a value", "name a nested key")
    data[keys[-1]] = value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line report as one phrase: the line and column (1-based) and what is wrong."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path``, then by ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file() and (CONFIG_DIR / path).is_file():
            path = CONFIG_DIR / path
        if not path.is_file():
            raise InputError(f"config file not found: {path}", f"give a YAML path or a name in {CONFIG_DIR}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            problem = _yaml_problem(exc)
            raise InputError(f"config {path} is not valid YAML ({problem})", "fix the file") from exc
        if not isinstance(data, dict):
            raise InputError(f"config {path} must hold a mapping", "fix the file")
    for item in overrides or []:
        if "=" not in item:
            raise InputError(f"override {item!r} is not key=value", "write it as --set motion.jaw_gain=1.2")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise InputError(
                f"override {item!r} has a value YAML cannot read ({_yaml_problem(exc)})",
                "give a plain value (a number, true or false, a word) or quote it as YAML text",
            ) from exc
        _set_path(data, key.strip(), value)
    return from_dict(cls, data)


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    return write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
