"""Continual-learning metrics from the accuracy matrix R (R[i][j] = accuracy on task j after training
task i, i, j = 1..T; entries above the diagonal may be NaN when future tasks were not evaluated):

    ACC          = mean_j R[T][j]                                      final average accuracy
    BWT          = mean_{j<T} (R[T][j] − R[j][j])                      backward transfer (Lopez-Paz & Ranzato 2017)
    FWT          = mean_{j>1} (R[j−1][j] − b_j)                        forward transfer; b_j = the base model's accuracy
    forgetting   = mean_{j<T} (max_{j≤l<T} R[l][j] − R[T][j])          Chaudhry et al. 2018 ("max" forgetting): the
                                                                       max over the rows after task j was learnt (a
                                                                       row before it is forward transfer, not
                                                                       knowledge that can be lost)
    forgetting_first = mean_{j<T} (R[j][j] − R[T][j])                  Avalanche's definition ("first" forgetting)
    intransigence    = mean_k (R*[k] − R[k][k])                        Chaudhry et al. 2018; R* from a joint (mtl) run

Each is None when its inputs are missing (T = 1, no base accuracies, no reference, NaN entries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

FORGETTING_DEFINITIONS = {
    "forgetting": "max_{j<=l<T} R[l][j] - R[T][j] (Chaudhry et al. 2018)",
    "forgetting_first": "R[j][j] - R[T][j] (Avalanche)",
}


def _matrix(R: Any) -> np.ndarray:
    m = np.array([[np.nan if v is None else float(v) for v in row] for row in R], dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square and non-empty (T x T), got shape {m.shape}")
    if np.isnan(m[np.tril_indices(len(m))]).any():
        raise ValueError("the accuracy matrix needs every entry on and below the diagonal (tasks already learnt)")
    return m


def summarize(R: Sequence[Sequence[float | None]] | np.ndarray, base: Sequence[float] | None = None,
              reference: Sequence[float] | Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    """ACC, BWT, FWT, forgetting (max), forgetting_first (Avalanche), intransigence (None where not computable).

    base: the base model's accuracy per task (b_j), for FWT. reference: R* per task, or a whole matrix
    from a joint-training run (its diagonal is used), for intransigence.
    """
    m = _matrix(R)
    T = m.shape[0]
    last = m[T - 1]
    out: dict[str, Any] = {"acc": float(np.mean(last)), "bwt": None, "fwt": None, "forgetting": None,
                           "forgetting_first": None, "intransigence": None, "intransigence_per_task": None}
    if T > 1:
        out["bwt"] = float(np.mean([last[j] - m[j, j] for j in range(T - 1)]))
        out["forgetting"] = float(np.mean([np.max(m[j:T - 1, j]) - last[j] for j in range(T - 1)]))
        out["forgetting_first"] = float(np.mean([m[j, j] - last[j] for j in range(T - 1)]))
        if base is not None:
            if len(base) != T:
                raise ValueError(f"base has {len(base)} accuracies for {T} tasks")
            fwt = [m[j - 1, j] - float(base[j]) for j in range(1, T)]
            out["fwt"] = None if any(math.isnan(v) for v in fwt) else float(np.mean(fwt))
    if reference is not None:
        ref = np.array(reference, dtype=float)
        ref = np.diag(ref) if ref.ndim == 2 else ref
        if ref.shape != (T,):
            raise ValueError(f"reference has shape {ref.shape}; expected {T} accuracies or a {T}x{T} matrix")
        per_task = [float(ref[k] - m[k, k]) for k in range(T)]
        out["intransigence_per_task"] = per_task
        out["intransigence"] = float(np.mean(per_task))
    return out
