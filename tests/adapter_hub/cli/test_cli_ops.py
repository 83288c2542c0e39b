"""merge / compose / scale / reduce-rank on the command line: results registered with lineage, or
written as PEFT folders; every bad input exits non-zero having registered nothing."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from adapter_hub import LoraAdapter, ops
from adapter_hub.cli import cli
from adapter_hub.cli.ops_cmds import METHOD_NAMES
from registry import Registry
from registry.testing import snapshot, write_adapter


@pytest.fixture
def setup(tmp_path):
    location = str(tmp_path / "registry")
    reg = Registry.open(location)
    for seed, task in enumerate(["agnews", "yelp", "toxic"]):
        reg.register(write_adapter(tmp_path / task, seed, r=2 + seed), task=task)
    reg.alias("yelp:1", "best")
    reg.register(write_adapter(tmp_path / "other", 9, base="other", fingerprint="sha256:" + "cd" * 32), task="other")
    reg.register(write_adapter(tmp_path / "wide", 10, dim=24), task="wide")

    def run(*args, ok=True):
        result = CliRunner().invoke(cli, ["--registry", location, *args])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return reg, run


def test_method_list_matches_the_registry_of_methods():
    assert METHOD_NAMES == sorted(ops.METHODS)


def test_merge_registers_result_with_lineage(setup, tmp_path):
    reg, run = setup
    assert run("merge", "agnews", "yelp@best", "--method", "ties", "--density", "0.5", "--weights", "1,0.5",
               "--rank", "3", "--task", "merged").output.splitlines()[0] == "merged:1"
    edges = reg.lineage("merged:1")
    assert {(e.parent, e.kind) for e in edges} == {("agnews:1", "merged_from"), ("yelp:1", "merged_from")}
    params = edges[0].params
    assert (params["method"], params["density"], params["weights"], params["rank"]) == ("ties", 0.5, [1.0, 0.5], 3)
    assert reg.get("merged:1").rank == 3
    run("merge", "agnews", "yelp", "--out", str(tmp_path / "folder"))
    folder = LoraAdapter.load(tmp_path / "folder")
    a, y = reg.load("agnews:1"), reg.load("yelp:1")
    m = sorted(a.modules)[0]
    expected = a.delta_weight(m) + y.delta_weight(m)
    assert torch.allclose(folder.delta_weight(m), expected, atol=1e-5)


def test_compose_scale_reduce(setup):
    reg, run = setup
    assert run("compose", "0.5*agnews:1 + 0.5*yelp@best - 0.2*toxic", "--task", "c").output.splitlines()[0] == "c:1"
    composed, parts = reg.load("c:1"), [reg.load(r) for r in ("agnews:1", "yelp:1", "toxic:1")]
    m = sorted(composed.modules)[0]
    expected = sum(w * p.delta_weight(m) for w, p in zip([0.5, 0.5, -0.2], parts))
    assert torch.allclose(composed.delta_weight(m), expected, atol=1e-5)
    assert {e.parent for e in reg.lineage("c:1")} == {"agnews:1", "yelp:1", "toxic:1"}
    assert run("scale", "agnews", "-0.5", "--task", "neg").output.strip() == "neg:1"
    assert torch.allclose(reg.load("neg:1").delta_weight(m), -0.5 * parts[0].delta_weight(m), atol=1e-6)
    out = run("reduce-rank", "c:1", "--rank", "2", "--task", "small")
    assert out.output.splitlines()[0] == "small:1" and reg.get("small:1").rank == 2
    assert [e.kind for e in reg.lineage("small:1", max_depth=1)] == ["reduced_from"]


@pytest.mark.parametrize("args, message", [
    (["merge", "agnews", "other", "--task", "x"], "different base models"),
    (["merge", "agnews", "wide", "--task", "x"], "different shapes"),
    (["merge", "agnews", "yelp", "--weights", "1", "--task", "x"], "2 adapters but 1 weights"),
    (["merge", "agnews", "yelp", "--weights", "nan,1", "--task", "x"], "finite"),
    (["merge", "agnews", "yelp", "--method", "ties", "--density", "0", "--task", "x"], "density must be in (0, 1]"),
    (["merge", "agnews", "yelp", "--method", "ties", "--density", "1.5", "--task", "x"], "density must be in (0, 1]"),
    (["merge", "agnews", "yelp", "--rank", "0", "--task", "x"], "rank must be an integer >= 1"),
    (["merge", "agnews", "yelp", "--rank", "99", "--task", "x"], "rank 99 is more than"),
    (["merge", "agnews", "nope:1", "--task", "x"], "no task named 'nope'"),
    (["merge", "agnews", "--method", "magic", "--task", "x"], "Invalid value for '--method'"),
    (["merge", "agnews", "yelp"], "say where the result goes"),
    (["merge", "agnews", "yelp", "--lambda", "0.5", "--task", "x"], "merge method 'linear' does not take lambda"),
    (["merge", "agnews", "yelp", "--method", "dare_linear", "--density", "0.5", "--divisor", "count", "--task", "x"],
     "'dare_linear' does not take divisor; it takes density, lambda"),
    (["merge", "agnews", "yelp", "--method", "ties", "--task", "x"], "needs density"),
    (["compose", "(" * 5000 + "agnews" + ")" * 5000, "--task", "x"], "nested more than 100 levels deep"),
    (["compose", "0.5*agnews +* yelp", "--task", "x"], "column 13"),
    (["compose", "0.5*agnews + unknown", "--task", "x"], "no task named 'unknown'"),
    (["compose", "agnews-yelp", "--task", "x"], "put spaces around the minus"),
    (["compose", "agnews", "--task", "bad/name"], "invalid task name"),
    (["scale", "agnews", "inf", "--task", "x"], "finite"),
    (["reduce-rank", "agnews", "--task", "x"], "exactly one of"),
])
def test_bad_input_registers_nothing(setup, args, message):
    reg, run = setup
    before = snapshot(reg)
    result = run(*args, ok=False)
    assert result.exit_code != 0 and message in result.output, result.output
    assert snapshot(reg) == before


def test_json_show_of_a_merge_lists_its_parents(setup):
    reg, run = setup
    run("merge", "agnews", "yelp", "--task", "m")
    shown = json.loads(run("show", "m:1", "--json").output)
    assert sorted(p["parent"] for p in shown["parents"]) == ["agnews:1", "yelp:1"]


def test_threads_option_sets_torch_threads(setup):
    reg, run = setup
    before = torch.get_num_threads()
    try:
        assert run("scale", "agnews", "2", "--task", "doubled", "--threads", "1").output.strip() == "doubled:1"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    result = run("scale", "agnews", "2", "--task", "x", "--threads", "0", ok=False)
    assert result.exit_code != 0 and "--threads" in result.output
