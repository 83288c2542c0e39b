"""Registry: versioned LoRA adapters per task, content-addressed blobs, lineage, evaluations — a thin
facade over the modules that do the work (opening, registration, queries, housekeeping); benchmark
runs and their cell leases are behind `reg.runs` (registry.runs) and `reg.cells` (registry.leases).

Never imports torch: adapters given as objects are saved through their own `.save()`, and `load()`
imports adapter_hub only when called. Every write validates everything first, stores blobs (durable)
second, and commits one database transaction last, so a crash at any point leaves either nothing or
orphan blobs (which `gc` frees) — never a row whose bytes are missing.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine

from registry import housekeeping, queries, runs
from registry.adapter_format import EXPORT_MANIFEST, inspect_folder, read_manifest
from registry.db import current_revision, session_scope, upgrade
from registry.errors import RefError, RegistryError
from registry.folders import fill_from_store, materialise, output_folder
from registry.leases import CellLeases
from registry.opening import default_location, open_location
from registry.queries import MetricFilter, VersionInfo
from registry.refs import check_name
from registry.registration import (
    OnDuplicate,
    as_folder,
    lock_existing_task,
    manifest_digest,
    parent_edges,
    store_and_insert,
)
from registry.runs import RunStore
from registry.store import BlobStore, check_file_name, check_hex, sha256_file
from registry.tables import alias as A
from registry.tables import evaluation as E
from registry.tables import tag as G
from registry.tables import task as T
from registry.tables import utcnow
from registry.tables import version as V
from registry.tables import version_file as F
from registry.values import check_tags, json_object

if TYPE_CHECKING:
    from adapter_hub.core.adapter import LoraAdapter


@dataclass
class Registry:
    engine: Engine
    store: BlobStore
    location: str
    checkouts: Path  # verified local copies of versions, for path()/load()
    runs: RunStore = field(init=False, repr=False)  # benchmark runs
    cells: CellLeases = field(init=False, repr=False)  # benchmark cells' leases, for several workers

    def __post_init__(self) -> None:
        self.runs, self.cells = RunStore(self.engine), CellLeases(self.engine)

    # ---- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, location: str | os.PathLike | None = None, *, store: str | None = None,
             create: bool = True, check: bool = True) -> "Registry":
        """A registry folder (SQLite inside) or a database URL. New ones are built by Alembic."""
        return cls(*open_location(location, store, create, check))

    def upgrade(self) -> str:
        """Migrate the database to this code's schema (`adapter-hub db upgrade`)."""
        upgrade(self.engine)
        return current_revision(self.engine) or ""

    # ---- registering -----------------------------------------------------------------------------

    def register(
        self,
        adapter_or_folder: "LoraAdapter | str | os.PathLike",
        *,
        task: str,
        metadata: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parents: Sequence[str] | Mapping[str, str] | None = None,
        note: str | None = None,
        on_duplicate: OnDuplicate = "error",
        created_by: str | None = None,
        progress: Callable[[int], None] | None = None,
        _import_from: str | None = None,
    ) -> VersionInfo:
        """Store an adapter (object or PEFT folder) as the next version of `task`.

        parents: refs of versions it came from (a list, kind inferred from the adapter's recorded
        operation, default trained_from) or {ref: kind}. Identical content already live in the same
        task: on_duplicate="error" (default) refuses naming that version, "reuse" returns it, "new"
        makes another version sharing the same blobs. The same content under another task is always
        allowed and shares the blobs.
        """
        check_name(task)
        if on_duplicate not in ("error", "reuse", "new"):
            raise ValueError(f"on_duplicate must be 'error', 'reuse' or 'new', got {on_duplicate!r}")
        metadata = json_object(metadata, "metadata")
        tags = check_tags(tags)
        if note is not None and (not isinstance(note, str) or len(note) > 4096):
            raise ValueError("note must be a string of at most 4096 characters")
        with tempfile.TemporaryDirectory(prefix="adapter-hub-register-") as tmp:
            folder, provenance = as_folder(adapter_or_folder, Path(tmp))
            info = inspect_folder(folder)
            provenance = provenance or info.provenance
            edges = parent_edges(self.engine, parents, provenance)
            staged = []
            try:
                for name in info.files:
                    staged.append((name, self.store.stage(folder / name, progress)))
                return store_and_insert(self.engine, self.store, task, staged, info, edges, metadata, tags, note,
                                        on_duplicate, created_by, _import_from)
            finally:
                for _, st in staged:
                    self.store.discard(st)

    # ---- reading ---------------------------------------------------------------------------------

    def get(self, ref: str, *, include_deleted: bool = False) -> VersionInfo:
        with session_scope(self.engine) as s:
            return queries.resolve(s, ref, include_deleted=include_deleted)

    def versions(self, task: str, *, include_deleted: bool = False) -> list[VersionInfo]:
        with session_scope(self.engine) as s:
            queries.task_id(s, check_name(task))
            return queries.search(s, task=task, include_deleted=include_deleted)

    def search(self, *, task: str | None = None, base_model: str | None = None, tag: Mapping[str, str] | None = None,
               alias: str | None = None, metrics: Sequence[str | MetricFilter] = (), since: datetime | None = None,
               include_deleted: bool = False, limit: int | None = None) -> list[VersionInfo]:
        """Versions matching every filter given. metrics: 'accuracy>=0.8' or 'agnews/accuracy>=0.8'."""
        parsed = [m if isinstance(m, MetricFilter) else MetricFilter.parse(m) for m in metrics]
        with session_scope(self.engine) as s:
            return queries.search(s, task=task, base_model=base_model, tags=dict(tag or {}), alias=alias,
                                  metrics=parsed, since=since, include_deleted=include_deleted, limit=limit)

    def tasks(self) -> list[dict[str, Any]]:
        """One row per task: live version count, latest live version, aliases."""
        with session_scope(self.engine) as s:
            rows = s.execute(
                select(T.c.name, func.count(V.c.id), func.max(V.c.number), func.max(V.c.created_at))
                .select_from(T.outerjoin(V, (V.c.task_id == T.c.id) & V.c.deleted_at.is_(None)))
                .group_by(T.c.id, T.c.name).order_by(T.c.name)
            ).all()
            aliases: dict[str, list[str]] = {}
            for task, alias, number in s.execute(select(T.c.name, A.c.name, V.c.number).select_from(
                    A.join(T, A.c.task_id == T.c.id).join(V, A.c.version_id == V.c.id)).order_by(A.c.name)):
                aliases.setdefault(task, []).append(f"{alias}->{number}")
        return [{"task": name, "versions": count, "latest": f"{name}:{latest}" if latest else None,
                 "updated_at": queries.utc(updated).isoformat() if updated else None, "aliases": aliases.get(name, [])}
                for name, count, latest, updated in rows]

    def lineage(self, ref: str, direction: str = "up", max_depth: int | None = None) -> list[queries.Edge]:
        with session_scope(self.engine) as s:
            return queries.lineage(s, queries.resolve(s, ref, include_deleted=True), direction, max_depth)

    def files(self, ref: str) -> list[tuple[str, str, int]]:
        """(path, blob sha256, size) of a version's files, each checked to be a safe name and digest."""
        with session_scope(self.engine) as s:
            info = queries.resolve(s, ref)
            rows = s.execute(select(F.c.path, F.c.blob, F.c.size).where(F.c.version_id == info.id)
                             .order_by(F.c.path)).all()
        for path, blob, _ in rows:
            check_file_name(path, info.ref)
            check_hex(blob)
        return [tuple(r) for r in rows]

    def read_file(self, ref: str, name: str, max_bytes: int = 1 << 20) -> bytes:
        """The bytes of one small file of a version (e.g. adapter_config.json), hash-checked, without
        a checkout: for viewers that only read. Refuses files over `max_bytes`."""
        found = {p: (b, n) for p, b, n in self.files(ref)}
        if name not in found:
            raise RefError(f"{ref} has no file {name!r} (files: {', '.join(sorted(found))})")
        blob, size = found[name]
        if size > max_bytes:
            raise ValueError(f"{ref}/{name} is {size} bytes; read_file serves at most {max_bytes}")
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "file"
            self.store.copy_out(blob, dest, f"{ref}/{name}")
            return dest.read_bytes()

    def path(self, ref: str, progress: Callable[[int], None] | None = None) -> Path:
        """A verified local folder holding the version's files (a cached checkout, re-checked each call).

        Safe to call from many processes at once: the checkout is built beside its place and renamed
        in; a damaged or tampered checkout (a changed byte, a missing or extra file) is rebuilt."""
        info = self.get(ref)
        files = self.files(info.ref)
        dest = self.checkouts / check_hex(info.digest.removeprefix("sha256:"))

        def intact(folder: Path) -> bool:
            try:
                names = sorted(entry.name for entry in folder.iterdir())
                return names == sorted(p for p, _, _ in files) and all(
                    not (folder / p).is_symlink() and sha256_file(folder / p)[0] == b for p, b, _ in files)
            except (OSError, RegistryError):
                return False

        if dest.is_dir() and intact(dest):
            return dest
        materialise(self.store, [(p, b) for p, b, _ in files], dest, info.ref, progress, keep=intact)
        return dest

    def load(self, ref: str) -> "LoraAdapter":
        """The version as a LoraAdapter (imports torch via adapter_hub), tagged with its ref and digest."""
        from adapter_hub.core.adapter import (
            LoraAdapter,  # the one place the registry reaches for torch
        )

        info = self.get(ref)
        adapter = LoraAdapter.load(self.path(info.ref))
        adapter.ref, adapter.digest = info.ref, info.digest
        return adapter

    def export(self, ref: str, dest: str | os.PathLike, progress: Callable[[int], None] | None = None, *,
               force: bool = False) -> Path:
        """Write the version as a PEFT folder (verified) plus a small manifest `import` understands.

        DEST must be new or empty unless `force` (then its old content is replaced as a whole). The
        folder is assembled beside DEST and renamed in, so a killed export leaves DEST as it was; the
        next export there removes the killed one's staging folder."""
        info = self.get(ref)
        files = [(p, b) for p, b, _ in self.files(info.ref)]
        manifest = {"ref": info.ref, "digest": info.digest, "registry": self.location, "metadata": info.metadata,
                    "tags": info.tags, "note": info.note, "base_model": info.base_model,
                    "exported_at": utcnow().isoformat()}
        extra = {EXPORT_MANIFEST: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()}
        return output_folder(dest, lambda staging: fill_from_store(self.store, files, staging, info.ref, progress,
                                                                    extra), force=force)

    def import_folder(self, folder: str | os.PathLike, *, task: str, note: str | None = None,
                      on_duplicate: OnDuplicate = "error") -> VersionInfo:
        """Register an exported (or any PEFT) folder, keeping exported metadata/tags and an `imported` edge."""
        folder = Path(folder)
        manifest = read_manifest(folder / EXPORT_MANIFEST) if (folder / EXPORT_MANIFEST).is_file() else {}
        source = f"{manifest['ref']}@{manifest.get('registry', '?')}" if manifest.get("ref") else str(folder.resolve())
        return self.register(folder, task=task, metadata=manifest.get("metadata"), tags=manifest.get("tags"),
                             note=note if note is not None else manifest.get("note"), on_duplicate=on_duplicate,
                             _import_from=source)

    # ---- aliases, tags, deletion, evaluations ----------------------------------------------------

    def alias(self, ref: str, name: str) -> VersionInfo:
        """Point `task@name` at this version (moving it if it exists)."""
        check_name(name, "alias")
        with session_scope(self.engine, write=True) as s:
            tid = lock_existing_task(s, ref)
            info = queries.resolve(s, ref)
            key = (A.c.task_id == tid) & (A.c.name == name)
            if s.execute(select(A.c.name).where(key)).first():
                s.execute(update(A).where(key).values(version_id=info.id, updated_at=utcnow()))
            else:
                s.execute(insert(A).values(task_id=tid, name=name, version_id=info.id, updated_at=utcnow()))
            return queries.resolve(s, info.ref)

    def unalias(self, task: str, name: str) -> None:
        with session_scope(self.engine, write=True) as s:
            tid = lock_existing_task(s, check_name(task))
            if s.execute(delete(A).where(A.c.task_id == tid, A.c.name == check_name(name, "alias"))).rowcount == 0:
                raise RefError(f"task {task!r} has no alias {name!r}")

    def tag(self, ref: str, key: str, value: Any) -> VersionInfo:
        (key, text), = check_tags({key: value}).items()
        with session_scope(self.engine, write=True) as s:
            lock_existing_task(s, ref)
            info = queries.resolve(s, ref)
            where = (G.c.version_id == info.id) & (G.c.key == key)
            if s.execute(select(G.c.key).where(where)).first():
                s.execute(update(G).where(where).values(value=text))
            else:
                s.execute(insert(G).values(version_id=info.id, key=key, value=text))
            return queries.resolve(s, info.ref)

    def delete(self, ref: str) -> VersionInfo:
        """Soft-delete: the row stays as a tombstone (its number is never reused), aliases to it go;
        `gc` later frees blobs no live version uses."""
        with session_scope(self.engine, write=True) as s:
            lock_existing_task(s, ref)
            info = queries.resolve(s, ref)
            s.execute(update(V).where(V.c.id == info.id).values(deleted_at=utcnow()))
            s.execute(delete(A).where(A.c.version_id == info.id))
            return queries.resolve(s, info.ref, include_deleted=True)

    def record_evaluation(self, ref: str, *, task: str, metric: str, value: float, dataset: str | None = None,
                          scorer: str | None = None, run: str | int | None = None, context: str | None = None) -> None:
        """Store a score of the version `ref` itself on `task`. `context` says how it was used when it was
        not alone (e.g. the per_task system's adapter for that task): a score of a system that merely
        contains the version must not be recorded against it. Within a run, the same (version, task,
        metric, dataset, scorer, context) is one row: scoring it again (a resumed cell) replaces it."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"evaluation value must be a finite number, got {value!r}")
        check_name(task, "evaluated task")
        with session_scope(self.engine, write=True) as s:
            info = queries.resolve(s, ref)
            rid = runs.run_id(s, run) if run is not None else None
            row = dict(version_id=info.id, task=task, metric=str(metric)[:64], dataset=dataset, scorer=scorer,
                       run_id=rid, context=None if context is None else str(context)[:256])
            if rid is not None:  # a run scoring the same thing again (a resumed or retried cell): one row
                same = [E.c[k].is_(None) if v is None else E.c[k] == v for k, v in row.items()]
                if s.execute(update(E).where(*same).values(value=float(value), created_at=utcnow())).rowcount:
                    return
            s.execute(insert(E).values(**row, value=float(value), created_at=utcnow()))

    def evaluations(self, ref: str) -> list[dict[str, Any]]:
        with session_scope(self.engine) as s:
            info = queries.resolve(s, ref, include_deleted=True)
            rows = s.execute(select(E.c.task, E.c.metric, E.c.value, E.c.dataset, E.c.scorer, E.c.run_id, E.c.created_at,
                                    E.c.context).where(E.c.version_id == info.id).order_by(E.c.id)).all()
        return [{"task": t, "metric": m, "value": v, "dataset": d, "scorer": sc, "run_id": r,
                 "created_at": queries.utc(c).isoformat(), "context": ctx} for t, m, v, d, sc, r, c, ctx in rows]

    # ---- maintenance -----------------------------------------------------------------------------

    def gc(self, grace: float = housekeeping.DEFAULT_GRACE) -> housekeeping.GcReport:
        """Free blobs that no live version uses and no registration in flight has pinned (and older
        than `grace` seconds), dead writers' temp files, and checkouts of deleted versions. Safe beside
        registrations and other gc's (the protocol is in registry/housekeeping.py)."""
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not math.isfinite(grace) or grace < 0:
            raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
        with session_scope(self.engine, write=True) as s:
            return housekeeping.gc(s, self.store, self.checkouts, float(grace))

    def fsck(self, repair: bool = False) -> housekeeping.FsckReport:
        """Check every live version's blobs, list orphans and dangling aliases; with `repair`, remove
        what is safe to (re-checked under the write lock, so registrations in flight keep their blobs)."""
        with session_scope(self.engine) as s:
            report = housekeeping.fsck(s, self.store)
        if repair:
            with session_scope(self.engine, write=True) as s:
                housekeeping.repair(s, self.store, report)
        return report

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Registry", "VersionInfo", "MetricFilter", "default_location", "manifest_digest"]
