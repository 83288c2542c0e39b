"""Garbage collection and consistency checks for a registry's database + blob store.

The protocol that keeps gc from deleting a blob a registration needs (pins + one lock):

1. A registration stages its files in the store's temp area (nothing visible), then commits one
   small transaction that inserts a `blob_pin` row per digest. Only then does it look at the store:
   an existing blob is re-hashed and reused (or replaced when corrupt), a missing one is moved in.
2. Its version transaction inserts the version and file rows and deletes its pins, atomically, so
   from step 1 on every blob it needs is pinned or referenced by a committed version.
3. gc and `fsck --repair` take the registry's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: LOCK
   TABLE blob_pin IN EXCLUSIVE MODE, which waits for and blocks every pin insert or delete), then
   read the references and the pins, and delete only blobs neither names, inside that lock. A pin
   insert therefore lands either before the sweep (the blob is kept) or after it (the registration
   then finds the blob gone and stores it again). Two sweeps serialise on the same lock.

Why pins and not mark-and-sweep with a generation number: pins cost one tiny insert per registration,
work the same on SQLite and PostgreSQL, need no cooperation from the blob store (an S3 bucket has no
locks) and make correctness independent of clocks. `grace` stays as a second guard for blobs written
by other tools: gc keeps unreferenced blobs younger than it. Pins older than PIN_LEASE belong to a
dead registration and are dropped; a registration that outlives its lease re-checks its blobs before
committing instead of trusting them.

Temp files and staging folders: removed once their writer process is gone (same host), otherwise
only when older than the grace period and store.FOREIGN_TEMP_MIN_AGE (see store.writer_is_gone).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Connection as Session
from sqlalchemy.engine import Engine

from registry.db import session_scope
from registry.errors import IntegrityError
from registry.folders import clean_staging
from registry.store import BlobStore, writer_is_gone, writer_prefix
from registry.tables import alias as A
from registry.tables import blob_pin as P
from registry.tables import task as T
from registry.tables import utcnow
from registry.tables import version as V
from registry.tables import version_file as F

DEFAULT_GRACE = 3600.0  # seconds; a second guard beside the pins, for blobs other tools put in the store
PIN_LEASE = timedelta(hours=24)  # a registration still pinning after a day is dead (or re-checks; see above)


@dataclass
class GcReport:
    removed_blobs: int = 0
    freed_bytes: int = 0
    removed_temp: int = 0
    removed_checkouts: int = 0
    kept_recent: int = 0  # unreferenced but younger than the grace period

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FsckReport:
    missing: list[str] = field(default_factory=list)  # "task:N path" whose blob is gone
    corrupt: list[str] = field(default_factory=list)  # "task:N path" whose blob fails its hash
    orphans: list[str] = field(default_factory=list)  # blob digests no live version uses
    dangling_aliases: list[str] = field(default_factory=list)  # "task@alias -> task:N (deleted)"
    temp_files: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No version has lost data and no alias points at a deleted version (orphans are harmless)."""
        return not (self.missing or self.corrupt or self.dangling_aliases)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def live_blobs(session: Session) -> set[str]:
    rows = session.execute(select(F.c.blob).select_from(F.join(V, F.c.version_id == V.c.id))
                           .where(V.c.deleted_at.is_(None)).distinct())
    return set(rows.scalars())


def live_digests(session: Session) -> set[str]:
    return set(session.execute(select(V.c.digest).where(V.c.deleted_at.is_(None))).scalars())


# ---- pins ------------------------------------------------------------------------------------------


def pin(engine: Engine, blobs: Iterable[str]) -> str:
    """Pin `blobs` for a registration (committed on return); returns the token that releases them."""
    token = writer_prefix("pin") + uuid.uuid4().hex[:16]  # who pinned: a crashed writer's pins are dropped
    rows = [{"token": token, "blob": b, "created_at": utcnow()} for b in sorted(set(blobs))]
    with session_scope(engine, write=True) as s:
        s.execute(insert(P), rows)
    return token


def unpin(session: Session, token: str, blobs: Iterable[str], store: BlobStore) -> None:
    """Drop a registration's pins inside its version transaction. If some pins were gone (the lease
    expired and a gc dropped them), the blobs are checked under the lock before the version commits."""
    wanted = set(blobs)
    removed = session.execute(delete(P).where(P.c.token == token)).rowcount
    if removed != len(wanted):
        missing = sorted(b for b in wanted if not store.exists(b))
        if missing:
            raise IntegrityError(f"blob sha256:{missing[0][:16]}… was removed while this registration ran "
                                 f"(its pin outlived the {PIN_LEASE} lease); register again")


def release(engine: Engine, store: BlobStore, token: str, created: Iterable[str]) -> None:
    """A failed registration: drop its pins and the blobs it created that nothing else needs."""
    with session_scope(engine, write=True) as s:
        _lock_store(s)
        s.execute(delete(P).where(P.c.token == token))
        needed = _protected(s)
        for digest in set(created) - needed:
            store.delete(digest)


