"""`adapter-hub demo` runs its whole story (on the tiny model here, to stay within CI's budget)."""

from __future__ import annotations

from click.testing import CliRunner

from adapter_hub.cli import cli
from registry import Registry


def test_demo_on_the_tiny_model(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--base-model", "tiny-llama", "--steps", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "strategy" in result.output and "per_task merged (iso_c, rank 8)" in result.output
    assert (out / "report" / "report.md").read_text().count("|") > 20
    reg = Registry.open(out / "registry")
    run = reg.runs.list()[0]
    assert run.status == "done" and set(run.results["strategies"]) == {"seq", "replay", "per_task"}
    merged = reg.get("demo-merged:1")
    assert merged.rank == 8 and {e.kind for e in reg.lineage("demo-merged:1")} == {"merged_from"}
    assert len(reg.evaluations("demo-merged:1")) == 3
    assert reg.load("demo-merged:1").provenance["method"] == "iso_c" and "normalized accuracy" in result.output
    assert 0 <= run.results["merged"]["normalized"] and run.results["merged"]["method"] == "iso_c"
