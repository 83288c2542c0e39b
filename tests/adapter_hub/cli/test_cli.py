"""The CLI: registry commands end to end, errors (one line, exit 1, nothing written), --help everywhere,
and the fast path (list/show never import torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from adapter_hub.cli import cli
from registry.db import HEAD_REVISION
from registry.testing import snapshot, write_adapter


@pytest.fixture
def run(tmp_path):
    location = str(tmp_path / "registry")

    def invoke(*args: str, ok: bool = True):
        result = CliRunner().invoke(cli, ["--registry", location, *args])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    invoke.location = location
    return invoke


def test_registry_flow(run, tmp_path):
    a, b = write_adapter(tmp_path / "a", 0), write_adapter(tmp_path / "b", 1)
    assert f"schema   {HEAD_REVISION}" in run("init").output
    assert run("register", str(a), "--task", "agnews", "--tag", "stage=dev", "--meta", "lr=0.001",
               "--metadata", '{"steps": 10}', "--note", "first").output.strip() == "agnews:1"
    assert run("register", str(b), "--task", "agnews", "--parent", "agnews:1").output.strip() == "agnews:2"
    assert run("alias", "agnews:1", "best").output.strip() == "agnews@best -> agnews:1"
    run("tag", "agnews:2", "reviewed=yes")

    tasks = json.loads(run("list", "--json").output)
    assert tasks == [{"task": "agnews", "versions": 2, "latest": "agnews:2", "aliases": ["best->1"],
                      "updated_at": tasks[0]["updated_at"]}]
    shown = json.loads(run("show", "agnews@best", "--json").output)
    assert shown["ref"] == "agnews:1" and shown["metadata"] == {"steps": 10, "lr": "0.001"}
    assert shown["tags"] == {"stage": "dev"} and shown["note"] == "first"
    assert sorted(f["path"] for f in shown["files"]) == ["adapter_config.json", "adapter_model.safetensors"]
    assert [v["ref"] for v in json.loads(run("versions", "agnews", "--json").output)] == ["agnews:1", "agnews:2"]
    assert [v["ref"] for v in json.loads(run("search", "--tag", "reviewed=yes", "--json").output)] == ["agnews:2"]
    edges = json.loads(run("lineage", "agnews:2", "--json").output)
    assert [(e["parent"], e["kind"]) for e in edges] == [("agnews:1", "trained_from")]
    assert "agnews:1" in run("show", "agnews:1").output  # the table form renders too
    assert "trained_from" in run("lineage", "agnews:1", "--down").output

    out = tmp_path / "exported"
    run("export", "agnews:1", str(out))
    assert (out / "adapter_model.safetensors").read_bytes() == (a / "adapter_model.safetensors").read_bytes()
    assert run("import", str(out), "--task", "copy").output.strip() == "copy:1"
    assert run("delete", "agnews:2").output.strip() == "deleted agnews:2"
    assert json.loads(run("fsck", "--json").output)["ok"] is True
    assert json.loads(run("gc", "--grace", "0", "--json").output)["removed_blobs"] == 1


@pytest.mark.parametrize("args, message", [
    (["show", "nope:1"], "no task named 'nope'"),
    (["show", "a:b:c"], "malformed reference"),
    (["alias", "agnews:1", "bad name"], "invalid alias name"),
    (["register", "{missing}", "--task", "agnews"], "not a folder"),
    (["register", "{adapter}", "--task", "a/b"], "invalid task name 'a/b'"),
    (["register", "{adapter}", "--task", "x" * 10_000], "10000 characters long"),
    (["register", "{adapter}", "--task", "agnews", "--parent", "agnews:5"], "has no version 5"),
    (["register", "{adapter}", "--task", "agnews", "--metadata", "{oops"], "not valid JSON"),
    (["register", "{adapter}", "--task", "agnews", "--tag", "novalue"], "expected KEY=VALUE"),
    (["register", "{registered}", "--task", "agnews"], "identical content is already agnews:1"),
    (["delete", "agnews:9"], "has no version 9"),
    (["export", "agnews:1", "{nonempty}"], "not empty"),
    (["search", "--metric", "accuracy>>1"], "metric filter"),
])
def test_errors_are_one_line_exit_1_and_write_nothing(run, tmp_path, args, message):
    registered = write_adapter(tmp_path / "registered", 0)
    run("register", str(registered), "--task", "agnews")
    nonempty = tmp_path / "nonempty"
    nonempty.mkdir()
    (nonempty / "x").write_text("x")
    paths = {"missing": str(tmp_path / "missing"), "adapter": str(write_adapter(tmp_path / "fresh", 9)),
             "registered": str(registered), "nonempty": str(nonempty)}
    from registry import Registry

    reg = Registry.open(run.location)
    before = snapshot(reg)
    result = run(*[paths.get(a.strip("{}"), a) for a in args], ok=False)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert message in result.output and (lines[-1].startswith("error:") or "Error:" in result.output), result.output
    assert snapshot(reg) == before


def _all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", list(_all_commands(cli)), ids=" ".join)
def test_help_on_every_command(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output
    command = cli
    for name in path:
        command = command.commands[name]
    if not isinstance(command, click.Group):  # every command shows an example; every option says what it is
        assert "Example: adapter-hub " in result.output, path
        assert [p.name for p in command.params if isinstance(p, click.Option) and not p.help] == [], path


def test_list_and_show_never_import_torch(tmp_path):
    location = str(tmp_path / "registry")
    folder = write_adapter(tmp_path / "a", 0)
    code = (
        "import sys\nfrom adapter_hub.cli import cli\n"
        "for args in (['register', %r, '--task', 't'], ['list'], ['show', 't:1'], ['versions', 't'], ['search']):\n"
        "    cli.main(['--registry', %r, *args], standalone_mode=False)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    ) % (str(folder), location)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")


def test_default_registry_is_in_the_user_data_dir_not_the_cwd(monkeypatch):
    from registry.api import default_location

    monkeypatch.delenv("ADAPTER_HUB_HOME", raising=False)
    monkeypatch.delenv("ADAPTER_HUB_REGISTRY", raising=False)
    location = Path(default_location())
    assert location.is_absolute() and Path.cwd() not in location.parents
    assert location.name == "registry" and "adapter-hub" in location.parts


def test_export_warns_vllm_users_about_rank_patterns(run, tmp_path):
    plain, patterned = write_adapter(tmp_path / "plain", 0), write_adapter(tmp_path / "patterned", 1)
    config = json.loads((patterned / "adapter_config.json").read_text())
    config["rank_pattern"] = {"model.layers.0.self_attn.q_proj": 2}  # consistent with the weights (r=2 everywhere)
    (patterned / "adapter_config.json").write_text(json.dumps(config))
    run("register", str(plain), "--task", "plain")
    run("register", str(patterned), "--task", "patterned")
    assert "vLLM" not in run("export", "plain:1", str(tmp_path / "out1")).stderr
    assert "warning: this adapter has per-module ranks or alphas" in run("export", "patterned:1", str(tmp_path / "out2")).stderr