def _lock_store(session: Session) -> None:
    """The sweep lock: on SQLite the session's BEGIN IMMEDIATE already excludes every writer."""
    if session.dialect.name == "postgresql":
        session.execute(text("LOCK TABLE blob_pin IN EXCLUSIVE MODE"))


def _protected(session: Session) -> set[str]:
    """Blobs that must stay: used by a live version, or pinned by a registration within its lease."""
    pinned = session.execute(select(P.c.blob).where(P.c.created_at >= utcnow() - PIN_LEASE)).scalars()
    return live_blobs(session) | set(pinned)


def _drop_stale_pins(session: Session) -> None:
    """Pins past their lease, and pins of registrations whose process died on this host (SIGKILL, power)."""
    session.execute(delete(P).where(P.c.created_at < utcnow() - PIN_LEASE))
    tokens = session.execute(select(P.c.token).distinct()).scalars().all()
    dead = [t for t in tokens if writer_is_gone(t, 0.0, float("inf"))]
    if dead:
        session.execute(delete(P).where(P.c.token.in_(dead)))


def _sweep(session: Session, store: BlobStore, grace: float, report: "GcReport") -> list[str]:
    """Delete unprotected blobs older than `grace` and dead writers' temp files; inside the lock."""
    _lock_store(session)
    _drop_stale_pins(session)
    keep, now, removed = _protected(session), time.time(), []
    for digest, mtime in list(store.iter_blobs()):
        if digest in keep:
            continue
        if now - mtime < grace:
            report.kept_recent += 1
            continue
        report.freed_bytes += store.delete(digest)
        report.removed_blobs += 1
        removed.append(digest)
    for name, mtime in list(store.iter_temp()):
        if writer_is_gone(os.path.basename(name), now - mtime, grace):
            store.remove_temp(name)
            report.removed_temp += 1
    return removed


def gc(session: Session, store: BlobStore, checkouts: Path | None, grace: float = DEFAULT_GRACE) -> GcReport:
    """Run inside a write session (see the module docstring for why that is safe beside registrations)."""
    report = GcReport()
    _sweep(session, store, grace, report)
    if checkouts is not None and checkouts.is_dir():
        wanted = {d.removeprefix("sha256:") for d in live_digests(session)}
        report.removed_checkouts += clean_staging(checkouts, None, grace)
        for entry in checkouts.iterdir():
            if entry.name not in wanted and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
                report.removed_checkouts += 1
    return report


def fsck(session: Session, store: BlobStore) -> FsckReport:
    """Check every live version's blobs (read-only; `repair` acts on the report)."""
    report = FsckReport()
    rows = session.execute(select(T.c.name, V.c.number, F.c.path, F.c.blob)
                           .select_from(F.join(V, F.c.version_id == V.c.id).join(T, V.c.task_id == T.c.id))
                           .where(V.c.deleted_at.is_(None)).order_by(T.c.name, V.c.number, F.c.path)).all()
    health: dict[str, str] = {}  # blob -> "ok" | "missing" | "corrupt": a blob shared by versions is hashed once
    for name, number, path, blob in rows:
        if blob not in health:
            health[blob] = "missing" if not store.exists(blob) else "ok"
            if health[blob] == "ok":
                try:
                    store.verify(blob)
                except IntegrityError:
                    health[blob] = "corrupt"
        label = f"{name}:{number} {path}"
        if health[blob] == "missing":
            report.missing.append(label)
        elif health[blob] == "corrupt":
            report.corrupt.append(label)
    keep = {blob for *_, blob in rows}
    report.orphans = sorted(d for d, _ in store.iter_blobs() if d not in keep)
    report.temp_files = sorted(name for name, _ in store.iter_temp())
    report.dangling_aliases = [f"{task}@{alias} -> {task}:{number} (deleted)"
                               for task, alias, number, _ in _dangling_aliases(session)]
    return report


def _dangling_aliases(session: Session) -> list[tuple[str, str, int, int]]:
    """(task, alias, version number, task id) of aliases pointing at a deleted version."""
    return session.execute(select(T.c.name, A.c.name, V.c.number, A.c.task_id)
                           .select_from(A.join(V, A.c.version_id == V.c.id).join(T, A.c.task_id == T.c.id))
                           .where(V.c.deleted_at.is_not(None))).all()


def repair(session: Session, store: BlobStore, report: FsckReport) -> None:
    """Fix what `fsck` found that is safe to fix, inside a write session, re-checking under the lock:
    aliases still pointing at a deleted version go; unprotected blobs and dead writers' temp files go."""
    _lock_store(session)
    for task, alias, _, tid in _dangling_aliases(session):
        session.execute(delete(A).where(A.c.task_id == tid, A.c.name == alias))
        report.repaired.append(f"removed alias {task}@{alias}")
    report.dangling_aliases = []
    swept = GcReport()
    for digest in _sweep(session, store, 0.0, swept):
        report.repaired.append(f"removed orphan blob sha256:{digest[:16]}…")
    if swept.removed_temp:
        report.repaired.append(f"removed {swept.removed_temp} temp files of finished writers")
    keep = _protected(session)
    report.orphans = sorted(d for d, _ in store.iter_blobs() if d not in keep)
    report.temp_files = sorted(name for name, _ in store.iter_temp())
