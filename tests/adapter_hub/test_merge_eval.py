"""A merge judged on tasks (merge_eval.judge_merge, `merge --eval`): accuracies against one-at-a-time
scoring, normalized accuracy by hand, the merged version's evaluations recorded, bad input refused."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from adapter_hub import LoraAdapter, LoraConfig, attach, detach, ops
from adapter_hub.cli import cli
from adapter_hub.data import load_task
from adapter_hub.evaluate import evaluate_states_loop
from adapter_hub.lora import lora_layers
from adapter_hub.merge_eval import MERGED, judge_merge
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
