"""Schema operations and task-level edits racing each other: two `init`s, two `db upgrade`s, and alias
moves, unaliases, tags and deletes on one task from several processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from registry import Registry
from registry.db import HEAD_REVISION, make_engine, upgrade
from registry.testing import write_adapter


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "registry"), None
    return request.getfixturevalue("postgres_url"), str(tmp_path / "blobs")


def _together(code: str, args_per_proc: list[list[str]], go: Path, timeout: float = 180) -> list[str]:
    procs = [subprocess.Popen([sys.executable, "-c", code, *args, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in args_per_proc]
    time.sleep(1.0)
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        outs.append(out)
    return outs


INIT = """
import sys, time
from pathlib import Path
from registry import Registry
location, store, mode, go = sys.argv[1:5]
while not Path(go).exists():
    time.sleep(0.001)
reg = Registry.open(location, store=store or None, check=mode != "upgrade")
if mode == "upgrade":
    reg.upgrade()
print(len(reg.tasks()))
"""


def _revision_rows(engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_two_inits_at_once(location, tmp_path):
    outs = _together(INIT, [[location[0], location[1] or "", "init"]] * 3, tmp_path / "go")
    assert outs == ["0\n"] * 3
    reg = Registry.open(location[0], create=False)
    assert _revision_rows(reg.engine) == [HEAD_REVISION]
    reg.register(write_adapter(tmp_path / "a"), task="a")
    assert reg.fsck().ok


def test_two_upgrades_at_once(location, tmp_path):
    url = location[0] if "://" in location[0] else f"sqlite:///{Path(location[0]) / 'registry.db'}"
    if "://" not in location[0]:
        Path(location[0]).mkdir()
    engine = make_engine(url)
    upgrade(engine, "0001")
    if location[1]:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO setting (key, value) VALUES ('store', :s)"), {"s": location[1]})
    engine.dispose()
    _together(INIT, [[location[0], location[1] or "", "upgrade"]] * 2, tmp_path / "go")
    reg = Registry.open(location[0], create=False)
    assert _revision_rows(reg.engine) == [HEAD_REVISION]


EDITOR = """
import random, sys, time
from pathlib import Path
from registry import Registry
from registry.errors import RefError
location, store, seed, go = sys.argv[1:5]
reg = Registry.open(location, store=store or None, create=False)
rng = random.Random(int(seed))
while not Path(go).exists():
    time.sleep(0.001)
for i in range(150):  # mostly alias/unalias on one name: the create-or-move race is the dangerous one
    action = rng.choice(["alias", "alias", "unalias", "tag", "tag"] + (["delete"] if i % 30 == 29 else []))
    number = rng.randint(1, 12)
    try:
        if action == "alias":
            reg.alias(f"t:{number}", "best")
        elif action == "unalias":
            reg.unalias("t", "best")
        elif action == "tag":
            reg.tag(f"t:{number % 2 + 1}", "stage", rng.choice(["dev", "prod"]))
        else:
            reg.delete(f"t:{number}")
    except RefError:
        pass  # the version was deleted, or the alias removed, by another editor: an honest answer
print("ok")
"""


def test_concurrent_alias_tag_and_delete_on_one_task(location, tmp_path):
    reg = Registry.open(location[0], store=location[1])
    for i in range(12):
        reg.register(write_adapter(tmp_path / f"a{i}", seed=i), task="t")
    outs = _together(EDITOR, [[location[0], location[1] or "", str(seed)] for seed in range(6)], tmp_path / "go")
    assert outs == ["ok\n"] * 6
    report = reg.fsck()
    assert report.ok and report.dangling_aliases == []
