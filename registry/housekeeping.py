"""Garbage collection and consistency checks for a registry's database + blob store.

gc is mark-and-sweep: the live set is every blob some live (not deleted) version uses; anything else in
the store older than `grace` is removed. The grace period protects blobs that a registration in flight
has written but not yet committed (blobs are durable before their row, by design); re-storing an
existing blob refreshes its mtime for the same reason.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection as Session

from registry.errors import IntegrityError
from registry.models import alias as A
from registry.models import task as T
from registry.models import version as V
from registry.models import version_file as F
from registry.store import BlobStore

DEFAULT_GRACE = 3600.0  # seconds; far longer than any registration takes between blob write and commit


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


def gc(session: Session, store: BlobStore, checkouts: Path | None, grace: float = DEFAULT_GRACE) -> GcReport:
    report = GcReport()
    now = time.time()
    keep = live_blobs(session)
    for digest, mtime in list(store.iter_blobs()):
        if digest in keep:
            continue
        if now - mtime < grace:
            report.kept_recent += 1
            continue
        report.freed_bytes += store.delete(digest)
        report.removed_blobs += 1
    for name, mtime in list(store.iter_temp()):
        if now - mtime >= grace:
            store.remove_temp(name)
            report.removed_temp += 1
    if checkouts is not None and checkouts.is_dir():
        wanted = {d.removeprefix("sha256:") for d in live_digests(session)}
        for entry in checkouts.iterdir():
            if entry.name not in wanted and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
                report.removed_checkouts += 1
    return report


def fsck(session: Session, store: BlobStore, *, repair: bool = False) -> FsckReport:
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
    dangling = session.execute(select(T.c.name, A.c.name, V.c.number, A.c.task_id)
                               .select_from(A.join(V, A.c.version_id == V.c.id).join(T, A.c.task_id == T.c.id))
                               .where(V.c.deleted_at.is_not(None))).all()
    report.dangling_aliases = [f"{task}@{alias} -> {task}:{number} (deleted)" for task, alias, number, _ in dangling]
    if repair:
        for task, alias, _, tid in dangling:
            session.execute(delete(A).where(A.c.task_id == tid, A.c.name == alias))
            report.repaired.append(f"removed alias {task}@{alias}")
        report.dangling_aliases = []
        for digest in report.orphans:
            store.delete(digest)
            report.repaired.append(f"removed orphan blob sha256:{digest[:16]}…")
        report.orphans = []
        for name in report.temp_files:
            store.remove_temp(name)
            report.repaired.append(f"removed temp file {name}")
        report.temp_files = []
    return report
