"""The registry's tables, declared once in SQLAlchemy Core.

Why Core and not SQLModel (the architecture note's first plan): the registry only ever runs Core
queries, and importing SQLModel + pydantic + the ORM cost ~150 ms of the 0.5 s budget that
`adapter-hub list`/`show` have including interpreter start-up (measured: `import sqlmodel` 316 ms vs
`import sqlalchemy` 167 ms). The database itself is built by Alembic (migrations/), never by
create_all; a test checks that autogenerate finds no difference between these tables and the scripts.

Immutability: a version row is written once. The only later change is `deleted_at` (a tombstone:
its number is never reused). Aliases move; tags can be set and changed; everything else is append-only.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Constraint names must be stable for Alembic batch migrations on SQLite (it recreates tables and
# drops constraints by name), so every constraint gets a conventional name.
metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _ts(name: str, nullable: bool = False, index: bool = False) -> Column:
    """A timezone-aware UTC timestamp (always written in UTC by the API)."""
    return Column(name, DateTime(timezone=True), nullable=nullable, index=index)


# Registry-wide settings, e.g. where the blob store lives when the database is a server.
setting = Table(
    "setting", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(2048), nullable=False),
)

task = Table(
    "task", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    # The version counter: read and bumped in the same transaction as the version insert, under a
    # row lock (PostgreSQL) or the database write lock (SQLite BEGIN IMMEDIATE). Never decremented.
    Column("next_version", Integer, nullable=False, server_default="1"),
    _ts("created_at"),
)

version = Table(
    "version", metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("task.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("digest", String(71), nullable=False, index=True),  # "sha256:" + 64 hex digits
    Column("base_model", String(512)),
    Column("base_fingerprint", String(71), index=True),
    Column("rank", Integer),
    Column("alpha", Float),
    Column("target_modules", JSON, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    _ts("created_at", index=True),
    Column("created_by", String(256), nullable=False),
    Column("note", String(4096)),
    Column("metadata", JSON, nullable=False),
    _ts("deleted_at", nullable=True),
    UniqueConstraint("task_id", "number", name="uq_version_task_id_number"),
    Index("ix_version_task_id_deleted_at", "task_id", "deleted_at"),
)

# One file of a version's folder, stored as a content-addressed blob.
version_file = Table(
    "version_file", metadata,
    Column("version_id", Integer, ForeignKey("version.id"), primary_key=True),
    Column("path", String(255), primary_key=True),
    Column("blob", String(64), nullable=False, index=True),  # sha256 hex
    Column("size", Integer, nullable=False),
)

tag = Table(
    "tag", metadata,
    Column("version_id", Integer, ForeignKey("version.id"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(1024), nullable=False),
    Index("ix_tag_key_value", "key", "value"),
)

alias = Table(
    "alias", metadata,
    Column("task_id", Integer, ForeignKey("task.id"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("version_id", Integer, ForeignKey("version.id"), nullable=False, index=True),
    _ts("updated_at"),
)

# parent -> child edges; parent_id is NULL for parents outside this registry (parent_ref says what).
lineage = Table(
    "lineage", metadata,
    Column("id", Integer, primary_key=True),
    Column("child_id", Integer, ForeignKey("version.id"), nullable=False, index=True),
    Column("parent_id", Integer, ForeignKey("version.id"), index=True),
    Column("parent_ref", String(1024)),
    Column("kind", String(32), nullable=False),
    Column("params", JSON, nullable=False),
)

# ---- revision 0002: evaluations and benchmark runs ------------------------------------------------

bench_run = Table(
    "bench_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # running | done | failed
    Column("config", JSON, nullable=False),
    # Per strategy: accuracy matrix, metrics, timings (what `bench show/compare/report` display).
    Column("results", JSON, nullable=False),
    _ts("created_at", index=True),
    _ts("updated_at"),
)

# Which adapter version a run's strategy held after learning its step-th task.
bench_step = Table(
    "bench_step", metadata,
    Column("run_id", Integer, ForeignKey("bench_run.id"), primary_key=True),
    Column("strategy", String(64), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("task", String(128), nullable=False),
    Column("version_id", Integer, ForeignKey("version.id")),
    Column("seconds", Float),
)

evaluation = Table(
    "evaluation", metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("version.id"), nullable=False),
    Column("task", String(128), nullable=False),  # the task evaluated on
    Column("metric", String(64), nullable=False),
    Column("value", Float, nullable=False),
    Column("dataset", String(256)),  # dataset identity (fingerprint of the test set and prompt)
    Column("scorer", String(32)),
    Column("run_id", Integer, ForeignKey("bench_run.id"), index=True),
    _ts("created_at"),
    # How the version was used when scored, when not on its own (revision 0003): e.g. "per_task: the
    # task's own adapter, task id given". NULL: the version alone on that task.
    Column("context", String(256)),
    Index("ix_evaluation_version_id_metric", "version_id", "metric"),
)

# ---- revision 0003: blob pins (the gc protocol, registry/housekeeping.py); evaluation.context -------

# A registration in flight holds a pin on each blob it is about to store or reuse, committed before it
# looks at the store; gc and fsck --repair never delete a pinned blob. The version insert deletes the
# pins in the same transaction, so a blob is always either pinned or referenced while it is needed.
blob_pin = Table(
    "blob_pin", metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(96), nullable=False, index=True),  # "pin-<host>-<pid>-<random>", one per registration
    Column("blob", String(64), nullable=False, index=True),
    _ts("created_at"),
)


# ---- revision 0004: benchmark cells and their leases (registry/leases.py) --------------------------

# One row per cell of a run. A worker claims a cell (state running, epoch + 1, its holder and node,
# a heartbeat); only the holder of the current epoch may store the cell's results, so a retried cell
# and a slow original can never both write. A lease whose holder died (same host, pid gone) or fell
# silent (no heartbeat for the lease time) can be taken over.
bench_cell = Table(
    "bench_cell", metadata,
    Column("run_id", Integer, ForeignKey("bench_run.id"), primary_key=True),
    Column("cell", String(160), primary_key=True),  # "seq/s0", "per_task/s1/o2"
    Column("state", String(16), nullable=False),  # pending | running | done | failed
    Column("epoch", Integer, nullable=False),  # bumped by every claim: the fencing token
    Column("attempts", Integer, nullable=False),
    Column("holder", String(160)),  # "host:pid" of the process running it
    Column("node", String(160)),  # where it runs (Ray node, else the host)
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("error", Text),  # the last failure, one line
)
