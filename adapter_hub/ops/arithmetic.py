"""Exact arithmetic on factors: the result's ΔW equals the arithmetic on the inputs' ΔW, to rounding.

Adding adapters concatenates their ranks: [B'_1 … B'_n]·[A_1; …; A_n] = Σ B'_i·A_i, so nothing is
approximated (PEFT's `linear` instead mixes A's and B's separately, (Σ√w B)(Σ√w A), whose cross terms
are not Σ w·B·A: peft #1155). Use reduce_rank afterwards to bring the rank back down, optimally.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.ops.align import (
    check_adapters,
    check_weights,
    from_factors,
    provenance,
)


def weighted_sum_factors(adapters: Sequence[LoraAdapter], weights: Sequence[float], modules: Sequence[str]
                         ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A, B)} with ΔW = Σ w_i·s_i·B_i·A_i exactly (rank = Σ r_i; missing modules contribute 0)."""
    out = {}
    for m in modules:
        As, Bs = [], []
        for a, w in zip(adapters, weights):
            pair = a.folded(m)
            if pair is not None:
                As.append(pair[0])
                Bs.append(pair[1] * w)
        out[m] = (torch.cat(As, dim=0), torch.cat(Bs, dim=1))  # (ΣR, in), (out, ΣR)
    return out


def linear(adapters: Sequence[LoraAdapter], weights: Sequence[float] | None = None, *,
           allow_partial: bool = False) -> LoraAdapter:
    """Σ w_i·ΔW_i, exactly (weights default to 1)."""
    modules = check_adapters(adapters, allow_partial=allow_partial)
    weights = check_weights(weights, len(adapters))
    return from_factors(weighted_sum_factors(adapters, weights, modules), adapters[0],
                        provenance("linear", adapters, weights=weights))


def task_arithmetic(adapters: Sequence[LoraAdapter], weights: Sequence[float] | None = None, *, lam: float = 1.0,
                    allow_partial: bool = False) -> LoraAdapter:
    """λ·Σ w_i·ΔW_i (Ilharco et al. 2023, "Editing models with task arithmetic", arXiv:2212.04089)."""
    weights = [lam * w for w in check_weights(weights, len(adapters))]
    check_weights([lam], 1)
    modules = check_adapters(adapters, allow_partial=allow_partial)
    return from_factors(weighted_sum_factors(adapters, weights, modules), adapters[0],
                        provenance("task_arithmetic", adapters, weights=weights, **{"lambda": lam}))


def add(*adapters: LoraAdapter, allow_partial: bool = False) -> LoraAdapter:
    modules = check_adapters(list(adapters), allow_partial=allow_partial)
    return from_factors(weighted_sum_factors(adapters, [1.0] * len(adapters), modules), adapters[0],
                        provenance("add", adapters))


def subtract(a: LoraAdapter, b: LoraAdapter, *, allow_partial: bool = False) -> LoraAdapter:
    modules = check_adapters([a, b], allow_partial=allow_partial)
    return from_factors(weighted_sum_factors([a, b], [1.0, -1.0], modules), a, provenance("subtract", [a, b]))


def scale(adapter: LoraAdapter, factor: float) -> LoraAdapter:
    """factor·ΔW (the rank is unchanged)."""
    (factor,) = check_weights([factor], 1)
    modules = check_adapters([adapter])
    return from_factors(weighted_sum_factors([adapter], [factor], modules), adapter,
                        provenance("scale", [adapter], factor=factor))


def negate(adapter: LoraAdapter) -> LoraAdapter:
    """−ΔW: attach it to remove a behaviour the adapter added."""
    modules = check_adapters([adapter])
    return from_factors(weighted_sum_factors([adapter], [-1.0], modules), adapter, provenance("negate", [adapter]))
