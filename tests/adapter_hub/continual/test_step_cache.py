"""Never the same work twice: a training call whose content key a registered state already has is
reused instead of trained, a state already scored on a task is not scored again — and either way
the results are bit-identical to doing the work again."""

from __future__ import annotations

import dataclasses

import pytest
import tomllib

from adapter_hub import LoraConfig
from adapter_hub.bench.config import BenchConfig, config_changes
from adapter_hub.bench.driver import run_bench
from adapter_hub.continual import ContinualConfig
from adapter_hub.continual.runner import run_sequence
from adapter_hub.continual.step_cache import TAG, same_factors
from adapter_hub.data import load_task
from adapter_hub.training import TrainConfig
from registry import Registry

CONFIG = ContinualConfig(LoraConfig(r=4), TrainConfig(lr=3e-3, steps=5, batch_size=8, max_length=64, progress=False))


@pytest.fixture
def tasks():
    return [load_task("builtin:topic", max_train=32, max_test=8), load_task("builtin:sentiment", max_train=32, max_test=8)]


def test_first_steps_are_trained_once_and_bit_identical(tiny_model, tokenizer, tasks, tmp_path):
    model = tiny_model("tiny-llama")
    reg = Registry.open(tmp_path / "r")
    reused = {}
    for strategy in ("seq", "replay", "mtl", "per_task", "nlora"):
        shared = run_sequence(strategy, model, tokenizer, tasks, CONFIG, registry=reg, run=f"run/{strategy}")
        alone = run_sequence(strategy, model, tokenizer, tasks, CONFIG)  # no registry: nothing to reuse
        assert all(same_factors(a.state, b.state) for a, b in zip(shared.steps, alone.steps)), strategy
        reused[strategy] = [bool(s.train.reused) for s in shared.steps]
    # seq trains the first step; replay (empty memory), mtl (one task) and per_task (one adapter) are
    # that same computation; nlora's sparsity penalty makes its first step different.
    assert reused == {"seq": [False, False], "replay": [True, False], "mtl": [True, False],
                      "per_task": [True, False], "nlora": [False, False]}
    first = reg.search(task="topic", tag={"run": "run/replay", "step": "1", "role": "state"})[0]
    assert first.metadata["loss"]["reused_from"] == "topic:1" and first.metadata["loss"]["steps"] == 5


def test_a_changed_input_is_never_reused(tiny_model, tokenizer, tasks, tmp_path):
    model = tiny_model("tiny-llama")
    reg = Registry.open(tmp_path / "r")
    run_sequence("seq", model, tokenizer, tasks[:1], CONFIG, registry=reg, run="a")
    other_seed = ContinualConfig(CONFIG.lora, dataclasses.replace(CONFIG.train, seed=1))
    other_lr = ContinualConfig(CONFIG.lora, TrainConfig(lr=1e-3, steps=5, batch_size=8, max_length=64, seed=0))
    fewer = [load_task("builtin:topic", max_train=16, max_test=8)]
    for config, data in ((other_seed, tasks[:1]), (other_lr, tasks[:1]), (CONFIG, fewer)):
        result = run_sequence("seq", model, tokenizer, data, config, registry=reg, run=f"b{len(reg.versions('topic'))}")
        assert not result.steps[0].train.reused
    again = run_sequence("seq", model, tokenizer, tasks[:1], CONFIG, registry=reg, run="c")
    assert again.steps[0].train.reused  # the same inputs once more: reused


def test_a_state_from_an_earlier_plateau_rule_is_never_served(tiny_model, monkeypatch):
    from adapter_hub.continual.step_cache import step_key
    from adapter_hub.training import plateau

    model = tiny_model("tiny-llama")
    plateau_config = TrainConfig(until="plateau", max_steps=32, progress=False)
    budget_config = TrainConfig(steps=5, progress=False)

    def key(config: TrainConfig) -> str:
        return step_key(model, [], [], {}, [], config, pad_id=0, frozen_A=False)

    before = key(plateau_config), key(budget_config)
    monkeypatch.setattr(plateau, "RULE", plateau.RULE - 1)
    assert key(plateau_config) != before[0]  # a plateau state of the older rule: not this rule's result
    assert key(budget_config) == before[1]  # a fixed budget has no stopping rule


