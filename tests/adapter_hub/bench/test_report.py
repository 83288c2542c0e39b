"""The report's verdicts on differences: significant only when the interval excludes 0, and a one-seed
comparison says what its interval does not cover."""

from __future__ import annotations

from types import SimpleNamespace

from adapter_hub.bench.report import difference_rows


def _run(cells: int, acc_low: float) -> SimpleNamespace:
    def d(diff, low, high):
        return {"diff": diff, "low": low, "high": high, "p_value": 0.01, "significant": low > 0 or high < 0,
                "cells": cells}

    return SimpleNamespace(results={"baseline": "seq", "differences": {"replay": {
        "acc": d(0.05, acc_low, 0.09), "bwt": d(0.01, -0.02, 0.03), "forgetting": d(-0.01, -0.03, 0.02)}}})


def test_verdicts_name_only_the_significant_metrics_and_qualify_one_seed():
    (row,) = difference_rows(_run(cells=3, acc_low=0.01))
    assert row[:2] == ["replay − seq", "3"] and row[2].startswith("+0.050*")
    assert row[-1] == "significant: ACC higher (p=0.010)"
    (row,) = difference_rows(_run(cells=3, acc_low=-0.01))
    assert row[-1] == "no difference" and "*" not in row[2]
    (row,) = difference_rows(_run(cells=1, acc_low=0.01))
    assert row[-1] == "significant: ACC higher (p=0.010) (one seed: test-example noise only, training noise not measured)"
