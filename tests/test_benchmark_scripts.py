"""The benchmark scripts RESULTS.md quotes numbers from: checked on hand-made exports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(seed: int, acc: float, bwt: float, stops: list[dict] | None = None) -> dict:
    return {"seed": seed, "tasks": ["a", "b"][: len(stops or [])], "metrics": {"acc": acc, "bwt": bwt},
            "losses": stops or []}


def test_replay_flags_exactly_the_cells_whose_stop_the_rule_now_changes():
    replay = _script("replay_plateau")
    restored_start = {"reason": "plateau", "steps_run": 32, "best_step": 0, "dev": [[0, 0.52], [16, 0.44], [32, 0.52]]}
    ordinary = {"reason": "plateau", "steps_run": 48, "best_step": 16, "dev": [[0, 0.49], [16, 0.71], [32, 0.72], [48, 0.61]]}
    document = {"config": {"train": {"until": "plateau", "eval_every": 16, "patience": 2, "min_delta": 0.02,
                                     "max_steps": 160, "schedule": "constant"}},
                "results": {"strategies": {"seq": {"cells": {
                    "seq/s0": _cell(0, 0.7, -0.1, [{"stop": ordinary}, {"stop": ordinary}]),
                    "seq/s1": _cell(1, 0.5, -0.3, [{"stop": ordinary}, {"stop": restored_start}])}}}}}
    changed = replay.changed_cells(document)
    assert list(changed) == ["seq/s1"] and "b: stored ('plateau', 32, 0), needs more checks" in changed["seq/s1"][0]


def test_replay_under_a_changed_setting_flags_the_cells_it_would_change():
    replay = _script("replay_plateau")
    # patience 2 stops at step 48 (two checks without a gain above 0.72); patience 3 would need a 4th
    stop = {"reason": "plateau", "steps_run": 48, "best_step": 16, "dev": [[0, 0.49], [16, 0.71], [32, 0.72], [48, 0.61]]}
    document = {"config": {"train": {"until": "plateau", "eval_every": 16, "patience": 2, "min_delta": 0.02,
                                     "max_steps": 160, "schedule": "constant"}},
                "results": {"strategies": {"seq": {"cells": {"seq/s0": _cell(0, 0.7, -0.1, [{"stop": stop}])}}}}}
    assert replay.changed_cells(document) == {}
    assert replay.changed_cells(document, {"patience": 3}) == {"seq/s0": ["a: stored ('plateau', 48, 16), needs more checks"]}


def test_a_trajectory_replay_restores_the_check_plateau_training_would(monkeypatch):
    trajectories = _script("plateau_trajectories")
    monkeypatch.setitem(sys.modules, "replay_plateau", _script("replay_plateau"))  # as the script's folder gives it
    from adapter_hub.training import TrainConfig

    # 4 dev examples; accuracies by check 0.25 (before training), 0.5, 1.0, 0.75, 0.75, 0.75, 1.0
    rows = [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    checks = [{"dev": row, "test": []} for row in rows]
    config = TrainConfig(until="plateau", eval_every=16, patience=3, min_delta=0.02, max_steps=96)
    assert trajectories.replay_rule(checks, [0, 1, 2, 3], config) == 2  # best at check 2, stop after 3 more
    # a split of examples 0 and 3 (bootstrap draws may repeat one): 0.5, 0.5, 1.0, 0.5, ...: the 1.0 at check 2
    assert trajectories.replay_rule(checks, [0, 3], config) == 2
    assert trajectories.replay_rule(checks, [3, 3], config) == 2  # 0, 0, 1, 0, 0, 0 -> best at check 2
    assert trajectories.replay_rule(checks, [0, 0], config) == 1  # always 1.0: the first trained check


def test_the_gap_share_uses_only_the_seeds_all_three_strategies_have():
    tables = _script("regime_tables")
    strategies = {"seq": {"cells": {"s0": _cell(0, 0.60, -0.2), "s1": _cell(1, 0.40, -0.3)}},
                  "mtl": {"cells": {"s0": _cell(0, 0.80, 0.1), "s1": _cell(1, 0.90, 0.1)}},
                  "x": {"cells": {"s0": _cell(0, 0.79, 0.0)}}}  # seed 1 not run yet
    lines = tables.gap_lines(strategies, "seq", "generate")
    # seed 0 alone: (0.79 - 0.60) / (0.80 - 0.60) = 95%; pooling seq's seed 1 in would give 0.79 vs 0.50
    assert lines[-1] == "- x, seeds [0]: 95% (0.600 → 0.800; x 0.790, BWT +0.000)"


def test_a_diagonal_under_either_half_of_the_learnt_bar_is_listed():
    tables = _script("regime_tables")
    document = {"results": {"base_by_task": {"a": 0.0, "b": 0.5}, "strategies": {"seq": {"cells": {
        "seq/s0": {"tasks": ["a", "b"], "matrix": [[0.60, None], [0.5, 0.80]]},   # a: under majority 0.5 + 0.15
        "seq/s1": {"tasks": ["a", "b"], "matrix": [[0.70, None], [0.5, 0.70]]}}}}}}  # b: under base 0.5 + 0.25
    majority = {"a": 0.50, "b": 0.30}
    assert tables.below_bar(document, majority) == ["- seq/s0: a 0.600 (bar 0.650)", "- seq/s1: b 0.700 (bar 0.750)"]


def test_fresh_cost_charges_a_step_from_another_run_once_and_this_runs_own_never():
    bench = _script("bench_cl_run")
    other = {"reused_from": "a:1", "seconds": 100.0, "stop": {"dev_seconds": 10.0}}  # trained by an earlier run
    own = {"reused_from": "a:7", "seconds": 50.0, "stop": {"dev_seconds": 5.0}}  # this run's seq trained it
    trained = {"seconds": 40.0, "stop": {"dev_seconds": 4.0}}
    cells = {"seq": {"cells": {"seq/s0": {"seed": 0, "train_seconds": 40.0, "eval_seconds": 3.0,
                                          "losses": [trained, other]}}},
             "replay": {"cells": {"replay/s0": {"seed": 0, "train_seconds": 0.5, "eval_seconds": 2.0,
                                                "losses": [own, other]}}}}
    plain = bench.split_by_seed({"strategies": cells})
    fresh = bench.split_by_seed({"strategies": cells}, bench.FreshCost({"a:7"}))
    assert plain["seed0_total_s"] == 40.0 + 3.0 + 0.5 + 2.0
    assert fresh["seed0_total_s"] == plain["seed0_total_s"] + 100.0  # once, not once per cell
    assert fresh["seed0_seq_dev_checks_s"] == 4.0 + 10.0 and fresh["seed0_replay_dev_checks_s"] == 0.0


def test_the_dtype_benchmark_runs_each_base_in_the_dtype_it_names(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling _results
    bench = _script("bench_train_dtype")
    out = bench.measure("tiny-llama", "builtin:topic", seq=64, batch=2, steps=1, test=4, repeats=1)
    assert (out["fp32_base_dtype"], out["bf16_base_dtype"]) == ("float32", "bfloat16")
    assert out["train_speedup_bf16"] == out["fp32_train_s_per_step"] / out["bf16_train_s_per_step"]
    assert out["score_speedup_bf16"] == out["fp32_score_s_per_example"] / out["bf16_score_s_per_example"]
    assert 0.0 <= out["bf16_accuracy_after_training"] <= 1.0


def test_the_frozen_sum_benchmark_trains_the_same_function_both_ways(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = _script("bench_frozen_sum")
    out = bench.measure("tiny-llama", "builtin:topic", dtype="fp32", k=2, seq=64, batch=4, steps=3, repeats=1)
    # summed and one-by-one differ by rounding; dropping the components moves the loss far more
    assert out["max_loss_difference_summed_vs_one_by_one"] < 1e-4
    assert out["max_loss_difference_no_frozen_vs_one_by_one"] > 100 * out["max_loss_difference_summed_vs_one_by_one"]
    assert out["summed_over_one_by_one"] == out["summed_s_per_step"] / out["one_by_one_s_per_step"]


def test_the_cpu_cells_benchmark_runs_one_thread_workers_side_by_side(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # spawned workers import the script by name from here
    bench = _script("bench_cpu_cells")
    monkeypatch.setitem(sys.modules, "bench_cpu_cells", bench)  # so its worker pickles by name for spawn
    args = {"model": "tiny-llama", "task": "builtin:topic", "dtype": "fp32", "seq": 64, "batch": 2, "steps": 2,
            "test": 4}
    out = bench.measure(args, repeats=1)
    assert out["one_single_thread_threads_per_worker"] == out["side_by_side_threads_per_worker"] == 1
    assert out["one_all_threads_threads_per_worker"] >= 1  # torch's default (its count of physical cores)
    # throughput: workers per second of step, against the one all-threads worker's
    expected = out["cores"] / out["side_by_side_s_per_step"] / (1 / out["one_all_threads_s_per_step"])
    assert out["train_throughput_side_by_side_vs_one_all_threads"] == expected
    # the same batches from the same init: the losses can differ by the thread count's rounding only
    assert out["max_loss_difference_one_vs_all_threads"] < 1e-4


def test_fresh_cost_lands_on_the_cell_the_run_trains_first_not_the_first_alphabetically():
    bench = _script("bench_cl_run")
    other = {"reused_from": "a:1", "seconds": 100.0, "stop": {"dev_seconds": 10.0}}
    cell = {"seed": 0, "train_seconds": 1.0, "eval_seconds": 2.0, "losses": [other]}
    results = {"strategies": {"ella": {"cells": {"ella/s0": dict(cell)}}, "seq": {"cells": {"seq/s0": dict(cell)}}}}
    out = bench.split_by_seed(results, bench.FreshCost(set()), order=["seq", "ella"])
    assert out["seed0_seq_training_s"] == 1.0 + 100.0 - 10.0 and out["seed0_seq_dev_checks_s"] == 10.0
    assert out["seed0_ella_training_s"] == 1.0 and out["seed0_ella_dev_checks_s"] == 0.0


def test_fresh_cost_follows_the_run_order_across_task_orders_before_seeds():
    bench = _script("bench_cl_run")  # bench.cells.plan: every seed of order 0 before any cell of order 1
    other = {"reused_from": "a:1", "seconds": 100.0, "stop": {"dev_seconds": 0.0}}
    cells = {"seq/s0/o2": {"seed": 0, "order": 1, "train_seconds": 0.0, "eval_seconds": 1.0, "losses": [other]},
             "seq/s1/o1": {"seed": 1, "order": 0, "train_seconds": 0.0, "eval_seconds": 1.0, "losses": [other]}}
    out = bench.split_by_seed({"strategies": {"seq": {"cells": cells}}}, bench.FreshCost(set()))
    assert out["seed1_seq_training_s"] == 100.0 and out["seed0_total_s"] == 1.0


def test_a_step_row_that_points_at_a_reloaded_state_is_not_counted_as_trained_here():
    bench = _script("bench_cl_run")
    reused = {"reused_from": "a:1", "seconds": 100.0}
    exported = {"steps": [{"strategy": "seq/s0/o2", "step": 1, "version": "a:1"},
                          {"strategy": "seq/s0/o2", "step": 2, "version": "b:4"}],
                "results": {"strategies": {"seq": {"cells": {"seq/s0/o2": {"losses": [reused, {"seconds": 5.0}]}}}}}}
    assert bench.trained_here(exported) == {"b:4"}


def test_each_cells_seconds_come_with_the_machine_that_ran_it():
    bench = _script("bench_cl_run")
    amd = {"device": "cpu", "cpu": "AMD EPYC", "cores": 2, "torch_threads": 2, "bf16": "fp32 matmuls"}
    cells = {"seq": {"seed": 0, "train_seconds": 3.0, "eval_seconds": 1.0, "losses": [], "machine": amd},
             "seq/s1": {"seed": 1, "train_seconds": 3.0, "eval_seconds": 1.0, "losses": []}}  # recorded before
    out = bench.split_by_seed({"strategies": {"seq": {"cells": cells}}})
    assert out["seed0_seq_machine"] == "AMD EPYC, 2 cores, 2 threads, bf16: fp32 matmuls"
    assert "seed1_seq_machine" not in out and out["seed0_total_s"] == out["seed1_total_s"] == 4.0
