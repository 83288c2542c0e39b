"""`adapter-hub train`: one task per command, registered with its strategy state; --from continues a sequence."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from adapter_hub.cli import cli
from registry import Registry
from registry.testing import snapshot

COMMON = ["--base-model", "tiny-llama", "--steps", "30", "--lr", "3e-3", "--batch-size", "16", "--rank", "4",
          "--max-train", "128", "--max-test", "32"]


@pytest.fixture
def run(tmp_path):
    location = str(tmp_path / "registry")

    def invoke(*args, ok=True):
        result = CliRunner().invoke(cli, ["--registry", location, *args])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    invoke.registry = lambda: Registry.open(location)
    return invoke


def test_train_then_continue_the_sequence(run):
    first = run("train", *COMMON, "--task", "sentiment", "--data", "builtin:sentiment", "--strategy", "olora")
    assert first.stdout.splitlines()[0] == "sentiment:1" and "accuracy on sentiment" in first.output
    second = run("train", *COMMON, "--task", "flip", "--data", "builtin:sentiment_flip", "--from", "sentiment:1")
    assert second.stdout.splitlines()[0] == "flip:1"
    reg = run.registry()
    v = reg.get("flip:1")
    assert v.metadata["strategy"] == "olora" and [h["task"] for h in v.metadata["history"]] == ["sentiment", "flip"]
    assert [(e.parent, e.kind) for e in reg.lineage("flip:1")] == [("sentiment:1", "trained_from")]
    assert v.rank == 8 and reg.load("flip:1").num_parameters() == 2 * reg.load("sentiment:1").num_parameters()
    assert reg.evaluations("flip:1")[0]["metric"] == "accuracy"
    assert "orthogonality" in v.metadata["info"]


@pytest.mark.parametrize("args, message", [
    (["--task", "t", "--data", "builtin:nope"], "unknown built-in task 'nope'"),
    (["--task", "t", "--data", "/no/such/folder"], "no such task folder"),
    (["--task", "bad name", "--data", "builtin:topic"], "invalid task name"),
    (["--task", "t", "--data", "builtin:topic", "--from", "missing:1"], "no task named 'missing'"),
    (["--task", "t", "--data", "builtin:topic", "--param", "nonsense=1"], "has no parameter"),
    (["--task", "sentiment", "--data", "builtin:topic", "--from", "sentiment:1"], "already in this sequence"),
    (["--task", "t", "--data", "builtin:topic", "--from", "sentiment:1", "--strategy", "ewc"], "was trained with strategy"),
])
def test_bad_train_requests_register_nothing(run, args, message):
    run("train", *COMMON, "--task", "sentiment", "--data", "builtin:sentiment", "--no-eval")
    before = snapshot(run.registry())
    result = run("train", *COMMON, *args, ok=False)
    assert result.exit_code != 0 and message in result.output, result.output
    assert snapshot(run.registry()) == before


def test_strategy_choices_match_the_strategies():
    from adapter_hub.cli.learn_cmds import STRATEGY_NAMES
    from adapter_hub.continual import STRATEGIES

    assert STRATEGY_NAMES == list(STRATEGIES)
