"""Bootstrap intervals and paired significance for accuracy-matrix metrics, against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adapter_hub import stats
from adapter_hub.metrics import summarize
from adapter_hub.stats import bootstrap, metric_of, paired_difference


def one_task(correct):
    return [[list(correct)]]


def binomial_quantile(n: int, p: float, q: float) -> float:
    """Smallest k/n with P(X <= k) >= q for X ~ Binomial(n, p): the exact bootstrap distribution of a mean."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k / n
    return 1.0


def test_interval_of_one_accuracy_matches_the_exact_binomial_quantiles():
    """One seed, one task, 35 of 50 correct: resampling the examples makes the mean Binomial(50, 0.7)/50,
    whose 2.5% and 97.5% quantiles are computed exactly here."""
    correct = [1] * 35 + [0] * 15
    interval = bootstrap([one_task(correct)], "acc", n_boot=20_000, seed=1)
    assert interval.mean == pytest.approx(0.7) and interval.std == 0.0 and interval.seeds == 1
    assert interval.low == pytest.approx(binomial_quantile(50, 0.7, 0.025), abs=0.02 + 1e-9)
    assert interval.high == pytest.approx(binomial_quantile(50, 0.7, 0.975), abs=0.02 + 1e-9)
    assert bootstrap([one_task([1] * 20)], "acc").low == 1.0  # nothing to resample into doubt


def test_seeds_are_resampled_too():
    """Two seeds at 0.2 and 0.8 on a large test set: the interval spans the seeds, not the examples."""
    n = 2000
    cells = [one_task([1] * int(0.2 * n) + [0] * int(0.8 * n)), one_task([1] * int(0.8 * n) + [0] * int(0.2 * n))]
    interval = bootstrap(cells, "acc", n_boot=4000)
    assert interval.mean == pytest.approx(0.5) and interval.std == pytest.approx(math.sqrt(0.18))
    # Exactly: a quarter of the draws pick the 0.2 seed twice (and then the same test examples for both,
    # so its accuracy varies with sd √(0.2·0.8/n)); the 2.5% point is that cluster's 10% quantile.
    # Symmetrically at the top. An interval of [0, 1] fails this.
    spread = 1.2816 * math.sqrt(0.2 * 0.8 / n)  # the normal 10% quantile times the resampled accuracy's sd
    assert interval.low == pytest.approx(0.2 - spread, abs=0.003)
    assert interval.high == pytest.approx(0.8 + spread, abs=0.003)


def test_vectorised_metrics_equal_summarize():
    rng = np.random.default_rng(0)
    for T in (2, 3, 4):
        R = rng.uniform(size=(5, T, T))
        for b in range(5):
            expected = summarize(R[b].tolist())
            for key in ("acc", "bwt", "forgetting"):
                assert metric_of(R, key)[b] == pytest.approx(expected[key])


def _cell(rng, T, n, p):
    return [[list((rng.uniform(size=n) < p[i][j]).astype(int)) if j <= i else None for j in range(T)]
            for i in range(T)]


def test_paired_difference_calls_only_real_differences_significant():
    rng = np.random.default_rng(3)
    T, n = 2, 300
    good = [[0.9, 0.0], [0.85, 0.9]]
    bad = [[0.9, 0.0], [0.4, 0.9]]  # forgets task 1
    a = [_cell(rng, T, n, good) for _ in range(2)]
    b = [_cell(rng, T, n, bad) for _ in range(2)]
    same = paired_difference(a, a, "acc")
    assert same.diff == 0.0 and not same.significant and same.p_value == 1.0
    real = paired_difference(a, b, "bwt")
    assert real.significant and real.diff > 0.3 and real.p_value < 0.01 and real.low > 0
    # b' differs from a in one answer out of 300 on one cell: inside the noise, so no difference
    nudged = [[[list(row[j]) if row[j] is not None else None for j in range(T)] for row in cell] for cell in a]
    nudged[0][1][0][nudged[0][1][0].index(1)] = 0
    tiny = paired_difference(a, nudged, "acc")
    assert 0 < tiny.diff < 0.01 and not tiny.significant


