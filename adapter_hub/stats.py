"""Intervals and significance for continual-learning metrics, from per-example correctness.

A run cell (strategy × seed × order) yields, for every (row i = after task i, column j = task j), the
0/1 correctness of each of task j's test examples. Accuracy-matrix metrics are functions of those.
Two sources of noise: which test examples (n per task) and which seed. The bootstrap here resamples
both — seeds with replacement, and each task's test examples with replacement (the same example
indices in every row and every seed, since the test set is shared) — and recomputes the metric:

    bootstrap(cells, "acc")          -> Interval(mean, std over seeds, 95% percentile CI)
    paired_difference(a, b, "acc")   -> Difference(a − b, CI, two-sided p, significant = CI excludes 0)

Cells may have learnt the tasks in different orders (`orders[s][j]` = the task cell s learnt j-th):
examples are drawn per task, and each cell's metric is computed in its own order.

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


Orders = Sequence[Sequence[int]] | None  # orders[s][j] = the task learnt j-th in cell s (None: all the same)


def _orders(cells: Sequence[Cell], orders: Orders) -> np.ndarray:
    T = len(cells[0])
    if orders is None:
        return np.tile(np.arange(T), (len(cells), 1))
    out = np.asarray(orders, dtype=int)
    if out.shape != (len(cells), T) or any(sorted(row) != list(range(T)) for row in out.tolist()):
        raise ValueError(f"orders must give a permutation of the {T} tasks for each of the {len(cells)} cells")
    return out


def _stack(cells: Sequence[Cell], orders: np.ndarray) -> list[np.ndarray]:
    """Per task t: an array (seeds, T, n_t) of correctness after each step, NaN where task t was not
    evaluated. A cell's column j is the task it learnt j-th (orders[s][j])."""
    T = len(cells[0])
    columns = []
    for t in range(T):
        n = None
        col = None
        for s, cell in enumerate(cells):
            if len(cell) != T:
                raise ValueError("every cell must have the same tasks")
            j = int(np.flatnonzero(orders[s] == t)[0])
            for i in range(T):
                if cell[i][j] is None:
                    continue
                values = np.asarray(cell[i][j], dtype=float)
                if n is None:
                    n = values.shape[0]
                    col = np.full((len(cells), T, n), np.nan)
                if values.shape != (n,):
                    raise ValueError(f"task {t}: {values.shape[0]} examples in one cell, {n} in another")
                col[s, i] = values
        if col is None:
            raise ValueError(f"task {t} was never evaluated")
        columns.append(col)
    return columns


