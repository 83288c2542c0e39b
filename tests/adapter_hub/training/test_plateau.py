"""Training to competence (until = "plateau"): when it stops, what it restores, what it reads."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from adapter_hub import LoraConfig, attach
from adapter_hub.bench.config import BenchConfig
from adapter_hub.continual import ContinualConfig, make_strategy
from adapter_hub.continual.runner import run_sequence
from adapter_hub.data import load_task
from adapter_hub.data.prompts import encode_examples
from adapter_hub.lora import lora_parameters
from adapter_hub.training import TrainConfig, train_on
from registry import Registry

PLATEAU = dict(until="plateau", eval_every=4, patience=3, min_delta=0.01, max_steps=200, lr=3e-3, batch_size=8,
               progress=False)


def _scripted(model, values):
    """A dev check that returns `values` in turn and keeps a copy of the adapter at every check."""
    seen: list[list[torch.Tensor]] = []

    def check() -> float:
        seen.append([p.detach().clone() for p in lora_parameters(model)])
        return values[min(len(seen) - 1, len(values) - 1)]

    return check, seen


def test_stops_when_the_dev_curve_is_flat_and_restores_the_best_state_bit_for_bit(tiny_model, tokenizer):
    model = attach(tiny_model(), LoraConfig(r=4, alpha=8), name="a", seed=0)
    task = load_task("builtin:topic", max_train=64)
    examples, _ = encode_examples(tokenizer, task, task.train, 128)
    # checks at steps 0, 4, 8, ...: best at step 8 (0.70); 0.705 at step 16 is not a gain above min_delta
    curve = [0.30, 0.55, 0.70, 0.70, 0.705, 0.69, 0.99]
    check, seen = _scripted(model, curve)
    result = train_on(model, examples, TrainConfig(**PLATEAU), pad_id=tokenizer.pad_token_id, dev_check=check)
    dev_seconds = result.stop.pop("dev_seconds")
    assert result.stop == {"reason": "plateau", "steps_run": 20, "best_step": 8, "best_dev": 0.70,
                           "dev": [[0, 0.3], [4, 0.55], [8, 0.7], [12, 0.7], [16, 0.705], [20, 0.69]]}
    assert 0 <= dev_seconds < result.seconds
    assert result.steps == len(result.losses) == 20
    restored = [p.detach() for p in lora_parameters(model)]
    assert all(torch.equal(r, s) for r, s in zip(restored, seen[2]))  # the state scored at step 8
    assert not all(torch.equal(r, s) for r, s in zip(restored, seen[-1]))  # not the last one


def test_the_state_before_training_is_never_restored(tiny_model, tokenizer):
    # The regime run's flaw, scripted: the previous task's adapter scores best on a small dev split
    # (0.52 at step 0) and training does not beat it within patience. The task's state must be a
    # trained one (the best trained check), never the untrained start.
    model = attach(tiny_model(), LoraConfig(r=4, alpha=8), name="a", seed=0)
    task = load_task("builtin:topic", max_train=64)
    examples, _ = encode_examples(tokenizer, task, task.train, 128)
    check, seen = _scripted(model, [0.52, 0.44, 0.48, 0.40, 0.43, 0.45])
    config = TrainConfig(**{**PLATEAU, "patience": 2, "min_delta": 0.02})
    result = train_on(model, examples, config, pad_id=tokenizer.pad_token_id, dev_check=check)
    # step 4 (0.44) is the first best; 0.48 at step 8 beats it by more than 0.02; 12 and 16 do not
    assert result.stop["reason"] == "plateau" and result.stop["steps_run"] == 16
    assert result.stop["best_step"] == 8 and result.stop["best_dev"] == 0.48
    assert result.stop["dev"][0] == [0, 0.52]  # the start stays on the curve
    restored = [p.detach() for p in lora_parameters(model)]
    assert all(torch.equal(r, s) for r, s in zip(restored, seen[2]))
    assert not all(torch.equal(r, s) for r, s in zip(restored, seen[0]))


def test_a_curve_that_keeps_rising_runs_to_max_steps(tiny_model, tokenizer):
    model = attach(tiny_model(), LoraConfig(r=4, alpha=8), name="a", seed=0)
    task = load_task("builtin:topic", max_train=32)
    examples, _ = encode_examples(tokenizer, task, task.train, 128)
    check, seen = _scripted(model, [i / 10 for i in range(10)])  # every check a real gain
    config = TrainConfig(**{**PLATEAU, "max_steps": 10})
    result = train_on(model, examples, config, pad_id=tokenizer.pad_token_id, dev_check=check)
    assert result.stop["reason"] == "max_steps" and result.stop["steps_run"] == 10
    assert [s for s, _ in result.stop["dev"]] == [0, 4, 8, 10] and result.stop["best_step"] == 10
    assert all(torch.equal(p.detach(), s) for p, s in zip(lora_parameters(model), seen[-1]))


def test_plateau_needs_a_dev_check(tiny_model, tokenizer):
    model = attach(tiny_model(), LoraConfig(r=4, alpha=8), name="a", seed=0)
    task = load_task("builtin:topic", max_train=8)
    examples, _ = encode_examples(tokenizer, task, task.train, 128)
    with pytest.raises(ValueError, match="needs a dev check"):
        train_on(model, examples, TrainConfig(**PLATEAU), pad_id=tokenizer.pad_token_id)


class SealedList(list):
    """A test set nothing may read while training runs."""

    def __getitem__(self, i):
        raise AssertionError("a test example was read during training")

    def __iter__(self):
        raise AssertionError("a test example was read during training")

    def __len__(self):
        raise AssertionError("a test example was read during training")


@pytest.mark.parametrize("strategy", ["seq", "mtl", "replay"])
def test_a_strategy_trains_on_the_rest_and_stops_on_the_dev_split_never_on_test(tiny_model, tokenizer, strategy):
    tasks = [load_task(f"builtin:{n}", max_train=80, max_test=16) for n in ("topic", "animal")]
    for t in tasks:
        t.test = SealedList(t.test)
    config = ContinualConfig(LoraConfig(r=4), TrainConfig(**{**PLATEAU, "max_steps": 12}))
    runner = make_strategy(strategy, tiny_model(), tokenizer, config)
    calls = []
    real = runner.train
    runner.train = lambda *a, **k: calls.append(a[2]) or real(*a, **k)
    def encoded(task, examples) -> Counter:
        return Counter((tuple(e.prompt), tuple(e.target)) for e in runner.encode(task, examples)[0])

    for k, task in enumerate(tasks, start=1):
        memory = Counter()
        if strategy == "replay":
            for t, ex in runner.buffer.items:
                memory += encoded(t, [ex])
        result = runner.learn(task, k, tasks[:k - 1])
        train_idx, dev_idx = runner.split(task)
        assert len(dev_idx) == 8 and sorted(train_idx + dev_idx) == list(range(80))  # 10% held out
        # what training received: each learnt task's examples outside its dev split (and replay's memory)
        expected = memory
        for t in (tasks[:k] if strategy == "mtl" else [task]):
            expected = expected + encoded(t, [t.train[i] for i in runner.split(t)[0]])
        assert Counter((tuple(e.prompt), tuple(e.target)) for e in calls[-1]) == expected
        stop = result.train.summary()["stop"]
        assert stop["reason"] in ("plateau", "max_steps") and stop["dev"][0][0] == 0
        assert stop["steps_run"] == result.train.steps <= (12 * k if strategy == "mtl" else 12)


def test_an_interrupted_plateau_run_resumes_to_the_same_adapter(tmp_path, tiny_model, tokenizer):
    """A crash in the middle of task 2's plateau training: the resumed run retrains task 2 from the
    registered task-1 state and ends with the bit-identical adapter."""
    tasks = [load_task(f"builtin:{n}", max_train=64) for n in ("topic", "animal")]
    config = ContinualConfig(LoraConfig(r=4), TrainConfig(**{**PLATEAU, "max_steps": 16}))
    whole = run_sequence("seq", tiny_model(), tokenizer, tasks, config).steps[-1].state
    reg = Registry.open(tmp_path / "r")
    import adapter_hub.continual.base as base

    real_check, checks = base.Strategy.dev_check, []

    def failing(self, dev):
        inner = real_check(self, dev)

        def check():
            checks.append(dev[0].name)
            if checks.count("animal") == 2:  # the second check of task 2: mid-task
                raise KeyboardInterrupt
            return inner()
        return check

    base.Strategy.dev_check = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sequence("seq", tiny_model(), tokenizer, tasks, config, registry=reg, run="r")
    finally:
        base.Strategy.dev_check = real_check
    resumed = run_sequence("seq", tiny_model(), tokenizer, tasks, config, registry=reg, run="r")
    assert resumed.resumed == 1
    final = resumed.steps[-1].state
    assert all(torch.equal(final.modules[m].A, whole.modules[m].A) and torch.equal(final.modules[m].B, whole.modules[m].B)
               for m in whole.modules)
    assert reg.get(resumed.refs[-1]).metadata["loss"]["stop"]["dev"][0][0] == 0  # the curve is registered


@pytest.mark.parametrize("train, message", [
    ({"until": "plateau", "patience": 0}, "[train]: patience must be >= 1"),
    ({"until": "plateau", "dev_fraction": 1.5}, "[train]: dev_fraction must be in (0, 1)"),
    ({"until": "forever"}, "[train] until must be one of 'budget', 'plateau'"),
    ({"until": "plateau", "schedule": "cosine"}, "needs a known end"),
    ({"until": "plateau", "dev_min": 0}, "[train]: dev_min must be >= 1"),
    ({"until": "plateau", "dev_min": 80, "dev_max": 64}, "[train]: dev_min (80) must not exceed dev_max (64)"),
])
def test_bad_plateau_settings_are_refused_naming_the_key(train, message):
    raw = {"tasks": ["builtin:topic"], "strategies": [{"name": "seq"}], "train": train}
    with pytest.raises(ValueError) as info:
        BenchConfig.from_dict(raw)
    assert message in str(info.value)


def test_the_dev_split_is_seeded_stratified_and_from_training_examples_only():
    task = load_task("builtin:topic", max_train=200)
    train, dev = task.dev_split(0.1, 100, seed=3)
    assert len(dev) == 20 and sorted(train + dev) == list(range(200))
    assert (train, dev) == task.dev_split(0.1, 100, seed=3) != task.dev_split(0.1, 100, seed=4)
    share = {label: sum(task.train[i].target == label for i in dev) / 20 for label in task.labels}
    whole = {label: sum(ex.target == label for ex in task.train) / 200 for label in task.labels}
    assert all(abs(share[k] - whole[k]) <= 0.05 + 1e-9 for k in task.labels)  # stratified
    assert len(task.dev_split(0.5, 7, seed=0)[1]) == 7  # dev_max caps it
    with pytest.raises(ValueError, match="leave none to hold out"):
        dataclasses.replace(task, train=task.train[:1]).dev_split(0.1, None, 0)


def test_the_dev_floor_holds_out_at_least_dev_min_but_never_a_quarter_of_the_task():
    task = load_task("builtin:topic", max_train=200)
    assert len(task.dev_split(0.1, 100, seed=0)[1]) == 20
    train, dev = task.dev_split(0.1, 100, seed=0, min_n=50)
    assert len(dev) == 50 and sorted(train + dev) == list(range(200))
    share = Counter(task.train[i].target for i in dev)
    assert all(abs(share[k] / 50 - 1 / len(task.labels)) <= 0.05 + 1e-9 for k in task.labels)  # still stratified
    assert len(task.dev_split(0.1, 40, seed=0, min_n=50)[1]) == 40  # dev_max still caps
    small = dataclasses.replace(task, train=task.train[:60])
    assert len(small.dev_split(0.1, 100, seed=0, min_n=50)[1]) == 15  # a quarter of 60, not 50 (10% is 6)


def test_a_strategy_holds_out_the_dev_floor(tiny_model, tokenizer):
    task = load_task("builtin:topic", max_train=120)
    config = ContinualConfig(LoraConfig(r=4), TrainConfig(**{**PLATEAU, "dev_min": 30}))
    runner = make_strategy("seq", tiny_model(), tokenizer, config)
    train_idx, dev_idx = runner.split(task)
    assert len(dev_idx) == 30 and len(train_idx) == 90  # 10% would be 12
