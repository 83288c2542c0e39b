"""What is computed from a run's cells (numpy only): each cell's metrics, each strategy's metrics
averaged over its cells with 95% bootstrap intervals over seeds and test examples (stats.bootstrap),
and every strategy against a baseline by a paired bootstrap over the same seeds and test examples.

A cell stores its accuracy matrix and the 0/1 correctness of every test example in every (row,
column), packed as hex bits (bench.cells.pack), so intervals and paired tests can be recomputed from
the registry at any time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from adapter_hub import stats
from adapter_hub.bench.cells import unpack
from adapter_hub.metrics import summarize

INTERVAL_METRICS = stats.METRICS  # acc, bwt, forgetting


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def cell_metrics(cell: dict[str, Any], base: dict[str, float], reference: dict[str, Any] | None) -> dict[str, Any]:
    """The cell's metrics; FWT from the base model's accuracy per task, intransigence from the mtl
    cell of the same seed and order (`reference`)."""
    order = cell["tasks"]
    ref = reference["matrix"] if reference is not None and reference.get("matrix") else None
    return _clean(summarize(cell["matrix"], base=[base[t] for t in order], reference=ref))


def _task_order(cell: dict[str, Any], canonical: list[str]) -> list[int]:
    return [canonical.index(t) for t in cell["tasks"]]


def _correctness(cell: dict[str, Any]) -> list[list[list[int] | None]]:
    return [[None if c is None else unpack(c) for c in row] for row in cell["correct"]]


def aggregate(entry: dict[str, Any], canonical: list[str], base: dict[str, float],
              references: dict[str, dict[str, Any]], n_boot: int = 2000,
              base_correct: dict[str, Any] | None = None) -> None:
    """Fill a strategy's summary from its evaluated cells, in place: metrics (mean over cells),
    intervals, the mean matrix of the first order's cells, the number of cells done."""
    done = {k: c for k, c in entry["cells"].items() if c.get("matrix") is not None}
    for key, cell in done.items():
        cell["metrics"] = cell_metrics(cell, base, references.get(_pair_key(cell)))
    entry["cells_done"] = len(done)
    if not done:
        return
    cells = list(done.values())
    keys = sorted({k for c in cells for k in c["metrics"] if not k.endswith("_per_task")})
    entry["metrics"] = {k: _mean([c["metrics"].get(k) for c in cells]) for k in keys}
    first = [c for c in cells if c["order"] == cells[0]["order"]]
    stacked = np.array([[[np.nan if v is None else v for v in row] for row in c["matrix"]] for c in first], dtype=float)
    mean = stacked.mean(axis=0)  # an entry some cell did not score (future_tasks = "next") stays None
    entry["matrix"] = [[None if np.isnan(v) else float(v) for v in row] for row in mean]
    entry["matrix_tasks"] = first[0]["tasks"]
    entry["states"] = cells[0]["states"]
    entry["train_seconds"] = round(sum(c.get("train_seconds") or 0.0 for c in cells), 2)
    entry["eval_seconds"] = round(sum(c.get("eval_seconds") or 0.0 for c in cells), 2)
    entry["seeds"] = sorted({c["seed"] for c in cells})
    if len(canonical) < 2 or not all(c.get("correct") for c in cells):
        return
    orders = [_task_order(c, canonical) for c in cells]
    correct = [_correctness(c) for c in cells]
    entry["intervals"] = {m: vars(stats.bootstrap(correct, m, orders=orders, n_boot=n_boot)) for m in INTERVAL_METRICS}
    if base_correct:
        entry["competence"] = competence(cells, correct, base_correct, n_boot)


def competence(cells: list[dict[str, Any]], correct: list, base_correct: dict[str, Any], n_boot: int
               ) -> dict[str, dict[str, Any]]:
    """Per task: how far its accuracy right after it was learnt lies above the base model's (mean over
    cells, 95% interval over seeds and test examples) and whether it was learnt at all (the interval
    excludes 0). Forgetting of a task that was not learnt measures nothing."""
    out = {}
    for task, packed in base_correct.items():
        diagonal = []
        for cell, bits in zip(cells, correct):
            if task in cell["tasks"]:
                j = cell["tasks"].index(task)
                diagonal.append(bits[j][j])
        if diagonal:
            margin = stats.learnt_margin(diagonal, unpack(packed), n_boot=n_boot)
            out[task] = {**vars(margin), "learnt": margin.low > 0}
    return out


def strategy_curve(entry: dict[str, Any], canonical: list[str], n_boot: int = 2000) -> list[dict[str, Any]] | None:
    """A strategy's seen-task accuracy after each step with its interval over cells (stats.curve);
    None when its cells carry no per-example correctness (older runs) or none is evaluated."""
    cells = [c for c in entry.get("cells", {}).values() if c.get("matrix") is not None]
    if not cells or not all(c.get("correct") for c in cells):
        return None
    orders = [_task_order(c, canonical) for c in cells]
    return [vars(iv) for iv in stats.curve([_correctness(c) for c in cells], orders=orders, n_boot=n_boot)]


def _pair_key(cell: dict[str, Any]) -> tuple:
    return cell["seed"], tuple(cell["tasks"])


def references_of(strategies: dict[str, Any], names: dict[str, str]) -> dict[tuple, dict[str, Any]]:
    """The mtl cells (the R* of intransigence), keyed by (seed, order)."""
    out = {}
    for label, entry in strategies.items():
        if names.get(label) == "mtl":
            for cell in entry["cells"].values():
                if cell.get("matrix") is not None:
                    out.setdefault(_pair_key(cell), cell)
    return out


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(np.mean(numbers)) if numbers and len(numbers) == len(values) else None


