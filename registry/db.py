"""Database plumbing: engines from URLs, SQLite set up for concurrent writers, schema version checks.

SQLite: every connection gets WAL (readers never block the writer), busy_timeout (a writer waits
for the lock instead of failing with "database is locked"), foreign_keys=ON, and writing
transactions start with BEGIN IMMEDIATE, which takes the write lock up front so two writers can never
deadlock upgrading read locks (the usual cause of "database is locked" despite a busy timeout).
PostgreSQL: version counters are taken under SELECT ... FOR UPDATE row locks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from registry.errors import SchemaError

# The Alembic revision this code expects. A test checks it equals the script directory's head, so
# the CLI can check the schema with one SELECT instead of importing Alembic (~0.3 s) on every call.
HEAD_REVISION = "0002"
KNOWN_REVISIONS = ("0001", "0002")
BUSY_TIMEOUT_MS = 60_000  # a writer waits up to a minute for the lock before giving up


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves (see _sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not just a crash
    cursor.close()


def _sqlite_on_begin(connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


@contextlib.contextmanager
def session_scope(engine: Engine, *, write: bool = False) -> Iterator[Connection]:
    """A connection in one transaction: committed on success, rolled back on any error."""
    with engine.connect() as conn:
        if write and engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision, or None when it has no alembic_version table."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


def has_tables(engine: Engine) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(engine).get_table_names())


def check_schema(engine: Engine, where: str) -> None:
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    if revision in KNOWN_REVISIONS:
        raise SchemaError(
            f"the registry database at {where} is at schema revision {revision} but this adapter-hub needs "
            f"{HEAD_REVISION}; run `adapter-hub --registry {where} db upgrade` (back up the database first)"
        )
    if revision is None:
        raise SchemaError(f"{where} is not an adapter-hub registry database (no schema revision); "
                          f"run `adapter-hub --registry {where} init` to create one")
    raise SchemaError(f"the registry database at {where} has schema revision {revision!r}, unknown to this "
                      f"adapter-hub (written by a newer version?); upgrade adapter-hub")


def migrations_dir() -> Path:
    """Alembic's script directory: migrations/ in a checkout, registry/_migrations in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "migrations", here / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    import importlib.resources

    return Path(str(importlib.resources.files("registry._migrations")))


def alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to `revision` on this engine (inside one transaction)."""
    from alembic import command

    config = alembic_config(engine)
    with session_scope(engine, write=True) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