def test_bad_inputs():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([one_task([1, 0])], [one_task([1, 0])] * 2)
    with pytest.raises(ValueError, match="needs at least two tasks"):
        bootstrap([one_task([1, 0])], "bwt")
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap([one_task([1, 0])], "joy")


def test_cells_learnt_in_another_order_are_resampled_by_task():
    """A cell that learnt the tasks in reverse: its columns are mapped back to tasks before examples are
    drawn, so it equals the same data written in the canonical order, and its metrics are those of its
    own order (BWT over the task it learnt first)."""
    rng = np.random.default_rng(5)
    T = 3
    sizes = [30, 45, 60]  # different test sizes per task make a wrong mapping fail loudly
    p = [[0.9, 0, 0], [0.7, 0.8, 0], [0.5, 0.6, 0.9]]
    forward = [[list((rng.uniform(size=sizes[j]) < p[i][j]).astype(int)) if j <= i else None for j in range(T)]
               for i in range(T)]
    # a cell that learnt the order 2, 0, 1: its position j holds task order[j]'s examples
    order = [2, 0, 1]
    cell = [[list((rng.uniform(size=sizes[order[j]]) < p[i][j]).astype(int)) if j <= i else None for j in range(T)]
            for i in range(T)]
    got = bootstrap([forward, cell], "bwt", orders=[[0, 1, 2], order], n_boot=500, seed=2)
    R_cell = [[np.mean(cell[i][j]) if j <= i else np.nan for j in range(T)] for i in range(T)]
    R_forward = [[np.mean(forward[i][j]) if j <= i else np.nan for j in range(T)] for i in range(T)]
    expected = (metric_of(np.array(R_forward), "bwt") + metric_of(np.array(R_cell), "bwt")) / 2
    assert got.mean == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="permutation"):
        bootstrap([forward], "acc", orders=[[0, 0, 1]])
    with pytest.raises(ValueError, match="examples in one cell"):  # without the orders the sizes clash
        bootstrap([forward, cell], "acc")


def test_curve_is_the_seen_task_accuracy_with_the_bootstrap_of_a_direct_loop():
    """stats.curve on a hand-made two-seed, two-task case: the means are hand-computed and the interval
    is the percentile interval of a plain loop over the same draws (seeds, then each task's examples)."""
    import numpy as np

    a = [[[1, 0, 1, 1], None], [[1, 0, 0, 1], [0, 1, 1]]]  # seed 0: after task 1, after task 2
    b = [[[1, 1, 1, 1], None], [[0, 0, 1, 1], [1, 1, 1]]]
    points = stats.curve([a, b], n_boot=500, seed=7)
    assert [p.mean for p in points] == pytest.approx([(0.75 + 1.0) / 2, ((0.5 + 2 / 3) / 2 + (0.5 + 1.0) / 2) / 2])
    assert [p.seeds for p in points] == [2, 2]
    rng = np.random.default_rng(7)
    seeds = rng.integers(0, 2, size=(500, 2))
    ex = [rng.integers(0, 4, size=(500, 4)), rng.integers(0, 3, size=(500, 3))]
    cells = [a, b]
    draws = np.zeros((500, 2))
    for k in range(500):
        for s in seeds[k]:
            c = cells[s]
            first = np.mean(np.asarray(c[0][0])[ex[0][k]])
            second = (np.mean(np.asarray(c[1][0])[ex[0][k]]) + np.mean(np.asarray(c[1][1])[ex[1][k]])) / 2
            draws[k] += [first / 2, second / 2]
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    assert [p.low for p in points] == pytest.approx(low.tolist())
    assert [p.high for p in points] == pytest.approx(high.tolist())