def differences(strategies: dict[str, Any], canonical: list[str], baseline: str, n_boot: int = 2000
                ) -> dict[str, dict[str, dict[str, Any]]]:
    """{label: {metric: Difference as dict}} for every strategy against `baseline`, paired over the
    cells (seed, order) both have evaluated."""
    if baseline not in strategies or len(canonical) < 2:
        return {}
    base_cells = {_pair_key(c): c for c in strategies[baseline]["cells"].values() if c.get("correct")}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for label, entry in strategies.items():
        if label == baseline:
            continue
        mine = {_pair_key(c): c for c in entry["cells"].values() if c.get("correct")}
        shared = [k for k in base_cells if k in mine]
        if not shared:
            continue
        orders = [_task_order(mine[k], canonical) for k in shared]
        a = [_correctness(mine[k]) for k in shared]
        b = [_correctness(base_cells[k]) for k in shared]
        out[label] = {m: {**vars(stats.paired_difference(a, b, m, orders=orders, n_boot=n_boot)), "cells": len(shared)}
                      for m in INTERVAL_METRICS}
    return out


def default_baseline(strategies: dict[str, Any], names: dict[str, str]) -> str | None:
    """The label that differences are taken against: the `seq` strategy when there is one, else the first."""
    for label in strategies:
        if names.get(label) == "seq":
            return label
    return next(iter(strategies), None)


def summarise(results: dict[str, Any], final: bool = False) -> None:
    """Recompute every strategy's summary, intervals and the differences against the baseline, in place:
    for the primary scorer at the top level, for each other scorer under entry["also"][scorer] and
    results["differences_also"][scorer], and format forgetting where both scorers ran."""
    n_boot = 2000 if final else 400  # intermediate summaries only need to be indicative
    _summarise_one(results, n_boot)
    extra = scorers_of(results)[1:]
    for name in extra:
        view = scorer_view(results, name)
        _summarise_one(view, n_boot)
        for label, entry in view["strategies"].items():
            results["strategies"][label].setdefault("also", {})[name] = {
                k: entry[k] for k in ("metrics", "intervals", "matrix", "competence", "cells_done") if k in entry}
        results.setdefault("differences_also", {})[name] = view.get("differences", {})
    if {"generate", "loglik"} <= set(scorers_of(results)):
        for entry in results["strategies"].values():
            found = format_forgetting(results, entry, n_boot)
            if found is not None:
                entry["format_forgetting"] = found


def _summarise_one(results: dict[str, Any], n_boot: int) -> None:
    strategies = results["strategies"]
    names = {label: entry["strategy"] for label, entry in strategies.items()}
    references = references_of(strategies, names)
    for entry in strategies.values():
        aggregate(entry, results["tasks"], results.get("base_by_task", {}), references, n_boot,
                  results.get("base_correct"))
    baseline = default_baseline(strategies, names)
    if baseline is not None:
        results["baseline"] = baseline
        results["differences"] = differences(strategies, results["tasks"], baseline, n_boot)


def scorers_of(results: dict[str, Any]) -> list[str]:
    """The scorers a run scored with, the primary first (older runs: their one scorer)."""
    return list(results.get("scorers") or [results.get("scorer") or "loglik"])


def scorer_view(results: dict[str, Any], scorer: str) -> dict[str, Any]:
    """The run as `scorer` (one of its extra scorers) saw it: every cell's matrix and per-example
    results, and the base model's, taken from what that scorer recorded beside the primary."""
    base_also = (results.get("base_also") or {}).get(scorer, {})
    view = {"tasks": results["tasks"], "scorer": scorer, "base_by_task": {t: v["accuracy"] for t, v in base_also.items()},
            "base_correct": {t: v["correct"] for t, v in base_also.items()}, "strategies": {}}
    for label, entry in results["strategies"].items():
        cells = {key: {**cell, **cell["also"][scorer]} for key, cell in entry["cells"].items()
                 if (cell.get("also") or {}).get(scorer)}
        view["strategies"][label] = {"strategy": entry["strategy"], "params": entry.get("params", {}), "cells": cells}
    return view


def format_forgetting(results: dict[str, Any], entry: dict[str, Any], n_boot: int) -> dict[str, Any] | None:
    """generate-BWT − loglik-BWT over a strategy's cells, paired over the same seeds and test examples:
    the forgetting a user of the adapter sees that ranking the labels does not (the answer format
    collapsing). Negative: generation forgot more."""
    scorers = scorers_of(results)

    def bits(cell: dict[str, Any], scorer: str):
        found = cell if scorer == scorers[0] else (cell.get("also") or {}).get(scorer)
        return None if not found or not found.get("correct") else _correctness(found)

    cells = [c for c in entry["cells"].values() if c.get("matrix") is not None
             and bits(c, "generate") is not None and bits(c, "loglik") is not None]
    if not cells or len(results["tasks"]) < 2:
        return None
    orders = [_task_order(c, results["tasks"]) for c in cells]
    found = stats.paired_difference([bits(c, "generate") for c in cells], [bits(c, "loglik") for c in cells], "bwt",
                                    orders=orders, n_boot=n_boot)
    return {**vars(found), "cells": len(cells)}
