"""Opening a registry: a folder (SQLite inside, blobs in objects/) or a database URL with a blob store
given once and remembered. New databases are built by Alembic; an out-of-date or foreign one is
refused with the command that fixes it; a folder holding anything else is never turned into one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import platformdirs
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from registry.db import (
    check_schema,
    check_sqlite_file,
    current_revision,
    has_tables,
    make_engine,
    session_scope,
    upgrade,
)
from registry.errors import RegistryError
from registry.store import BlobStore, open_store
from registry.tables import setting as S

DB_FILE = "registry.db"
INIT_LOCK = ".init.lock"  # serialises the creation of a registry folder


def default_location() -> str:
    """$ADAPTER_HUB_REGISTRY, else $ADAPTER_HUB_HOME, else <user data dir>/adapter-hub/registry."""
    if os.environ.get("ADAPTER_HUB_REGISTRY"):
        return os.environ["ADAPTER_HUB_REGISTRY"]
    if os.environ.get("ADAPTER_HUB_HOME"):
        return os.environ["ADAPTER_HUB_HOME"]
    return str(Path(platformdirs.user_data_dir("adapter-hub")) / "registry")


def open_location(location: str | os.PathLike | None, store: str | None, create: bool, check: bool
                  ) -> tuple[Engine, BlobStore, str, Path]:
    """(engine, blob store, location as given back to users, checkout folder) of a registry."""
    location = str(location) if location is not None else default_location()
    if "://" in location:
        return _open_url(location, store, create, check)
    root = Path(location).expanduser().resolve()
    db = root / DB_FILE
    if not db.exists():
        if not create:
            raise RegistryError(f"no registry at {root} (no {DB_FILE} there); check the path, or create one "
                                f"with `adapter-hub --registry {root} init`")
        _create_folder(root)
    check_sqlite_file(db)
    engine = make_engine(f"sqlite:///{db}")
    _ensure_schema(engine, str(root), create, check)
    store_url = _setting(engine, "store") or store or str(root / "objects")
    return engine, open_store(store_url), str(root), root / "checkouts"


def _create_folder(root: Path) -> None:
    """Build a new registry folder; several processes may race here (the first builds, the rest wait).
    A folder holding anything else is refused: a registry is never created over unknown content."""
    if root.exists() and not root.is_dir():
        raise RegistryError(f"{root} exists and is not a folder; pick a new or empty folder for the registry")
    if root.is_dir() and any(e.name != INIT_LOCK for e in root.iterdir()):
        raise RegistryError(f"{root} exists and is not an adapter-hub registry (no {DB_FILE}); "
                            f"pick a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / INIT_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (root / DB_FILE).exists():
            return  # another process built it while we waited
        engine = make_engine(f"sqlite:///{root / DB_FILE}")
        try:
            upgrade(engine)
        finally:
            engine.dispose()

def _open_url(url: str, store: str | None, create: bool, check: bool) -> tuple[Engine, BlobStore, str, Path]:
    engine = make_engine(url)
    fresh = _ensure_schema(engine, url, create, check)
    saved = _setting(engine, "store")
    if saved and store and saved != store:
        raise RegistryError(f"{url} keeps its blobs in {saved}, not {store}")
    store_url = saved or store
    if not store_url and url.startswith("sqlite:///"):
        store_url = str(Path(url.removeprefix("sqlite:///")).parent / "objects")
    if not store_url:
        raise RegistryError(f"{url}: say where blobs go the first time (--store DIR_OR_URL, e.g. s3://bucket/adapters)")
    if fresh or not saved:
        with session_scope(engine, write=True) as s:
            if engine.dialect.name == "postgresql":  # two first opens at once: one insert wins, quietly
                from sqlalchemy.dialects.postgresql import insert as upsert

                s.execute(upsert(S).values(key="store", value=store_url).on_conflict_do_nothing())
            elif s.execute(select(S.c.value).where(S.c.key == "store")).scalar() is None:
                s.execute(insert(S).values(key="store", value=store_url))
        saved = _setting(engine, "store")
        if store and saved != store:
            raise RegistryError(f"{url} keeps its blobs in {saved}, not {store}")
        store_url = saved
    cache = Path(platformdirs.user_cache_dir("adapter-hub")) / "checkouts"
    return engine, open_store(store_url), url, cache

def _ensure_schema(engine: Engine, where: str, create: bool, check: bool) -> bool:
    """Build a new database with Alembic; refuse an out-of-date one. True when it was built now."""
    if current_revision(engine) is None and not has_tables(engine):
        if not create:
            raise RegistryError(f"{where} has no registry schema; run `adapter-hub --registry {where} init`")
        upgrade(engine)
        return True
    if check:
        check_schema(engine, where)
    return False

def _setting(engine: Engine, key: str) -> str | None:
    with session_scope(engine) as conn:
        return conn.execute(select(S.c.value).where(S.c.key == key)).scalar()
