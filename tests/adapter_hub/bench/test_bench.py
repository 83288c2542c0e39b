"""bench run -> bench report end to end on the tiny model, and resume after an interruption."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from adapter_hub.bench.config import BenchConfig
from adapter_hub.bench.driver import run_bench
from adapter_hub.cli import cli
from adapter_hub.models.devices import cpu_bf16_native
from registry import Registry

CONFIG = """
name = "{name}"
base_model = "tiny-llama"
tasks = ["builtin:topic", "builtin:sentiment"]
max_train = 128
max_test = 48
[lora]
r = 4
[train]
steps = 40
lr = 3e-3
batch_size = 16
max_length = 96
progress = false
[eval]
batch_size = 16
[[strategies]]
name = "seq"
[[strategies]]
name = "per_task"
[[strategies]]
name = "mtl"
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(CONFIG.format(name="e2e"))
    return path


def test_bench_run_then_report(tmp_path, config_file):
    location = str(tmp_path / "registry")

    def run(*args):
        result = CliRunner().invoke(cli, ["--registry", location, *args])
        assert result.exit_code == 0, result.output
        return result.output

    live = tmp_path / "live.json"
    out = run("bench", "run", str(config_file), "--export", str(live))
    assert "strategies compared" in out and "per_task" in out
    info = Registry.open(location).runs.get("e2e")
    assert info.status == "done"
    # --export leaves the finished run's export, equal to what `bench export` writes, and no temp file
    assert json.loads(live.read_text()) == Registry.open(location).runs.export("e2e")
    assert sorted(p.name for p in tmp_path.iterdir() if "live" in p.name) == ["live.json"]
    results = info.results
    assert results["tasks"] == ["topic", "sentiment"] and len(results["base"]) == 2
    assert results["device"] == "cpu" and results["dtype"] == "fp32"  # auto on CPU: fp32, recorded with the run
    for label in ("seq", "per_task", "mtl"):
        entry = results["strategies"][label]
        R = entry["matrix"]
        assert len(R) == 2 and all(len(row) == 2 and all(0 <= v <= 1 for v in row) for row in R)
        # the stored metrics, recomputed by hand from the stored matrix (T = 2: one earlier task)
        b, ref = results["base"], results["strategies"]["mtl"]["matrix"]
        metrics = entry["metrics"]
        assert metrics["acc"] == pytest.approx((R[1][0] + R[1][1]) / 2)
        assert metrics["bwt"] == pytest.approx(R[1][0] - R[0][0])
        assert metrics["fwt"] == pytest.approx(R[0][1] - b[1])
        assert metrics["forgetting"] == pytest.approx(R[0][0] - R[1][0])  # max over rows 1..T-1 = row 1 only
        assert metrics["forgetting_first"] == pytest.approx(R[0][0] - R[1][0])
        assert metrics["intransigence"] == pytest.approx(((ref[0][0] - R[0][0]) + (ref[1][1] - R[1][1])) / 2)
        assert len(entry["states"]) == 2
    assert results["strategies"]["per_task"]["metrics"]["forgetting"] == 0.0
    assert results["strategies"]["mtl"]["metrics"]["intransigence"] == 0.0
    # every matrix cell is traceable: recorded as an evaluation of the version behind it
    reg = Registry.open(location)
    seq_after_2 = results["strategies"]["seq"]["states"][1]
    recorded = {e["task"]: e["value"] for e in reg.evaluations(seq_after_2) if e["metric"] == "accuracy"}
    assert recorded == dict(zip(results["tasks"], results["strategies"]["seq"]["matrix"][1]))
    # per_task: each adapter carries only the score it earned on its own task, marked as such — never
    # the routed system's score on a task another adapter answered
    per_task = results["strategies"]["per_task"]
    for j, ref in enumerate(per_task["states"]):
        evals = [e for e in reg.evaluations(ref) if e["metric"] == "accuracy"]
        assert [(e["task"], e["value"]) for e in evals] == [(results["tasks"][j], per_task["matrix"][j][j])]
        assert evals[0]["context"] == "per_task: the task's own adapter (task id given)"
    assert all(e["context"] is None for e in reg.evaluations(seq_after_2))
    steps = reg.runs.get("e2e").steps
    assert [(s.strategy, s.step, s.version) for s in steps if s.strategy == "seq"] == [
        ("seq", 1, results["strategies"]["seq"]["states"][0]), ("seq", 2, seq_after_2)]

    assert json.loads(run("bench", "list", "--json"))[0]["status"] == "done"
    assert json.loads(run("bench", "show", "e2e", "--json"))["results"]["tasks"] == ["topic", "sentiment"]
    assert "seq" in run("bench", "compare", "e2e") and "after \\ on" in run("bench", "show", "e2e")
    shown = run("bench", "show", "e2e")  # per-phase wall times are stored with the run and shown
    assert "where the time went" in shown and results["base_seconds"] > 0
    from adapter_hub.bench.report import phase_rows

    seq_row = [r for r in phase_rows(info) if r[0] == "seq"][0]
    cell = results["strategies"]["seq"]["cells"]["seq"]
    assert seq_row[2] == " / ".join(f"{s:.0f}" for s in cell["step_seconds"])
    assert seq_row[3:5] == [f"{cell['train_seconds']:.0f}", f"{cell['eval_seconds']:.0f}"]
    report = tmp_path / "report"
    run("bench", "report", "e2e", "--out", str(report))
    for name in ("heatmap_seq.png", "heatmap_per_task.png", "heatmap_mtl.png", "accuracy_over_sequence.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    markdown = (report / "report.md").read_text()
    assert markdown.count("| seq |") == 1 and "![R for per_task (loglik)](heatmap_per_task.png)" in markdown
    assert "Chaudhry" in markdown and "Avalanche" in markdown
    assert json.loads((report / "results.json").read_text())["results"]["strategies"]["seq"]["matrix"] == \
        results["strategies"]["seq"]["matrix"]


class Stop(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_matrix(tmp_path):
    import tomllib

    raw = tomllib.loads(CONFIG.format(name="r"))
    reference = run_bench(BenchConfig.from_dict(raw), Registry.open(tmp_path / "a"), echo=lambda m: None)

    def stop(label, result, ref):
        if label == "per_task" and result.step == 1:
            raise Stop

    reg = Registry.open(tmp_path / "b")
    with pytest.raises(Stop):
        run_bench(BenchConfig.from_dict(raw), reg, echo=lambda m: None, on_step=stop)
    assert reg.runs.get("r").status == "failed"
    from adapter_hub.bench.report import (
        write_report,  # an interrupted run reports what it has and names the rest
    )

    written = {p.name for p in write_report(reg.runs.get("r"), tmp_path / "partial")}
    assert "heatmap_seq.png" in written and not {"heatmap_per_task.png", "heatmap_mtl.png"} & written
    assert "not evaluated yet: per_task, mtl" in (tmp_path / "partial" / "report.md").read_text()
    resumed = run_bench(BenchConfig.from_dict(raw), reg, echo=lambda m: None)
    assert resumed.status == "done"
    for label in ("seq", "per_task", "mtl"):
        assert resumed.results["strategies"][label]["matrix"] == reference.results["strategies"][label]["matrix"]
    cells = {label: resumed.results["strategies"][label]["cells"][label] for label in ("seq", "per_task")}
    assert cells["seq"]["resumed_steps"] == 0  # evaluated before the stop: kept as stored, not redone
    assert cells["per_task"]["resumed_steps"] == 1  # stopped inside: its first step reloaded, not retrained
    # the reloaded step keeps the loss summary and the time it was trained in, as recorded
    first = reference.results["strategies"]["per_task"]["cells"]["per_task"]
    reloaded = {k: v for k, v in cells["per_task"]["losses"][0].items() if k != "seconds"}
    assert reloaded == {k: v for k, v in first["losses"][0].items() if k != "seconds"} and reloaded["steps"] == 40
    assert cells["per_task"]["step_seconds"][0] > 0
    assert len(reg.versions("topic")) == len(Registry.open(tmp_path / "a").versions("topic"))  # nothing retrained twice
    # the same name with an edited config is refused, naming what changed (not "already done" + old numbers)
    edited = {**raw, "train": {**raw["train"], "steps": 5}, "max_test": 20}
    with pytest.raises(ValueError, match=r"another config \(max_test: 48 -> 20; train.steps: 40 -> 5\).*--new-run"):
        run_bench(BenchConfig.from_dict(edited), reg, echo=lambda m: None)
    from adapter_hub.bench.driver import free_run_name

    assert free_run_name(reg, "r") == "r-2" and free_run_name(reg, "fresh") == "fresh"


def test_a_run_moves_to_another_registry_and_resumes_there(tmp_path):
    """export -> import -> bench run: finished cells come back as they were, the rest is trained in
    the new registry, and the end matches an uninterrupted run (how a run spans fresh machines)."""
    import tomllib

    raw = tomllib.loads(CONFIG.format(name="moved"))
    reference = run_bench(BenchConfig.from_dict(raw), Registry.open(tmp_path / "a"), echo=lambda m: None)

    def stop(label, result, ref):
        if label == "per_task" and result.step == 1:
            raise Stop

    live = tmp_path / "live.json"  # what `bench run --export` does: rewritten after every finished cell
    source = Registry.open(tmp_path / "b")
    with pytest.raises(Stop):
        run_bench(BenchConfig.from_dict(raw), source, echo=lambda m: None, on_step=stop,
                  on_cell=lambda: source.runs.export_to("moved", live, replace=True))
    exported = tmp_path / "moved.json"
    runner = CliRunner()
    out = runner.invoke(cli, ["--registry", str(tmp_path / "b"), "bench", "export", "moved", str(exported)])
    assert out.exit_code == 0 and "1 cells" in out.output, out.output
    # the live export holds the cell finished before the interruption, as `bench export` sees it after
    assert json.loads(live.read_text())["results"] == json.loads(exported.read_text())["results"]
    again = runner.invoke(cli, ["--registry", str(tmp_path / "b"), "bench", "export", "moved", str(exported)])
    assert again.exit_code != 0 and "exists" in again.output  # never overwrites a file
    target = str(tmp_path / "c")
    out = runner.invoke(cli, ["--registry", target, "bench", "import", str(exported)])
    assert out.exit_code == 0 and "imported run moved (failed)" in out.output, out.output
    dup = runner.invoke(cli, ["--registry", target, "bench", "import", str(exported)])
    assert dup.exit_code != 0 and "exists here" in dup.output
    reg = Registry.open(target)
    assert reg.tasks() == []  # results only: the adapters stay where they were trained
    # the run keeps the date it was started, not the date it was imported
    assert reg.runs.get("moved").created_at == source.runs.get("moved").created_at
    stored_seq = reg.runs.get("moved").results["strategies"]["seq"]["cells"]["seq"]
    resumed = run_bench(BenchConfig.from_dict(raw), reg, echo=lambda m: None)
    assert resumed.status == "done"
    for label in ("seq", "per_task", "mtl"):
        assert resumed.results["strategies"][label]["matrix"] == reference.results["strategies"][label]["matrix"]
    kept = resumed.results["strategies"]["seq"]["cells"]["seq"]
    # kept, not retrained here (its metrics gain intransigence once mtl's reference cell exists)
    assert {k: v for k, v in kept.items() if k != "metrics"} == {k: v for k, v in stored_seq.items() if k != "metrics"}
    assert stored_seq["code"].startswith("0.")  # which code produced the cell travels with it
    where = stored_seq["machine"]  # and the machine it ran on, to read its seconds against
    assert (where["device"], where["cores"]) == ("cpu", os.cpu_count())
    assert where["bf16"] == {True: "native", False: "fp32 matmuls", None: "unknown"}[cpu_bf16_native()]
    assert len(reg.versions("topic")) == 2  # per_task's and mtl's first steps, trained here


@pytest.mark.parametrize("document, message", [
    ([], "not an exported benchmark run"),
    ({"format": "adapter-hub-bench-run", "format_version": 9}, "format_version 9"),
    ({"format": "adapter-hub-bench-run", "format_version": 1, "name": "x", "status": "done", "config": [],
      "results": {}}, "config must be an object"),
    ({"format": "adapter-hub-bench-run", "format_version": 1, "name": "x", "status": "paused", "config": {},
      "results": {}}, "status must be one of"),
    ({"format": "adapter-hub-bench-run", "format_version": 1, "name": "../x", "status": "done", "config": {},
      "results": {}}, "run name"),
    ({"format": "adapter-hub-bench-run", "format_version": 1, "name": "x", "status": "done", "config": {},
      "results": {}, "created_at": "yesterday"}, "created_at must be an ISO 8601 time, got 'yesterday'"),
])
def test_bad_exported_runs_are_refused_and_write_nothing(tmp_path, document, message):
    reg = Registry.open(tmp_path / "r")
    with pytest.raises(ValueError, match=message):
        reg.runs.import_document(document)
    assert reg.runs.list() == []


@pytest.mark.parametrize("raw, message", [
    ({"tasks": [], "strategies": [{"name": "seq"}]}, "needs tasks"),
    ({"tasks": ["builtin:topic"], "strategies": []}, "at least one"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "colour": 1}, "unknown bench config key"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "train": {"lrr": 1}}, r"unknown \[train\]"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}, {"name": "seq"}]}, "labels must be unique"),
    ({"tasks": "builtin:topic", "strategies": [{"name": "seq"}]}, "tasks must be a list of strings, got 'builtin:topic'"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "train": {"steps": "ten"}},
     r"\[train\] steps must be an integer or unset, got 'ten'"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "max_train": -1}, "max_train must be >= 1"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "seed": 1.5}, "seed must be an integer"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "dtype": "int8"}, "dtype must be auto, fp32"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "eval": {"scorer": "vibes"}},
     r"\[eval\] scorer must be one of 'loglik', 'generate'"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "ewc", "lam": "big"}]}, "ewc parameter lam must be a finite"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "replay", "memory": -5}]}, "parameter memory must be an integer >= 0"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "replay", "memory_fraction": 2.0}]}, "memory_fraction must be in"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "olora", "lambda3": 1}]}, r"has no parameter\(s\) \['lambda3'\]"),
    ({"tasks": ["builtin:topic"], "strategies": [{"name": "merge", "method": "avg"}]}, "parameter method must be one of"),
])
def test_bad_configs(raw, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig.from_dict(raw)


def test_unknown_strategy_and_bad_data_fail_before_anything_is_written(tmp_path):
    reg = Registry.open(tmp_path / "r")
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        run_bench(BenchConfig.from_dict({"tasks": ["builtin:topic"], "strategies": [{"name": "nope"}]}), reg)
    from adapter_hub.data import DataError

    with pytest.raises(DataError, match="no such task folder"):
        run_bench(BenchConfig.from_dict({"tasks": ["missing-task"], "data_root": str(tmp_path),
                                         "strategies": [{"name": "seq"}]}), reg)
    from adapter_hub.bench.config import StrategyEntry

    built_in_python = BenchConfig(tasks=["builtin:topic"], strategies=[StrategyEntry("ewc", params={"lam": -1.0})])
    with pytest.raises(ValueError, match="parameter lam must be >= 0"):
        run_bench(built_in_python, reg)
    assert reg.runs.list() == []  # refused before the run row exists


CELLS = (CONFIG.format(name="cells")  # the same budget, two tasks with different inputs, 2 seeds x 2 orders
         .replace('tasks = ["builtin:topic", "builtin:sentiment"]', 'tasks = ["builtin:topic", "builtin:animal"]\n'
                  'seeds = [3, 4]\norders = [["builtin:topic", "builtin:animal"], ["builtin:animal", "builtin:topic"]]')
         .replace("max_train = 128", "max_train = 96").replace("max_test = 48", "max_test = 40")
         .replace("steps = 40", "steps = 25").replace('[[strategies]]\nname = "mtl"\n', ""))


def test_seeds_and_orders_give_cells_intervals_and_paired_differences(tmp_path):
    """Every (strategy, seed, order) is a cell with its matrix and per-example correctness; the summary's
    interval and the paired difference are what stats computes from exactly those bits."""
    import tomllib

    from adapter_hub import stats
    from adapter_hub.bench.cells import unpack

    location = tmp_path / "registry"
    run = run_bench(BenchConfig.from_dict(tomllib.loads(CELLS)), Registry.open(location), echo=lambda m: None)
    results = run.results
    assert results["seeds"] == [3, 4] and results["orders"] == [["topic", "animal"], ["animal", "topic"]]
    seq = results["strategies"]["seq"]
    assert sorted(seq["cells"]) == ["seq/s3/o1", "seq/s3/o2", "seq/s4/o1", "seq/s4/o2"]
    assert seq["cells_done"] == seq["cells_total"] == 4
    for cell in seq["cells"].values():
        assert cell["tasks"] == results["orders"][cell["order"]]
        for i, row in enumerate(cell["correct"]):
            for j, packed in enumerate(row):
                if j > i:
                    assert packed is None  # a task not learnt yet is not part of any metric
                else:
                    bits = unpack(packed)
                    assert len(bits) == 40 and sum(bits) / 40 == pytest.approx(cell["matrix"][i][j])
    # the two seeds trained differently (the seed is the training seed), on the same test examples
    assert seq["cells"]["seq/s3/o1"]["states"] != seq["cells"]["seq/s4/o1"]["states"]
    canonical = results["tasks"]

    def bits(entry):
        cells = list(entry["cells"].values())
        return ([[[None if c is None else unpack(c) for c in row] for row in cell["correct"]] for cell in cells],
                [[canonical.index(t) for t in cell["tasks"]] for cell in cells])

    correct, orders = bits(seq)
    direct = stats.bootstrap(correct, "acc", orders=orders, n_boot=2000)
    shown = seq["intervals"]["acc"]
    assert (shown["mean"], shown["low"], shown["high"], shown["seeds"]) == \
        (pytest.approx(direct.mean), pytest.approx(direct.low), pytest.approx(direct.high), 4)
    assert shown["low"] <= seq["metrics"]["acc"] <= shown["high"]
    assert seq["metrics"]["acc"] == pytest.approx(sum(sum(c["matrix"][-1]) / 2 for c in seq["cells"].values()) / 4)
    diff = results["differences"]["per_task"]["acc"]
    assert results["baseline"] == "seq" and diff["cells"] == 4
    other, _ = bits(results["strategies"]["per_task"])
    expected = stats.paired_difference(other, correct, "acc", orders=orders, n_boot=2000)
    assert diff["diff"] == pytest.approx(expected.diff) and diff["significant"] == expected.significant
    assert results["strategies"]["per_task"]["metrics"]["forgetting"] == 0.0

    out = CliRunner().invoke(cli, ["--registry", str(location), "bench", "show", "cells"])
    assert out.exit_code == 0, out.output
    assert "±" in out.output and "4 cells" in out.output
    out = CliRunner().invoke(cli, ["--registry", str(location), "bench", "compare", "cells"])
    assert out.exit_code == 0, out.output
    assert "per_task − seq" in out.output and ("significant" in out.output or "no difference" in out.output)


def test_bad_seeds_and_orders_are_refused():
    base = {"tasks": ["builtin:topic", "builtin:animal"], "strategies": [{"name": "seq"}]}
    with pytest.raises(ValueError, match="seeds must be distinct"):
        BenchConfig.from_dict({**base, "seeds": [1, 1]})
    with pytest.raises(ValueError, match="must list the same tasks"):
        BenchConfig.from_dict({**base, "orders": [["builtin:topic"]]})
    with pytest.raises(ValueError, match="orders must be distinct"):
        BenchConfig.from_dict({**base, "orders": [["builtin:topic", "builtin:animal"]] * 2})
    with pytest.raises(ValueError, match="seeds must be a list of integers"):
        BenchConfig.from_dict({**base, "seeds": "1"})


def test_a_run_whose_model_fails_to_load_is_marked_failed(tmp_path):
    """A model that exists (a local folder) but fails while loading: the run row exists, marked failed."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": "not a number"}')
    reg = Registry.open(tmp_path / "r")
    raw = {"name": "broken", "tasks": ["builtin:topic"], "base_model": str(folder), "strategies": [{"name": "seq"}]}
    with pytest.raises(Exception, match="hidden_size"):  # transformers' own config error, whatever its type
        run_bench(BenchConfig.from_dict(raw), reg, echo=lambda m: None)
    assert reg.runs.get("broken").status == "failed"  # not "running" forever


def test_evaluation_cuts_prompts_as_training_did_unless_told():
    base = {"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "train": {"max_length": 96}}
    assert BenchConfig.from_dict(base).eval_config().max_length == 96
    assert BenchConfig.from_dict({**base, "eval": {"max_length": 200}}).eval_config().max_length == 200
    from adapter_hub.evaluation import EvalConfig

    assert EvalConfig().length == 256  # standalone scoring with no training config to follow


def test_loading_bars_are_off_when_stderr_is_not_a_terminal():
    from transformers.utils import logging as hf_logging

    from adapter_hub.models.loading import load_base_model

    hf_logging.enable_progress_bar()
    load_base_model("tiny-llama")  # under pytest's capture stderr is not a terminal
    assert not hf_logging.is_progress_bar_enabled()


def test_settings_added_after_a_run_started_do_not_block_its_resume():
    from adapter_hub.bench.config import config_changes

    stored = {"name": "r", "seed": 0, "train": {"steps": 40}}
    assert config_changes(stored, {"name": "r2", "seed": 0, "train": {"steps": 40}, "seeds": [], "orders": []}) == []
    assert config_changes(stored, {"seed": 0, "train": {"steps": 40}, "seeds": [1, 2]}) == ["seeds: '(unset)' -> [1, 2]"]
    assert config_changes(stored, {"seed": 1, "train": {"steps": 40}}) == ["seed: 0 -> 1"]
    assert config_changes(stored, {"seed": 0, "train": {"steps": 40, "dev_min": 1}}) == []  # at its default
    assert config_changes(stored, {"seed": 0, "train": {"steps": 40, "dev_min": 50}}) == [
        "train.dev_min: '(unset)' -> 50"]


def test_scoring_only_the_next_future_task_leaves_every_metric_unchanged(tmp_path):
    """future_tasks = "next": a state is scored on the tasks learnt and the next one only. The skipped
    entries (above the superdiagonal) are None; every scored entry, every metric (FWT included) and
    the per-example bits equal the full matrix's; the evaluations recorded shrink by exactly those."""
    import tomllib

    base = tomllib.loads(CONFIG.format(name="full"))
    base["tasks"] = ["builtin:topic", "builtin:sentiment", "builtin:animal"]
    base["train"]["steps"] = 10
    base["max_test"] = 16
    base["strategies"] = [{"name": "seq"}, {"name": "per_task", "router": "prototype"}]
    full_reg, next_reg = Registry.open(tmp_path / "full"), Registry.open(tmp_path / "next")
    full = run_bench(BenchConfig.from_dict(base), full_reg, echo=lambda m: None).results
    only_next = run_bench(BenchConfig.from_dict({**base, "future_tasks": "next"}), next_reg, echo=lambda m: None).results
    for label in ("seq", "per_task"):
        a, b = full["strategies"][label], only_next["strategies"][label]
        assert b["matrix"][0][2] is None and a["matrix"][0][2] is not None
        assert [[v for j, v in enumerate(row) if not (j > i + 1)] for i, row in enumerate(b["matrix"])] == \
            [[v for j, v in enumerate(row) if not (j > i + 1)] for i, row in enumerate(a["matrix"])]
        assert b["metrics"] == a["metrics"] and b["metrics"]["fwt"] is not None
        assert b["cells"][label]["correct"] == a["cells"][label]["correct"]
    assert only_next["strategies"]["per_task"]["cells"]["per_task"]["router"]["oracle_matrix"][0][2] is None

    def evaluations(reg):
        return sum(len(reg.evaluations(v.ref)) for t in reg.tasks() for v in reg.versions(t["task"]))

    assert evaluations(full_reg) - evaluations(next_reg) == 1  # seq's state 1 on animal (per_task records own tasks)
    with pytest.raises(ValueError, match="future_tasks must be 'all' or 'next'"):
        BenchConfig.from_dict({**base, "future_tasks": "some"})


def test_a_task_whose_training_does_nothing_is_flagged_not_learnt(tmp_path):
    """With a learning rate too small to move anything the diagonal is the base model's accuracy on
    every task: each task is marked not learnt (its margin's interval holds 0), for both scorers; with
    a real learning rate the same tasks are learnt."""
    def run(lr: float, name: str):
        raw = {"name": name, "base_model": "tiny-llama", "tasks": ["builtin:topic", "builtin:animal"],
               "max_train": 256, "max_test": 32, "lora": {"r": 8},
               "train": {"steps": 200, "lr": lr, "batch_size": 16, "max_length": 96, "progress": False},
               "eval": {"batch_size": 32, "scorers": ["loglik", "generate"]}, "strategies": [{"name": "per_task"}]}
        return run_bench(BenchConfig.from_dict(raw), Registry.open(tmp_path / "r"), echo=lambda m: None).results

    still = run(1e-12, "still")["strategies"]["per_task"]
    for competence in (still["competence"], still["also"]["generate"]["competence"]):
        assert {t: c["learnt"] for t, c in competence.items()} == {"topic": False, "animal": False}, competence
        assert all(c["low"] <= 0 <= c["high"] for c in competence.values())
    moving = run(3e-3, "moving")["strategies"]["per_task"]
    assert {t: c["learnt"] for t, c in moving["competence"].items()} == {"topic": True, "animal": True}, moving["competence"]


def test_a_dropped_cell_is_trained_again_and_the_rest_kept(tmp_path):
    """bench import --drop: the cell's results and steps are left out, every summary is recomputed from
    the cells that stay, and resuming trains that cell alone, to the same numbers (training is seeded)."""
    import tomllib

    raw = tomllib.loads(CONFIG.format(name="dropped").replace('tasks = ["builtin:topic", "builtin:sentiment"]',
                                                               'tasks = ["builtin:topic", "builtin:sentiment"]\n'
                                                               'seeds = [3, 4]')
                        .replace("steps = 40", "steps = 10").replace('[[strategies]]\nname = "per_task"\n', "")
                        .replace('[[strategies]]\nname = "mtl"\n', ""))
    reference = run_bench(BenchConfig.from_dict(raw), Registry.open(tmp_path / "a"), echo=lambda m: None)
    exported = tmp_path / "dropped.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["--registry", str(tmp_path / "a"), "bench", "export", "dropped", str(exported)]).exit_code == 0
    bad = runner.invoke(cli, ["--registry", str(tmp_path / "c"), "bench", "import", str(exported), "--drop", "seq/s9"])
    assert bad.exit_code != 0 and "cell 'seq/s9' is not in this run" in bad.output and "seq/s3, seq/s4" in bad.output
    assert not (tmp_path / "c").exists()  # refused before the registry was opened
    out = runner.invoke(cli, ["--registry", str(tmp_path / "c"), "bench", "import", str(exported), "--drop", "seq/s4"])
    assert out.exit_code == 0 and "imported run dropped (failed)" in out.output, out.output
    reg = Registry.open(tmp_path / "c")
    imported = reg.runs.get("dropped").results["strategies"]["seq"]
    kept = reference.results["strategies"]["seq"]["cells"]["seq/s3"]
    assert sorted(imported["cells"]) == ["seq/s3"] and imported["cells_done"] == 1
    assert imported["matrix"] == kept["matrix"]  # the summary is the one cell's, not the two cells' mean
    resumed = run_bench(BenchConfig.from_dict(raw), reg, echo=lambda m: None)
    cells = resumed.results["strategies"]["seq"]["cells"]
    assert cells["seq/s3"]["states"] == kept["states"]  # kept as imported: its versions live in registry a
    again, original = cells["seq/s4"], reference.results["strategies"]["seq"]["cells"]["seq/s4"]
    assert again["matrix"] == original["matrix"] and again["correct"] == original["correct"]
    assert len(reg.versions("topic")) == 1  # only the dropped cell was trained here
    assert resumed.results["strategies"]["seq"]["matrix"] == reference.results["strategies"]["seq"]["matrix"]
