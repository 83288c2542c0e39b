"""The report's verdicts on differences: significant only when the interval excludes 0, and a one-seed
comparison says what its interval does not cover. The differences are computed from per-example
results by bench.summary (the paired bootstrap of adapter_hub.stats), not written into the fixture,
so the decision rule under the report is the real one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from adapter_hub.bench.cells import pack
from adapter_hub.bench.report import difference_rows
from adapter_hub.bench.summary import summarise

TASKS = ["t1", "t2"]
N = 300  # test examples per task


def _cell(seed: int, final_on_t1: float, rng) -> dict:
    """Task 1 learnt to 0.9, then (after task 2) `final_on_t1`; task 2 learnt to 0.9."""
    rows = [[0.9, None], [final_on_t1, 0.9]]
    correct = [[None if p is None else list((rng.uniform(size=N) < p).astype(int)) for p in row] for row in rows]
    matrix = [[None if c is None else float(np.mean(c)) for c in row] for row in correct]
    matrix[0][1] = 0.5  # scored before it was learnt (future_tasks = "all")
    return {"seed": seed, "order": 0, "tasks": TASKS, "states": ["t1:1", "t2:1"], "matrix": matrix,
            "correct": [[None if c is None else pack(c) for c in row] for row in correct]}


def _run(seeds: int, other_final: float) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    strategies = {"seq": {"strategy": "seq", "cells": {}}, "replay": {"strategy": "replay", "cells": {}}}
    for s in range(seeds):
        strategies["seq"]["cells"][f"seq/s{s}"] = _cell(s, 0.5, rng)
        strategies["replay"]["cells"][f"replay/s{s}"] = _cell(s, other_final, rng)
    results = {"tasks": TASKS, "base_by_task": {"t1": 0.5, "t2": 0.5}, "strategies": strategies}
    summarise(results, final=True)
    return SimpleNamespace(results=results)


def test_verdicts_name_only_the_significant_metrics_and_qualify_one_seed():
    (row,) = difference_rows(_run(seeds=3, other_final=0.85))  # replay keeps task 1: +0.35 on it, +0.175 ACC
    assert row[:3] == ["replay − seq", "loglik", "3"] and row[3].startswith("+0.1") and "*" in row[3]
    assert row[-1].startswith("significant: ACC higher (p=0.000), BWT higher (p=0.000), F lower (p=0.000)")
    (row,) = difference_rows(_run(seeds=3, other_final=0.5))  # the same behaviour: differences are noise
    assert row[-1] == "no difference" and "*" not in row[3] + row[4] + row[5]
    (row,) = difference_rows(_run(seeds=1, other_final=0.85))
    assert row[-1].endswith("(one seed: test-example noise only, training noise not measured)")
    assert row[-1].startswith("significant: ACC higher")
