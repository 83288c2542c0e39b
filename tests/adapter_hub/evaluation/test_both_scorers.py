"""Two scorers in one pass: generation (what a user of the adapter gets) and label ranking, sharing
the prompt pass; their disagreement is the forgetting that ranking cannot see."""

from __future__ import annotations

import numpy as np
import pytest

from adapter_hub import LoraConfig, attach
from adapter_hub.bench.cells import pack
from adapter_hub.bench.summary import format_forgetting, summarise
from adapter_hub.data import Example, Task, load_task
from adapter_hub.evaluation import CURRENT, EvalConfig, evaluate_states, score
from adapter_hub.training import TrainConfig, train_task


def test_both_scorers_in_one_pass_equal_each_scorer_alone(tiny_model, tokenizer):
    """On an untrained model the scorers disagree (generation rarely prints a label; ranking always
    picks one), and scoring both at once gives exactly what each gives alone."""
    model = tiny_model()
    task = load_task("builtin:topic", max_test=48)
    both = score(model, tokenizer, task, config=EvalConfig(scorers=["generate", "loglik"], max_length=128))[CURRENT]
    alone = {name: score(model, tokenizer, task, config=EvalConfig(scorer=name, max_length=128))[CURRENT]
             for name in ("generate", "loglik")}
    assert both.scorer == "generate" and set(both.also) == {"loglik"}
    for name, found in (("generate", both), ("loglik", both.also["loglik"])):
        assert found.predictions == alone[name].predictions and found.correct == alone[name].correct, name
    assert both.correct != both.also["loglik"].correct  # a real disagreement, not two copies
    assert set(both.also["loglik"].predictions) <= set(task.labels)  # ranking can only name a label


def test_both_scorers_through_routed_states(tiny_model, tokenizer):
    model = tiny_model()
    task = load_task("builtin:sentiment", max_train=64, max_test=32)
    attach(model, LoraConfig(r=4), name="a", seed=0)
    train_task(model, tokenizer, task, TrainConfig(steps=30, lr=3e-3, batch_size=16, progress=False))
    from adapter_hub import LoraAdapter
    from adapter_hub.lora import detach

    adapter = LoraAdapter.from_model(model, "a")
    detach(model)
    states = {"trained": adapter, "base": None}
    both = evaluate_states(model, tokenizer, [task], states, EvalConfig(scorers=["generate", "loglik"]))
    for name in ("generate", "loglik"):
        alone = evaluate_states(model, tokenizer, [task], states, EvalConfig(scorer=name))
        for label in states:
            found = both[label][task.name] if name == "generate" else both[label][task.name].also["loglik"]
            assert found.correct == alone[label][task.name].correct and found.state == label


def test_bad_scorers_are_refused():
    with pytest.raises(ValueError, match="scorers must be distinct names from loglik, generate"):
        EvalConfig(scorers=["generate", "bleu"])
    with pytest.raises(ValueError, match="distinct"):
        EvalConfig(scorers=["loglik", "loglik"])
    free = Task("free", [Example("a", "b")], [Example("a", "b")], labels=None)
    with pytest.raises(ValueError, match="free-text targets"):
        score(None, None, free, config=EvalConfig(scorers=["generate", "loglik"]))


def _two_task_cell(seed: int, gen_final: float, ll_final: float) -> dict:
    """Task 1 learnt to 1.0 by both scorers; after task 2, generate keeps `gen_final` of it, loglik
    `ll_final` (exact fractions of 100 examples, so BWT is known exactly)."""
    def bits(p: float) -> list[int]:
        return [1] * round(100 * p) + [0] * (100 - round(100 * p))

    def scored(final: float) -> dict:
        correct = [[bits(1.0), None], [bits(final), bits(1.0)]]
        return {"matrix": [[1.0, 0.0], [final, 1.0]], "correct": [[None if c is None else pack(c) for c in row]
                                                                    for row in correct]}

    return {"seed": seed, "order": 0, "tasks": ["t1", "t2"], "states": ["t1:1", "t2:1"], **scored(gen_final),
            "also": {"loglik": scored(ll_final)}}


def test_format_forgetting_by_hand():
    """generate-BWT = 0.4 − 1 = −0.6 and loglik-BWT = 0.9 − 1 = −0.1: format forgetting −0.5 (each
    seed the same, so the interval is a point)."""
    results = {"tasks": ["t1", "t2"], "scorer": "generate", "scorers": ["generate", "loglik"],
               "base_by_task": {"t1": 0.0, "t2": 0.0}, "base_correct": {t: pack([0] * 100) for t in ("t1", "t2")},
               "base_also": {"loglik": {t: {"accuracy": 0.0, "correct": pack([0] * 100)} for t in ("t1", "t2")}},
               "strategies": {"seq": {"strategy": "seq", "params": {}, "cells": {
                   f"seq/s{s}": _two_task_cell(s, 0.4, 0.9) for s in range(2)}}}}
    summarise(results, final=True)
    entry = results["strategies"]["seq"]
    assert entry["metrics"]["bwt"] == pytest.approx(-0.6) and entry["also"]["loglik"]["metrics"]["bwt"] == pytest.approx(-0.1)
    found = entry["format_forgetting"]
    assert found["diff"] == pytest.approx(-0.5) and found["cells"] == 2 and found["significant"]
    assert format_forgetting(results, entry, 200)["diff"] == pytest.approx(-0.5)
    # both tasks learnt (1.0 against a base of 0) by both scorers
    assert all(c["learnt"] for c in entry["competence"].values())
    assert all(c["learnt"] for c in entry["also"]["loglik"]["competence"].values())
    assert np.isclose(entry["competence"]["t1"]["mean"], 1.0)