def test_a_multi_task_stop_is_keyed_by_how_its_dev_examples_group_into_tasks(tiny_model):
    from adapter_hub.continual.step_cache import step_key

    model = tiny_model("tiny-llama")
    config = TrainConfig(until="plateau", max_steps=32, progress=False)

    def key(sizes) -> str:
        return step_key(model, [], [], {}, [], config, pad_id=0, frozen_A=False, dev_split_sizes=sizes)

    # One task: the mean of per-task accuracies is its accuracy, so the key (and states cached under the
    # pooled judgement) stay valid. Several: the grouping decides the stop, and the pooled-era key differs.
    assert key([25]) == key(())
    assert len({key(()), key([25, 40]), key([40, 25])}) == 3


def test_a_step_trained_beside_the_summed_frozen_branch_is_keyed_apart(tiny_model):
    """The summed branch rounds differently from running the components one by one, so a state trained
    one way is never served for the other (continual/frozen.py)."""
    from adapter_hub.continual.step_cache import step_key

    model = tiny_model("tiny-llama")
    config = TrainConfig(steps=5, progress=False)
    keys = {summed: step_key(model, [], [], {}, [], config, pad_id=0, frozen_A=False, frozen_summed=summed)
            for summed in (False, True)}
    assert keys[False] != keys[True]


RUN = """
name = "shared"
base_model = "tiny-llama"
tasks = ["builtin:topic", "builtin:sentiment"]
max_train = 64
max_test = 24
share_work = {share}
[lora]
r = 4
[train]
steps = 10
lr = 3e-3
batch_size = 16
max_length = 96
[[strategies]]
name = "seq"
[[strategies]]
name = "replay"
[[strategies]]
name = "per_task"
"""


def test_a_bench_run_shares_work_and_stores_the_same_numbers(tmp_path, monkeypatch):
    import adapter_hub.bench.cell as cell_runner  # where the benchmark's scoring calls evaluate_states

    rows = []
    real = cell_runner.evaluate_states

    def counting(model, tokenizer, tasks, states, config=None):
        rows.append(len(tasks) * len(states))
        return real(model, tokenizer, tasks, states, config)

    monkeypatch.setattr(cell_runner, "evaluate_states", counting)
    runs = {}
    for share in ("true", "false"):
        rows.clear()
        config = BenchConfig.from_dict(tomllib.loads(RUN.format(share=share)))
        runs[share] = (run_bench(config, Registry.open(tmp_path / share), echo=lambda m: None).results, sum(rows))
    (on, scored_on), (off, scored_off) = runs["true"], runs["false"]
    for label in ("seq", "replay", "per_task"):
        a, b = on["strategies"][label]["cells"][label], off["strategies"][label]["cells"][label]
        assert a["matrix"] == b["matrix"] and a["correct"] == b["correct"], label
    assert on["strategies"]["replay"]["cells"]["replay"]["shared_steps"] == 1
    assert off["strategies"]["replay"]["cells"]["replay"]["shared_steps"] == 0
    # replay's first state = seq's (2 tasks), per_task's first adapter = seq's first state and its
    # unlearnt task is the base model's score (1 more): 5 fewer (state, task) scorings of 14
    assert (scored_off, scored_on) == (14, 9)
    # the switch never blocks resuming a run: it changes how fast, not what
    assert config_changes({"share_work": True}, {"share_work": False}) == []


def test_a_plateau_cap_is_checked_on_reuse_not_hashed():
    from adapter_hub.continual.step_cache import serves

    train = TrainConfig(until="plateau", eval_every=16, max_steps=240, progress=False)
    assert serves({"reason": "plateau", "steps_run": 96}, train)  # stopped on its own, before either cap
    assert serves({"reason": "plateau", "steps_run": 240}, train)  # at a scheduled check, on the cap
    assert not serves({"reason": "plateau", "steps_run": 100}, train)  # a forced check at an old cap of 100
    assert not serves({"reason": "plateau", "steps_run": 256}, train)  # past this cap
    assert not serves({"reason": "max_steps", "steps_run": 160}, train)  # would have gone on under 240
    assert serves({"reason": "max_steps", "steps_run": 240}, train)
    assert not serves(None, train)  # a budget-trained state is never a plateau's result
    assert serves(None, TrainConfig(steps=5))


