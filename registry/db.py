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
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from registry.errors import RegistryError, SchemaError

# The Alembic revision this code expects. A test checks it equals the script directory's head, so
# the CLI can check the schema with one SELECT instead of importing Alembic (~0.3 s) on every call.
HEAD_REVISION = "0004"
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004")
BUSY_TIMEOUT_MS = 60_000  # a writer waits up to a minute for the lock before giving up


SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA_LOCK_KEY = 0x61646170  # PostgreSQL advisory lock taken by schema changes ("adap")


def make_engine(url: str) -> Engine:
    try:
        return _make_engine(url)
    except (NoSuchModuleError, ArgumentError) as exc:
        scheme = url.split("://", 1)[0]
        raise RegistryError(f"unknown or unusable database URL scheme {scheme!r} ({exc}); use a registry folder, "
                            f"sqlite:///PATH or postgresql+psycopg://USER@HOST/DB") from None


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A connection lives for one session only (NullPool), never idle in a pool: a process that also
        # runs Ray's driver corrupted the database file through a pooled connection (reproduced in
        # tests/adapter_hub/test_executors.py with a second registry handle in the driver; clean with
        # NullPool). Opening a SQLite connection costs well under a millisecond.
        engine = create_engine(url, poolclass=NullPool,
                               connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
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
    """A connection in one transaction: committed on success, rolled back on any error. Database
    failures (unreachable server, damaged or read-only file, missing table) become RegistryError."""
    with database_errors(engine), engine.connect() as conn:
        if write and engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def describe(engine: Engine) -> str:
    """The database for messages: the SQLite file, or the URL without its password."""
    if engine.dialect.name == "sqlite":
        return str(engine.url.database)
    return engine.url.render_as_string(hide_password=True)


@contextlib.contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Turn driver errors into one-line RegistryErrors that say what is wrong and what to do.
    (IntegrityError passes: callers handle constraint races themselves.)"""
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as exc:
        raise RegistryError(explain(engine, exc)) from None


def explain(engine: Engine, exc: DBAPIError) -> str:
    where = describe(engine)
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(getattr(exc, "orig", exc)).strip() else ""
    low = detail.lower()
    if "readonly" in low or "read-only" in low or "permission denied" in low:
        return f"the registry database {where} is read-only ({detail}); check its permissions or mount"
    if "unable to open" in low:
        return (f"cannot open the registry database {where} ({detail}): the file or its folder may be read-only "
                f"or missing (SQLite also writes the -wal and -shm files beside it)")
    if "no such table" in low or ("relation" in low and "does not exist" in low):
        return (f"the registry database {where} is damaged or incomplete ({detail}); restore it from a backup "
                f"(`adapter-hub db upgrade` cannot rebuild missing tables)")
    if "not a database" in low or "malformed" in low or "disk image" in low:
        return f"{where} is damaged or not a registry database ({detail}); restore it from a backup"
    if "locked" in low:
        return f"the registry database {where} stayed locked by another writer for over {BUSY_TIMEOUT_MS // 1000} s"
    if engine.dialect.name != "sqlite" and ("connect" in low or "connection" in low or "resolve" in low):
        return f"cannot connect to the registry database {where}: {detail}"
    return f"registry database {where}: {detail or type(exc).__name__}"


def check_sqlite_file(path: Path) -> None:
    """Refuse an empty or non-SQLite file before SQLite would silently write a new database over it."""
    size = path.stat().st_size
    if size == 0:
        raise RegistryError(f"{path} is empty (0 bytes), so it holds no registry: restore it from a backup, or move "
                            f"it away to start a new registry (the blobs beside it are kept)")
    with open(path, "rb") as fh:
        magic = fh.read(len(SQLITE_MAGIC))
    if magic != SQLITE_MAGIC:
        raise RegistryError(f"{path} is not a SQLite database (damaged, or another kind of file); restore it from "
                            f"a backup")


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision, or None when it has no alembic_version table."""
    with database_errors(engine), engine.connect() as conn:
        if "alembic_version" not in _table_names(conn):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def has_tables(engine: Engine) -> bool:
    with database_errors(engine), engine.connect() as conn:
        return bool(_table_names(conn))


def _table_names(conn: Connection) -> list[str]:
    from sqlalchemy import inspect

    return inspect(conn).get_table_names()


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
    """Run Alembic migrations up to `revision` on this engine, inside one transaction that holds the
    schema lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so two `init`s or `db upgrade`s
    at once run one after the other and the second finds nothing left to do."""
    from alembic import command

    config = alembic_config(engine)
    with session_scope(engine, write=True) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