def _by_position(R_task: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """(..., S, T, T) matrices with columns by task -> columns by learning position, per cell."""
    idx = np.broadcast_to(orders[..., :, None, :], R_task.shape)
    return np.take_along_axis(R_task, idx, -1)


def _full_matrices(columns: list[np.ndarray], orders: np.ndarray) -> np.ndarray:
    """(S, T, T) accuracy matrices on the full test sets (NaN above the diagonal)."""
    import warnings

    with warnings.catch_warnings():  # rows above the diagonal are all-NaN by design
        warnings.simplefilter("ignore", RuntimeWarning)
        return _by_position(np.stack([np.nanmean(col, -1) for col in columns], -1), orders)


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


def _resampled_matrices(columns: list[np.ndarray], orders: np.ndarray, seeds: np.ndarray,
                        examples: list[np.ndarray]) -> np.ndarray:
    """(B, S, T, T) accuracy matrices for B draws of seed indices (B, S) and example indices per task."""
    B, S = seeds.shape
    T = len(columns)
    R = np.empty((B, S, T, T))
    for t, col in enumerate(columns):
        picked = col[seeds]  # (B, S, T, n_t)
        idx = examples[t][:, None, None, :]  # (B, 1, 1, n_t): the same examples in every seed and row
        R[..., t] = np.take_along_axis(picked, np.broadcast_to(idx, picked.shape), -1).mean(-1)
    return _by_position(R, orders[seeds])


def example_draws(sizes: Sequence[int], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap draws of test examples: per task, (n_boot, n) indices into its n examples, with
    replacement. Every resampled statistic in adapter-hub draws its examples here."""
    return [rng.integers(0, n, size=(n_boot, n)) for n in sizes]


def percentile_interval(draws: np.ndarray, level: float = 0.95, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The central `level` percentile interval of bootstrap draws (draws that are NaN are left out)."""
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=axis)
    return low, high


def _draws(columns: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    S = columns[0].shape[0]
    seeds = rng.integers(0, S, size=(n_boot, S))
    return seeds, example_draws([col.shape[-1] for col in columns], n_boot, rng)


def bootstrap(cells: Sequence[Cell], metric: str = "acc", *, orders: Orders = None, n_boot: int = 2000,
              seed: int = 0, level: float = 0.95) -> Interval:
    """Mean ± std over cells (seeds, orders) and a bootstrap interval of `metric` for one strategy."""
    order = _orders(cells, orders)
    columns = _stack(cells, order)
    per_seed = metric_of(_full_matrices(columns, order), metric)
    seeds, examples = _draws(columns, n_boot, np.random.default_rng(seed))
    draws = metric_of(_resampled_matrices(columns, order, seeds, examples), metric).mean(-1)  # (B,)
    low, high = percentile_interval(draws, level)
    return Interval(float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(cells) > 1 else 0.0,
                    float(low), float(high), len(cells))


def paired_difference(a: Sequence[Cell], b: Sequence[Cell], metric: str = "acc", *, orders: Orders = None,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Difference:
    """metric(a) − metric(b) with a paired bootstrap: a[s] and b[s] share seed s, task order orders[s]
    and the test examples."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same seeds: {len(a)} cells vs {len(b)}")
    order = _orders(a, orders)
    ca, cb = _stack(a, order), _stack(b, order)
    if [c.shape[-1] for c in ca] != [c.shape[-1] for c in cb]:
        raise ValueError("a paired comparison needs the same test examples per task")
    diff = float((metric_of(_full_matrices(ca, order), metric) - metric_of(_full_matrices(cb, order), metric)).mean())
    seeds, examples = _draws(ca, n_boot, np.random.default_rng(seed))
    draws = (metric_of(_resampled_matrices(ca, order, seeds, examples), metric)
             - metric_of(_resampled_matrices(cb, order, seeds, examples), metric)).mean(-1)
    low, high = (float(v) for v in percentile_interval(draws, level))
    p = float(min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean())))
    return Difference(diff, low, high, p, bool(low > 0 or high < 0))


def seen_accuracy(R: np.ndarray) -> np.ndarray:
    """(..., T, T) matrices by learning position -> (..., T): after step i, the mean accuracy on the
    tasks learnt so far (columns 0..i) — the curve a continual learner is judged by."""
    T = R.shape[-1]
    return np.stack([R[..., i, :i + 1].mean(-1) for i in range(T)], -1)


def curve(cells: Sequence[Cell], *, orders: Orders = None, n_boot: int = 2000, seed: int = 0,
          level: float = 0.95) -> list[Interval]:
    """seen_accuracy after each step: mean ± std over cells and a bootstrap interval per step (seeds
    and test examples resampled, as in `bootstrap`)."""
    order = _orders(cells, orders)
    columns = _stack(cells, order)
    per_seed = seen_accuracy(_full_matrices(columns, order))  # (S, T)
    seeds, examples = _draws(columns, n_boot, np.random.default_rng(seed))
    draws = seen_accuracy(_resampled_matrices(columns, order, seeds, examples)).mean(1)  # (B, T)
    lows, highs = percentile_interval(draws, level, axis=0)
    std = per_seed.std(0, ddof=1) if len(cells) > 1 else np.zeros(per_seed.shape[1])
    return [Interval(float(m), float(s), float(lo), float(hi), len(cells))
            for m, s, lo, hi in zip(per_seed.mean(0), std, lows, highs)]


def learnt_margin(diagonals: Sequence[Sequence[int]], base: Sequence[int], *, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> Interval:
    """How far a task's accuracy right after it was learnt (its diagonal entry: 0/1 per test example, one
    row per seed) lies above the base model's on the same examples: the mean over seeds of
    (diagonal − base), with a bootstrap interval that resamples the seeds and the examples (the same
    examples for both). A task whose interval reaches 0 was not learnt beyond test-example noise, and
    its forgetting numbers measure nothing."""
    D = np.asarray(diagonals, dtype=float)  # (S, n)
    b = np.asarray(base, dtype=float)  # (n,)
    if D.ndim != 2 or D.shape[1] != b.shape[0]:
        raise ValueError(f"the diagonal has {D.shape[-1]} examples per seed, the base model {b.shape[0]}")
    per_seed = D.mean(1) - b.mean()
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, D.shape[0], size=(n_boot, D.shape[0]))
    (examples,) = example_draws([b.shape[0]], n_boot, rng)  # (B, n)
    drawn = np.take_along_axis(D[seeds], examples[:, None, :], -1).mean(-1)  # (B, S)
    draws = drawn.mean(1) - np.take_along_axis(b[None, :], examples, -1).mean(-1)
    low, high = percentile_interval(draws, level)
    return Interval(float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(D) > 1 else 0.0, float(low),
                    float(high), len(D))
