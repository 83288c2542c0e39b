"""The catalogue of merge methods, by name: a plain dict filled by the @merge_method decorator (the
method modules, one per family, register themselves when adapter_hub.ops.methods imports them).

Two kinds:
  "factored"  exact on factors (linear, task_arithmetic, cat): fn(adapters, weights, modules, params)
              -> {module: (A, B)}.
  "factored" also covers the spectral methods (Iso-C, Iso-CTS, TSV, KnOTS-TIES): SVDs of the task
              updates taken from the factors, the result returned as factors (spectral.py).
  "masked"    element-wise methods (TIES, DARE, magnitude pruning): fn(tensors (n, ...), weights (n,),
              params, generator) -> merged tensor. The same function runs on each module's dense ΔW
              or, with space="core", on the n small core matrices of the Core Space framework.

Each method declares the parameters it takes (as mergekit's ConfigParameterDef does): a parameter a
method does not take is an error naming the method and what it takes, never silently recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

REQUIRED = object()  # a Param default meaning "the caller must give it"


@dataclass(frozen=True)
class Param:
    name: str
    default: Any = REQUIRED
    help: str = ""
    choices: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None  # (low, high]: low excluded, high included

    def check(self, value: Any, method: str) -> Any:
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"merge method {method!r}: {self.name} must be one of {list(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"merge method {method!r}: {self.name} must be a finite number, got {value!r}")
        if self.bounds is not None and not self.bounds[0] < float(value) <= self.bounds[1]:
            low, high = self.bounds
            where = f"> {low:g}" if high == math.inf else f"in ({low:g}, {high:g}]"
            raise ValueError(f"merge method {method!r}: {self.name} must be {where}, got {value!r}")
        return float(value)


DENSITY = Param("density", help="fraction of each task vector's entries kept, in (0, 1]", bounds=(0.0, 1.0))
LAMBDA = Param("lambda", 1.0, help="scale of the merged task vector")
DIVISOR = Param("divisor", "count", choices=("count", "weights"),
                help="disjoint mean over agreeing inputs: their count (paper, PEFT) or their signed weight sum (mergekit)")
ELECT = Param("elect", "unweighted", choices=("unweighted", "weighted"),
              help="sign election on the trimmed task vectors (paper, PEFT) or on the weighted ones (mergekit)")


@dataclass(frozen=True)
class MergeMethod:
    name: str
    kind: str  # "factored" | "masked"
    fn: Callable
    title: str
    reference: str  # the paper (or code) that defines it
    params: tuple[Param, ...] = field(default=())
    random: bool = False  # draws random masks (its seed is part of what it did)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The full parameter set: given values checked, defaults filled; unknown or missing -> ValueError."""
        takes = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(takes))
        if unknown:
            offered = ", ".join(sorted(takes)) or "no parameters"
            raise ValueError(f"merge method {self.name!r} does not take {', '.join(unknown)}; it takes {offered}")
        out = {}
        for name, p in takes.items():
            if name in given:
                out[name] = p.check(given[name], self.name)
            elif p.default is REQUIRED:
                raise ValueError(f"merge method {self.name!r} needs {name} ({p.help})")
            else:
                out[name] = p.default
        return out


METHODS: dict[str, MergeMethod] = {}


def merge_method(name: str, *, kind: str, title: str, reference: str, params: tuple[Param, ...] = (),
                 random: bool = False):
    def register(fn: Callable) -> Callable:
        METHODS[name] = MergeMethod(name, kind, fn, title, reference, params, random)
        return fn
    return register


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]
