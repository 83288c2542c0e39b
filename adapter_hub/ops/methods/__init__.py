"""Merge methods, by name: a plain dict filled by the @merge_method decorator (one module per family).

Two kinds:
  "factored"  exact on factors (linear, task_arithmetic, cat): fn(adapters, weights, modules, params)
              -> {module: (A, B)}.
  "masked"    element-wise methods (TIES, DARE, magnitude pruning): fn(tensors (n, ...), weights (n,),
              params, generator) -> merged tensor. The same function runs on each module's dense ΔW
              or, with space="core", on the n small core matrices of the Core Space framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MergeMethod:
    name: str
    kind: str  # "factored" | "masked"
    fn: Callable
    title: str
    reference: str  # the paper (or code) that defines it
    needs_density: bool = False
    options: tuple[str, ...] = field(default=())


METHODS: dict[str, MergeMethod] = {}


def merge_method(name: str, *, kind: str, title: str, reference: str, needs_density: bool = False,
                 options: tuple[str, ...] = ()):
    def register(fn: Callable) -> Callable:
        METHODS[name] = MergeMethod(name, kind, fn, title, reference, needs_density, options)
        return fn
    return register


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


from adapter_hub.ops.methods import linear as _linear  # noqa: E402,F401  (registers its methods)
from adapter_hub.ops.methods import masked as _masked  # noqa: E402,F401
