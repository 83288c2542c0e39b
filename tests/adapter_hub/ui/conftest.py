"""One registry for the web view's tests, filled once per session the way users fill theirs: a tiny
bench run (2 strategies x 2 seeds, so intervals exist), a merge (merged_from edges), a rank reduction
(reduced_from), and versions carrying hostile strings in a tag and a note."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

HOSTILE = "<script>alert(1)</script>"  # as a tag value and inside a note

BENCH = """
name = "ui-run"
base_model = "tiny-llama"
tasks = ["builtin:topic", "builtin:sentiment"]
max_train = 64
max_test = 16
seeds = [0, 1]
[lora]
r = 4
[train]
steps = 6
batch_size = 8
max_length = 64
[eval]
batch_size = 16
[[strategies]]
name = "seq"
[[strategies]]
name = "per_task"
router = "prototype"
"""


def cli(*args: str) -> str:
    from adapter_hub.cli import cli as group

    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="session")
def ui_registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    location = root / "registry"
    config = root / "bench.toml"
    config.write_text(BENCH)
    reg = ["--registry", str(location)]
    cli(*reg, "bench", "run", str(config), "-q")
    cli(*reg, "merge", "topic:1", "sentiment:1", "--method", "ties", "--density", "0.5", "--task", "merged", "-q")
    cli(*reg, "reduce-rank", "merged:1", "--rank", "2", "--task", "merged", "--note", f"small {HOSTILE}", "-q")
    cli(*reg, "tag", "merged:1", f"note={HOSTILE}")
    cli(*reg, "alias", "merged:1", "best")
    from registry import Registry

    handle = Registry.open(location, create=False)  # as a distributed run's workers leave it: one cell failed
    handle.cells.plan("ui-run", ["seq/s0", "seq/s1"])
    epoch = handle.cells.claim("ui-run", "seq/s1", holder="worker-host:4242", node="node-b")
    handle.cells.fail("ui-run", "seq/s1", epoch, f"ValueError: bad row {HOSTILE}")
    handle.close()
    return location



@pytest.fixture(scope="session")
def hostile() -> str:
    return HOSTILE


@pytest.fixture(scope="session")
def folder_digest():
    """sha256 over every file's path and bytes under a folder: equal before and after = nothing written."""
    def digest(folder: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()

    return digest
