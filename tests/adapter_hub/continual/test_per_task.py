"""per_task with the analytic router and with warm-started adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapter_hub import LoraConfig
from adapter_hub.bench.config import BenchConfig
from adapter_hub.bench.driver import run_bench
from adapter_hub.continual import ContinualConfig, make_strategy
from adapter_hub.continual.per_task import restore_router
from adapter_hub.continual.runner import run_sequence
from adapter_hub.data import load_task
from adapter_hub.evaluation.analytic_router import AnalyticRouter
from adapter_hub.evaluation.router import features
from adapter_hub.training import TrainConfig
from registry import Registry

CONFIG = ContinualConfig(LoraConfig(r=4), TrainConfig(lr=3e-3, steps=6, batch_size=8, max_length=96, progress=False))


class SealedList(list):
    def __iter__(self):
        raise AssertionError("an earlier task's training inputs were read")

    def __getitem__(self, i):
        raise AssertionError("an earlier task's training inputs were read")

    def __len__(self):
        raise AssertionError("an earlier task's training inputs were read")


def test_the_analytic_router_reads_each_task_once_and_equals_one_fitted_on_all(tiny_model, tokenizer):
    """Each step reads its own task's inputs only (earlier tasks' lists are sealed once learnt), and the
    router it leaves equals one built from scratch on every task's features at once."""
    tasks = [load_task(f"builtin:{n}", max_train=48) for n in ("topic", "animal", "sentiment")]
    strategy = make_strategy("per_task", tiny_model(), tokenizer, CONFIG, router="analytic", router_dimensions=128)
    for k, task in enumerate(tasks, start=1):
        result = strategy.learn(task, k, tasks[:k - 1])
        task.train = SealedList(list.__iter__(task.train))  # learnt: nothing may read it again
        assert result.info["router"]["tasks"] == [t.name for t in tasks[:k]]
        assert result.info["router"]["stored_numbers"] == 128 * (128 + k)
    fresh = make_strategy("per_task", tiny_model(), tokenizer, CONFIG)
    batch = AnalyticRouter(128, 1.0, seed=0)
    for task in tasks:
        inputs = [ex.text for ex in list.__iter__(task.train)]
        batch.add_task(task.name, features(fresh.model, tokenizer, inputs, max_length=96).double().numpy())
    stored = restore_router(result)  # the router as registered with the last state, through its component
    assert np.abs(stored.weights() - batch.weights()).max() <= 1e-6 * np.abs(batch.weights()).max()


def test_warm_start_begins_each_task_at_the_previous_final_adapter(tiny_model, tokenizer, tmp_path, record_starts):
    tasks = [load_task(f"builtin:{n}", max_train=32) for n in ("topic", "animal", "sentiment")]
    reg = Registry.open(tmp_path / "r")
    strategy = make_strategy("per_task", tiny_model(), tokenizer, CONFIG, init="previous")
    starts = record_starts(strategy)
    steps = [strategy.learn(t, k, tasks[:k - 1]) for k, t in enumerate(tasks, start=1)]
    for k in (2, 3):  # task k starts bit for bit where task k-1 ended, and moves on from there
        before, after = steps[k - 2].state, starts[k - 1]
        assert all(torch.equal(before.modules[m].A, after.modules[m].A) and torch.equal(before.modules[m].B,
                   after.modules[m].B) for m in before.modules)
        assert any(not torch.equal(steps[k - 1].state.modules[m].B, before.modules[m].B) for m in before.modules)
    # the earlier versions stay as they were learnt, and the lineage says where each one started
    result = run_sequence("per_task", tiny_model(), tokenizer, tasks, CONFIG, params={"init": "previous"},
                          registry=reg, run="warm")
    assert [e.parent for e in reg.lineage(result.refs[2], max_depth=1)] == [result.refs[1]]
    for step, ref in zip(steps, result.refs):
        again = reg.load(ref)
        assert all(torch.equal(again.modules[m].B, step.state.modules[m].B) for m in again.modules)


@pytest.mark.parametrize("params", [{"router": "analytic"}, {"init": "previous"},
                                    {"router": "analytic", "init": "previous"}])
def test_an_interrupted_run_resumes_to_the_same_adapters_and_router(tiny_model, tokenizer, tmp_path, params):
    tasks = [load_task(f"builtin:{n}", max_train=32) for n in ("topic", "animal")]
    params = {**params, "router_dimensions": 64}
    whole = run_sequence("per_task", tiny_model(), tokenizer, tasks, CONFIG, params=params)
    reg = Registry.open(tmp_path / "r")
    run_sequence("per_task", tiny_model(), tokenizer, tasks[:1], CONFIG, params=params, registry=reg, run="r")
    resumed = run_sequence("per_task", tiny_model(), tokenizer, tasks, CONFIG, params=params, registry=reg, run="r")
    assert resumed.resumed == 1
    for a, b in zip(whole.steps, resumed.steps):
        assert all(torch.equal(a.state.modules[m].B, b.state.modules[m].B) for m in a.state.modules)
    if params.get("router") == "analytic":
        assert np.array_equal(restore_router(resumed.steps[-1]).weights(), restore_router(whole.steps[-1]).weights())


@pytest.mark.parametrize("params, message", [({"init": "warm"}, "parameter init must be one of fresh, previous"),
                                             ({"router": "knn"}, "parameter router must be one of oracle, prototype, analytic"),
                                             ({"router_dimensions": 0}, "router_dimensions must be >= 1"),
                                             ({"router_ridge": -1.0}, "router_ridge must be > 0")])
def test_bad_per_task_parameters_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig.from_dict({"tasks": ["builtin:topic"], "strategies": [{"name": "per_task", **params}]})


def test_analytic_routing_on_the_builtin_tasks_beside_the_prototype(tmp_path):
    """Both task-free routers on the same run: router accuracy after the last task, stored per cell."""
    raw = {"name": "routers", "base_model": "tiny-llama", "tasks": ["builtin:topic", "builtin:animal", "builtin:sentiment"],
           "max_train": 128, "max_test": 48, "lora": {"r": 4}, "future_tasks": "next",
           "train": {"steps": 20, "lr": 3e-3, "batch_size": 16, "max_length": 96, "progress": False},
           "eval": {"batch_size": 16},
           "strategies": [{"name": "per_task", "label": "prototype", "router": "prototype"},
                          {"name": "per_task", "label": "analytic", "router": "analytic"}]}
    results = run_bench(BenchConfig.from_dict(raw), Registry.open(tmp_path / "r"), echo=lambda m: None).results
    found = {label: results["strategies"][label]["cells"][label]["router"] for label in ("prototype", "analytic")}
    assert found["analytic"]["name"] == "analytic" and found["analytic"]["accuracy"][0] == 1.0
    assert found["analytic"]["accuracy"][-1] >= 0.9, found  # three tasks with different inputs
    assert found["analytic"]["accuracy"][-1] >= found["prototype"]["accuracy"][-1] - 0.05, found
