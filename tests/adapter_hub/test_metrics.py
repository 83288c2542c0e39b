"""Metrics on hand-computed accuracy matrices."""

from __future__ import annotations

import math

import pytest

from adapter_hub.metrics import summarize

NAN = math.nan


def test_three_tasks_by_hand():
    R = [[0.90, 0.10, 0.20],
         [0.60, 0.80, 0.30],
         [0.70, 0.50, 0.95]]
    base = [0.05, 0.15, 0.25]
    m = summarize(R, base=base, reference=[0.92, 0.85, 0.90])
    assert m["acc"] == pytest.approx((0.70 + 0.50 + 0.95) / 3)
    assert m["bwt"] == pytest.approx(((0.70 - 0.90) + (0.50 - 0.80)) / 2)  # -0.25
    assert m["fwt"] == pytest.approx(((0.10 - 0.15) + (0.30 - 0.25)) / 2)  # 0.0
    # max-based: task 1 peaked at 0.90 (row 1), task 2 at 0.80 (row 2)
    assert m["forgetting"] == pytest.approx(((0.90 - 0.70) + (0.80 - 0.50)) / 2)
    assert m["forgetting_first"] == pytest.approx(((0.90 - 0.70) + (0.80 - 0.50)) / 2)
    assert m["intransigence_per_task"] == pytest.approx([0.02, 0.05, -0.05])
    assert m["intransigence"] == pytest.approx(0.02 / 3)


def test_max_and_first_forgetting_differ_when_a_task_improves_after_it_was_learnt():
    """Task 1: 0.50 when learnt, 0.90 after task 2 (positive backward transfer), 0.60 at the end.
    Chaudhry (max) forgetting counts the drop from the 0.90 peak; Avalanche (first) from 0.50."""
    R = [[0.50, NAN, NAN],
         [0.90, 0.80, NAN],
         [0.60, 0.70, 0.85]]
    m = summarize(R)
    assert m["forgetting"] == pytest.approx(((0.90 - 0.60) + (0.80 - 0.70)) / 2)  # 0.20
    assert m["forgetting_first"] == pytest.approx(((0.50 - 0.60) + (0.80 - 0.70)) / 2)  # 0.00
    assert m["bwt"] == pytest.approx(((0.60 - 0.50) + (0.70 - 0.80)) / 2)  # 0.00
    assert m["fwt"] is None and m["intransigence"] is None  # no base accuracies, no reference


def test_max_forgetting_ignores_rows_before_the_task_was_learnt():
    """Task 2 scores 0.95 before it is learnt (forward transfer from task 1), 0.60 once learnt, 0.50 at
    the end: it forgot 0.10, not 0.45. The max runs over rows l in [j, T-1] only (Chaudhry et al.)."""
    R = [[0.90, 0.95, 0.20],
         [0.80, 0.60, 0.30],
         [0.70, 0.50, 0.90]]
    m = summarize(R)
    assert m["forgetting"] == pytest.approx(((0.90 - 0.70) + (0.60 - 0.50)) / 2)  # 0.15
    assert m["forgetting_first"] == pytest.approx(((0.90 - 0.70) + (0.60 - 0.50)) / 2)


def test_missing_inputs_give_none():
    assert summarize([[0.7]]) == {"acc": 0.7, "bwt": None, "fwt": None, "forgetting": None, "forgetting_first": None,
                                  "intransigence": None, "intransigence_per_task": None}
    R = [[0.9, NAN], [0.5, 0.8]]  # R[1][2] not evaluated: FWT cannot be computed
    assert summarize(R, base=[0.1, 0.2])["fwt"] is None
    assert summarize(R, reference=[[0.95, 0.1], [0.9, 0.85]])["intransigence_per_task"] == pytest.approx([0.05, 0.05])


@pytest.mark.parametrize("R, message", [
    ([[0.5, 0.5]], "square"),
    ([], "square and non-empty"),
    ([[0.5, NAN], [NAN, 0.5]], "on and below the diagonal"),
])
def test_bad_matrices(R, message):
    with pytest.raises(ValueError, match=message):
        summarize(R)


def test_bad_side_inputs():
    with pytest.raises(ValueError, match="base has 1 accuracies for 2 tasks"):
        summarize([[0.5, 0.1], [0.4, 0.6]], base=[0.1])
    with pytest.raises(ValueError, match="reference has shape"):
        summarize([[0.5, 0.1], [0.4, 0.6]], reference=[0.1, 0.2, 0.3])
