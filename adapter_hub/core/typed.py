"""Type checks for values that come from config files and the command line (TOML, --param K=V).

A dataclass's annotations say what each field takes; `build` checks every given value against them
before the dataclass is made, so a bench config with `steps = "ten"` or `tasks = "builtin:topic"`
fails with the key's name, what it takes and what it got, before anything is written anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union


def check_value(value: Any, annotation: Any, key: str) -> None:
    """Raise ValueError naming `key` unless `value` fits `annotation` (the subset our configs use)."""
    if not _fits(value, annotation):
        raise ValueError(f"{key} must be {describe(annotation)}, got {value!r} ({type(value).__name__})")


def build(kind: type, values: dict[str, Any], where: str):
    """`kind(**values)` after checking every key and value; errors start with `where` (e.g. "[train]")."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a table of settings, got {type(values).__name__}")
    hints = typing.get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {where} setting(s) {unknown}; known: {sorted(names)}")
    for key, value in values.items():
        check_value(value, hints[key], f"{where} {key}")
    try:
        return kind(**values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _fits(value: Any, annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict) and (not args or all(_fits(k, args[0]) and _fits(v, args[1])
                                                            for k, v in value.items()))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation this checker does not model: the dataclass checks it itself


def describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "unset"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        plural = {str: "strings", int: "integers", float: "numbers", dict: "tables"}
        return f"a list of {plural.get(args[0], describe(args[0])) if args else 'values'}"
    if origin is dict:
        return "a table"
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def check_like_default(value: Any, default: Any, key: str) -> None:
    """For free-form parameter dicts (strategy params): a value must have its default's kind."""
    if default is None or value is None:
        return
    if isinstance(default, bool):
        check_value(value, bool, key)
    elif isinstance(default, (int, float)):
        check_value(value, float if isinstance(default, float) else Union[int, float], key)
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{key} must be an integer, got {value!r}")
    elif isinstance(default, str):
        check_value(value, str, key)
    elif isinstance(default, (list, tuple)):
        check_value(value, list, key)
    elif isinstance(default, dict):
        check_value(value, dict, key)
