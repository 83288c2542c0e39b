"""Intervals and significance for continual-learning metrics, from per-example correctness.

A run cell (strategy × seed × order) yields, for every (row i = after task i, column j = task j), the
0/1 correctness of each of task j's test examples. Accuracy-matrix metrics are functions of those.
Two sources of noise: which test examples (n per task) and which seed. The bootstrap here resamples
both — seeds with replacement, and each task's test examples with replacement (the same example
indices in every row and every seed, since the test set is shared) — and recomputes the metric:

    bootstrap(cells, "acc")          -> Interval(mean, std over seeds, 95% percentile CI)
    paired_difference(a, b, "acc")   -> Difference(a − b, CI, two-sided p, significant = CI excludes 0)

`paired_difference` resamples the SAME seeds and examples for both strategies (they were scored on the
same test examples with the same seeds), which is what makes small real gaps detectable and keeps
noise from being called a difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("acc", "bwt", "forgetting")
# A cell: correct[i][j] = 0/1 array over task j's test examples after task i (None above the diagonal).
Cell = Sequence[Sequence[Sequence[int] | None]]


@dataclass(frozen=True)
class Interval:
    mean: float  # the metric averaged over the seeds, on the full test sets
    std: float  # its standard deviation over seeds (0 with one seed)
    low: float  # 95% bootstrap percentile interval (seeds and test examples resampled)
    high: float
    seeds: int


@dataclass(frozen=True)
class Difference:
    diff: float  # metric(a) − metric(b), averaged over seeds
    low: float
    high: float
    p_value: float  # two-sided, from the bootstrap distribution of the difference
    significant: bool  # the 95% interval excludes 0


def _stack(cells: Sequence[Cell]) -> list[np.ndarray]:
    """Per task j: an array (seeds, T, n_j) of correctness, NaN where not evaluated (above the diagonal)."""
    T = len(cells[0])
    columns = []
    for j in range(T):
        n = next(len(cells[0][i][j]) for i in range(T) if cells[0][i][j] is not None)
        col = np.full((len(cells), T, n), np.nan)
        for s, cell in enumerate(cells):
            if len(cell) != T:
                raise ValueError("every cell must have the same tasks")
            for i in range(T):
                if cell[i][j] is not None:
                    values = np.asarray(cell[i][j], dtype=float)
                    if values.shape != (n,):
                        raise ValueError(f"task {j}: {values.shape[0]} examples in one cell, {n} in another")
                    col[s, i] = values
        columns.append(col)
    return columns


def _full_matrices(columns: list[np.ndarray]) -> np.ndarray:
    """(S, T, T) accuracy matrices on the full test sets (NaN above the diagonal)."""
    import warnings

    with warnings.catch_warnings():  # rows above the diagonal are all-NaN by design
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmean(col, -1) for col in columns], -1)


def metric_of(R: np.ndarray, metric: str) -> np.ndarray:
    """The metric of accuracy matrices R (..., T, T), vectorised over leading axes (definitions as in
    adapter_hub.metrics.summarize: forgetting is max-based over the rows after task j was learnt)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    T = R.shape[-1]
    last = R[..., T - 1, :]
    if metric == "acc":
        return last.mean(-1)
    if T < 2:
        raise ValueError(f"{metric} needs at least two tasks")
    if metric == "bwt":
        return np.stack([last[..., j] - R[..., j, j] for j in range(T - 1)], -1).mean(-1)
    return np.stack([R[..., j:T - 1, j].max(-1) - last[..., j] for j in range(T - 1)], -1).mean(-1)


def _resampled_matrices(columns: list[np.ndarray], seeds: np.ndarray, examples: list[np.ndarray]) -> np.ndarray:
    """(B, S, T, T) accuracy matrices for B draws of seed indices (B, S) and example indices per task."""
    B, S = seeds.shape
    T = len(columns)
    R = np.empty((B, S, T, T))
    for j, col in enumerate(columns):
        picked = col[seeds]  # (B, S, T, n_j)
        idx = examples[j][:, None, None, :]  # (B, 1, 1, n_j): the same examples in every seed and row
        R[..., j] = np.take_along_axis(picked, np.broadcast_to(idx, picked.shape), -1).mean(-1)
    return R


def _draws(columns: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    S = columns[0].shape[0]
    seeds = rng.integers(0, S, size=(n_boot, S))
    examples = [rng.integers(0, col.shape[-1], size=(n_boot, col.shape[-1])) for col in columns]
    return seeds, examples


def bootstrap(cells: Sequence[Cell], metric: str = "acc", *, n_boot: int = 2000, seed: int = 0,
              level: float = 0.95) -> Interval:
    """Mean ± std over seeds and a bootstrap interval of `metric` for one strategy's cells (one per seed)."""
    columns = _stack(cells)
    per_seed = metric_of(_full_matrices(columns), metric)
    seeds, examples = _draws(columns, n_boot, np.random.default_rng(seed))
    draws = metric_of(_resampled_matrices(columns, seeds, examples), metric).mean(-1)  # (B,)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(cells) > 1 else 0.0,
                    float(low), float(high), len(cells))


def paired_difference(a: Sequence[Cell], b: Sequence[Cell], metric: str = "acc", *, n_boot: int = 2000,
                      seed: int = 0, level: float = 0.95) -> Difference:
    """metric(a) − metric(b) with a paired bootstrap: a[s] and b[s] share seed s and the test examples."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same seeds: {len(a)} cells vs {len(b)}")
    ca, cb = _stack(a), _stack(b)
    if [c.shape[-1] for c in ca] != [c.shape[-1] for c in cb]:
        raise ValueError("a paired comparison needs the same test examples per task")
    diff = float((metric_of(_full_matrices(ca), metric) - metric_of(_full_matrices(cb), metric)).mean())
    seeds, examples = _draws(ca, n_boot, np.random.default_rng(seed))
    draws = (metric_of(_resampled_matrices(ca, seeds, examples), metric)
             - metric_of(_resampled_matrices(cb, seeds, examples), metric)).mean(-1)
    tail = (1 - level) / 2 * 100
    low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    p = float(min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean())))
    return Difference(diff, low, high, p, bool(low > 0 or high < 0))