def _plateau(max_steps: int, patience: int) -> ContinualConfig:
    # min_delta 0.99: no check after the first trained one counts as progress, so the stop is known in
    # advance — at check 1 + patience (every 2 steps), or at the cap if that comes first
    return ContinualConfig(LoraConfig(r=4), TrainConfig(until="plateau", lr=3e-3, batch_size=8, max_length=64,
                                                        eval_every=2, patience=patience, min_delta=0.99,
                                                        max_steps=max_steps, progress=False))


def test_raising_a_plateau_cap_retrains_only_the_steps_that_reached_the_old_one(tiny_model, tokenizer, tasks,
                                                                               tmp_path):
    model = tiny_model("tiny-llama")
    reg = Registry.open(tmp_path / "r")
    first = run_sequence("seq", model, tokenizer, tasks[:1], _plateau(8, 1), registry=reg, run="a")
    assert first.steps[0].train.stop["reason"] == "plateau" and first.steps[0].train.steps == 4
    raised = run_sequence("seq", model, tokenizer, tasks[:1], _plateau(12, 1), registry=reg, run="b")
    alone = run_sequence("seq", model, tokenizer, tasks[:1], _plateau(12, 1))  # no registry: trained
    assert raised.steps[0].train.reused and same_factors(raised.steps[0].state, alone.steps[0].state)

    capped = run_sequence("seq", model, tokenizer, tasks[:1], _plateau(4, 5), registry=reg, run="c")
    assert capped.steps[0].train.stop["reason"] == "max_steps"
    assert not run_sequence("seq", model, tokenizer, tasks[:1], _plateau(6, 5), registry=reg, run="d").steps[0].train.reused
    assert run_sequence("seq", model, tokenizer, tasks[:1], _plateau(4, 5), registry=reg, run="e").steps[0].train.reused


def test_a_state_keyed_with_its_cap_by_an_older_release_is_still_found(tiny_model, tokenizer, tasks, tmp_path,
                                                                      monkeypatch):
    import adapter_hub.continual.base as base

    real = base.step_key

    def older_release(*args, legacy_max_steps=None, **kwargs):  # the cap in the hash, as keys were made
        train = args[5]
        return real(*args, legacy_max_steps=train.max_steps if train.plateau else None, **kwargs)

    model = tiny_model("tiny-llama")
    reg = Registry.open(tmp_path / "r")
    monkeypatch.setattr(base, "step_key", older_release)
    run_sequence("seq", model, tokenizer, tasks[:1], _plateau(8, 1), registry=reg, run="old")
    monkeypatch.setattr(base, "step_key", real)
    again = run_sequence("seq", model, tokenizer, tasks[:1], _plateau(12, 1), registry=reg, run="new")
    assert again.steps[0].train.reused
    tagged = reg.search(tag={"run": "new", "step": "1", "role": "state"})[0].tags[TAG]
    assert tagged != reg.search(tag={"run": "old", "step": "1", "role": "state"})[0].tags[TAG]  # re-keyed capless


def test_the_dev_floor_keys_a_step_by_its_split_only(tiny_model, monkeypatch):
    """dev_min only moves examples between the training and dev splits, which the key hashes: a split it
    leaves as it was keeps its key, so states trained before the setting existed are still served."""
    from adapter_hub.continual.step_cache import step_key

    model = tiny_model("tiny-llama")

    def key(**changes) -> str:
        config = TrainConfig(until="plateau", max_steps=32, progress=False, **changes)
        return step_key(model, [], [], {}, [], config, pad_id=0, frozen_A=False)

    now = key(dev_min=1), key(dev_min=50)
    assert now[0] == now[1]
    real_to_dict = TrainConfig.to_dict
    monkeypatch.setattr(TrainConfig, "to_dict", lambda self: {k: v for k, v in real_to_dict(self).items()
                                                              if k != "dev_min"})
    assert key() == now[0]  # the settings as an older adapter-hub hashed them
