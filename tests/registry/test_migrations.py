"""Alembic migrations: head equals the models, old databases upgrade with their data, stale ones are refused."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import text

from adapter_hub.cli import cli
from registry import Registry
from registry.db import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
    make_engine,
    upgrade,
)
from registry.errors import SchemaError
from registry.tables import metadata


def _diff(engine):
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


def test_head_revision_constant_matches_the_scripts(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    assert ScriptDirectory.from_config(alembic_config(engine)).get_current_head() == HEAD_REVISION


def test_upgrade_head_on_empty_database_equals_the_models(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    assert _diff(engine) == []


def test_upgrade_head_on_postgres_equals_the_models(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    assert _diff(engine) == []


def _fill_at_first_revision(tmp_path, adapter_dir):
    """A registry as 0001 left it: rows written with that revision's columns only."""
    root = tmp_path / "old"
    root.mkdir()
    engine = make_engine(f"sqlite:///{root}/registry.db")
    upgrade(engine, "0001")
    current = Registry(engine, __import__("registry.store", fromlist=["open_store"]).open_store(str(root / "objects")),
                       str(root), root / "checkouts")
    # register through the API's own code path; 0001 has every table register() keeps rows in (its
    # blob pins live only while it runs: the pin table is lent for the writes and dropped after)
    from registry.tables import blob_pin

    blob_pin.create(engine)
    v = current.register(adapter_dir(0), task="agnews", metadata={"lr": 0.1}, tags={"stage": "dev"})
    current.register(adapter_dir(1), task="agnews", parents=[v.ref])
    current.alias("agnews:1", "best")
    blob_pin.drop(engine)
    engine.dispose()
    return root


def test_old_database_is_refused_until_upgraded_then_keeps_its_data(tmp_path, adapter_dir):
    root = _fill_at_first_revision(tmp_path, adapter_dir)
    with pytest.raises(SchemaError, match=r"revision 0001 .* needs 0004; run `adapter-hub --registry .* db upgrade`"):
        Registry.open(root)
    result = CliRunner().invoke(cli, ["--registry", str(root), "list"])
    assert result.exit_code == 1 and "db upgrade" in result.output
    result = CliRunner().invoke(cli, ["--registry", str(root), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    reg = Registry.open(root)
    assert _diff(reg.engine) == []
    assert [v.ref for v in reg.versions("agnews")] == ["agnews:1", "agnews:2"]
    assert reg.get("agnews@best").metadata == {"lr": 0.1} and reg.get("agnews:1").tags == {"stage": "dev"}
    assert [e.parent for e in reg.lineage("agnews:2")] == ["agnews:1"]
    assert reg.fsck().ok
    reg.record_evaluation("agnews:2", task="agnews", metric="accuracy", value=0.5)  # the new tables work
    assert reg.register(adapter_dir(2), task="agnews").ref == "agnews:3"


def test_database_from_a_newer_version_is_refused(tmp_path):
    reg = Registry.open(tmp_path / "r")
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="unknown to this adapter-hub"):
        Registry.open(tmp_path / "r")
