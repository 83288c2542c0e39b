"""A merge judged on tasks (merge_eval.judge_merge, `merge --eval`): accuracies against one-at-a-time
scoring, normalized accuracy by hand, its bootstrap against a direct loop, the merged version's evaluations recorded, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from adapter_hub import LoraAdapter, LoraConfig, attach, detach, ops
from adapter_hub.cli import cli
from adapter_hub.data import load_task
from adapter_hub.evaluation.merge_judge import (
    MERGED,
    judge_merge,
    normalized_difference,
    normalized_interval,
)
from adapter_hub.evaluation.states import evaluate_states_loop
from adapter_hub.lora import lora_layers
from registry import Registry


def _adapter(model, seed: int) -> LoraAdapter:
    attach(model, LoraConfig(r=4, alpha=8), name="x", seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["x"].copy_(torch.randn(layer.lora_B["x"].shape, generator=g) * 0.3)
    adapter = LoraAdapter.from_model(model, "x")
    detach(model, "x")
    return adapter


@pytest.fixture
def setup(tiny_model, tokenizer):
    model = tiny_model("tiny-llama")
    tasks = [load_task("builtin:topic", max_test=12), load_task("builtin:sentiment", max_test=12)]
    parts = {"topic-adapter": _adapter(model, 1), "sentiment-adapter": _adapter(model, 2)}
    return model, tokenizer, tasks, parts


def test_judgement_matches_scoring_each_adapter_alone(setup):
    model, tokenizer, tasks, parts = setup
    merged = ops.merge(list(parts.values()), "iso_c")
    judged = judge_merge(model, tokenizer, tasks, merged, parts)
    alone = evaluate_states_loop(model, tokenizer, tasks, {MERGED: merged, **parts})
    for state, per in alone.items():
        assert judged.accuracy[state] == {t: s.accuracy for t, s in per.items()}
    assert judged.own == {"topic": "topic-adapter", "sentiment": "sentiment-adapter"}
    for t, label in judged.own.items():
        own = alone[label][t].accuracy
        assert judged.normalized[t] == (alone[MERGED][t].accuracy / own if own else None)
    known = [v for v in judged.normalized.values() if v is not None]
    assert judged.normalized_mean == pytest.approx(sum(known) / len(known))


def test_known_part_accuracies_give_the_same_judgement_with_only_the_merge_scored(setup):
    model, tokenizer, tasks, parts = setup
    first = judge_merge(model, tokenizer, tasks, ops.merge(list(parts.values()), "linear"), parts)
    merged = ops.merge(list(parts.values()), "ties", density=0.5)
    known = {label: first.accuracy[label] for label in parts}
    fast = judge_merge(model, tokenizer, tasks, merged, parts, known=known)
    assert fast == judge_merge(model, tokenizer, tasks, merged, parts)
    with pytest.raises(ValueError, match="every part's accuracy on every task"):
        judge_merge(model, tokenizer, tasks, merged, parts, known={"topic-adapter": known["topic-adapter"]})


def test_own_task_only_judgement_gives_the_same_normalized_accuracy(setup):
    model, tokenizer, tasks, parts = setup
    merged = ops.merge(list(parts.values()), "tsv")
    full = judge_merge(model, tokenizer, tasks, merged, parts)
    own_only = judge_merge(model, tokenizer, tasks, merged, parts, cross=False)
    assert own_only.normalized == full.normalized and own_only.normalized_mean == full.normalized_mean
    assert own_only.accuracy == {MERGED: full.accuracy[MERGED], "topic-adapter": {"topic": full.accuracy[
        "topic-adapter"]["topic"]}, "sentiment-adapter": {"sentiment": full.accuracy["sentiment-adapter"]["sentiment"]}}
    known = {label: own_only.accuracy[label] for label in parts}
    again = judge_merge(model, tokenizer, tasks, ops.merge(list(parts.values()), "linear"), parts, known=known,
                        cross=False)
    assert again == judge_merge(model, tokenizer, tasks, ops.merge(list(parts.values()), "linear"), parts, cross=False)
    with pytest.raises(ValueError, match="every part's accuracy on every task it is judged on"):
        judge_merge(model, tokenizer, tasks, merged, parts, known={"topic-adapter": known["topic-adapter"]}, cross=False)
    with pytest.raises(ValueError, match="every part's accuracy on every task"):  # own-only known, cross judgement
        judge_merge(model, tokenizer, tasks, merged, parts, known=known)


def test_judge_refuses_unpaired_parts(setup):
    model, tokenizer, tasks, parts = setup
    merged = ops.merge(list(parts.values()), "linear")
    with pytest.raises(ValueError, match="1 parts for 2 tasks"):
        judge_merge(model, tokenizer, tasks, merged, {"a": parts["topic-adapter"]})
    with pytest.raises(ValueError, match=r"no part for task\(s\) \['sentiment'\]"):
        judge_merge(model, tokenizer, tasks, merged, parts, own={"topic": "topic-adapter"})


def test_merge_eval_on_the_command_line_records_the_merged_scores(setup, tmp_path):
    model, tokenizer, tasks, parts = setup
    location = str(tmp_path / "registry")
    reg = Registry.open(location)
    for label, adapter in parts.items():
        reg.register(adapter, task=label)

    def run(*args):
        return CliRunner().invoke(cli, ["--registry", location, *args])

    bad = run("merge", "topic-adapter", "sentiment-adapter", "--method", "tsv", "--eval", "builtin:topic",
              "--task", "m")
    assert bad.exit_code != 0 and "2 adapters but 1 tasks" in bad.output
    assert [t["task"] for t in reg.tasks()] == ["sentiment-adapter", "topic-adapter"]  # nothing registered
    out = run("merge", "topic-adapter", "sentiment-adapter", "--method", "tsv", "--eval", "builtin:topic",
              "--eval", "builtin:sentiment", "--max-test", "12", "--task", "m")
    assert out.exit_code == 0, out.output
    assert "normalized" in out.output and "m:1" in out.output
    expected = judge_merge(model, tokenizer, tasks, reg.load("m:1"),
                           {label: reg.load(label) for label in parts})
    recorded = {e["task"]: e["value"] for e in reg.evaluations("m:1")}
    assert recorded == expected.accuracy[MERGED]
    judged_only = run("merge", "topic-adapter", "sentiment-adapter", "--method", "iso_c", "--eval",
                      "builtin:topic", "--eval", "builtin:sentiment", "--max-test", "12")
    assert judged_only.exit_code == 0 and "normalized" in judged_only.output  # scored, registered nowhere
    assert len(reg.tasks()) == 3


def _direct_bootstrap(merged, own, n_boot, seed):
    """The normalized-accuracy bootstrap written as a plain loop over draws (the same draws)."""
    rng = np.random.default_rng(seed)
    idx = {task: rng.integers(0, len(bits), size=(n_boot, len(bits))) for task, bits in own.items()}
    values = []
    for b in range(n_boot):
        ratios = []
        for task in own:
            o = np.mean([own[task][i] for i in idx[task][b]])
            if o > 0:
                ratios.append(np.mean([merged[task][i] for i in idx[task][b]]) / o)
        values.append(np.mean(ratios))
    return values


def test_normalized_interval_matches_a_direct_bootstrap():
    own = {"a": [1, 1, 1, 0, 1, 1, 0, 1], "b": [1, 0, 1, 0, 1, 0]}
    merged = {"a": [1, 0, 1, 0, 1, 1, 0, 0], "b": [1, 0, 0, 0, 1, 1]}
    got = normalized_interval(merged, own, n_boot=300, seed=3)
    assert got.value == pytest.approx(((4 / 8) / (6 / 8) + (3 / 6) / (3 / 6)) / 2)
    direct = _direct_bootstrap(merged, own, 300, 3)
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(direct, [2.5, 97.5])))
    assert got.low <= got.value <= got.high


def test_normalized_difference_is_significant_only_when_it_is():
    rng = np.random.default_rng(0)
    own = {t: (rng.random(300) < 0.8).astype(int).tolist() for t in ("a", "b")}
    weak = {t: [x * int(rng.random() < 0.6) for x in bits] for t, bits in own.items()}  # ~0.6 of own
    flipped = {t: list(bits) for t, bits in own.items()}
    flipped["a"][0] = 1 - flipped["a"][0]  # one answer of 600 differs: noise
    diff, significant = normalized_difference(own, weak, own)
    assert significant and diff.low > 0.2
    diff, significant = normalized_difference(flipped, own, own)
    assert not significant and diff.low <= 0 <= diff.high
    with pytest.raises(ValueError, match="task 'a': 2 merged results for 300 own results"):
        normalized_interval({"a": [1, 0], "b": own["b"]}, own)


def test_judgement_keeps_the_per_example_results_it_scored(setup):
    model, tokenizer, tasks, parts = setup
    judged = judge_merge(model, tokenizer, tasks, ops.merge(list(parts.values()), "linear"), parts, cross=False)
    assert set(judged.correct) == {MERGED, *parts}
    for t in tasks:
        assert sum(judged.correct[MERGED][t.name]) / len(t.test) == judged.accuracy[MERGED][t.name]
    assert judged.correct["topic-adapter"].keys() == {"topic"}
    assert "correct" not in judged.to_dict()
