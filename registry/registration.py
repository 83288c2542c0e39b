"""Registering a version, step by step: the adapter as a PEFT folder, its parents resolved, its files
staged and pinned, moved to their content addresses, then one transaction that takes the task's next
number, inserts the version, its files, tags and lineage, and drops the pins (the gc protocol in
registry/housekeeping.py). A failure at any point leaves either nothing or orphan blobs for gc.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from registry import housekeeping, queries
from registry.db import session_scope
from registry.errors import DuplicateVersionError, RefError, RegistryError
from registry.lineage import edge_kind
from registry.queries import VersionInfo
from registry.refs import parse_ref
from registry.store import BlobStore
from registry.tables import lineage as L
from registry.tables import tag as G
from registry.tables import task as T
from registry.tables import utcnow
from registry.tables import version as V
from registry.tables import version_file as F

OnDuplicate = Literal["error", "reuse", "new"]


def default_creator() -> str:
    """Who registers: user@host, recorded with every version."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def manifest_digest(files: Sequence[tuple[str, str, int]]) -> str:
    """A version's content digest: sha256 over its sorted (path, blob sha256) pairs."""
    h = hashlib.sha256()
    for path, blob, _ in sorted(files):
        h.update(f"{path}\0{blob}\n".encode())
    return "sha256:" + h.hexdigest()


def store_and_insert(engine: Engine, store: BlobStore, task: str, staged, info, edges, metadata, tags, note,
                     on_duplicate: OnDuplicate, created_by: str | None, import_from: str | None) -> VersionInfo:
    """Pin the staged blobs, move them to their addresses, then insert the version and drop the pins
    in one transaction (the gc protocol in registry/housekeeping.py); a failure releases the pins
    and removes the blobs this call created that nothing else needs."""
    stored = [(name, st.digest, st.size) for name, st in staged]
    blobs = [b for _, b, _ in stored]
    token = housekeeping.pin(engine, blobs)
    created: list[str] = []
    try:
        for _, st in staged:
            if store.commit(st):
                created.append(st.digest)
        digest = manifest_digest(stored)
        row = dict(digest=digest, base_model=info.base_model, base_fingerprint=info.base_fingerprint,
                   rank=info.rank, alpha=info.alpha, target_modules=info.target_modules,
                   size_bytes=info.size_bytes, created_by=created_by or default_creator(), note=note,
                   metadata=metadata)
        with session_scope(engine, write=True) as s:
            tid, next_number = lock_task(s, engine, task)
            housekeeping.unpin(s, token, blobs, store)
            dup = s.execute(select(V.c.number).where(V.c.task_id == tid, V.c.digest == digest,
                                                     V.c.deleted_at.is_(None)).order_by(V.c.number)).scalar()
            if dup is not None and on_duplicate == "error":
                raise DuplicateVersionError(f"identical content is already {task}:{dup}; use it, or pass "
                                            f"on_duplicate='new' (--allow-duplicate) for another version")
            if dup is not None and on_duplicate == "reuse":
                return queries.resolve(s, f"{task}:{dup}")
            s.execute(update(T).where(T.c.id == tid).values(next_version=next_number + 1))
            vid = s.execute(insert(V).values(task_id=tid, number=next_number, created_at=utcnow(),
                                             **row)).inserted_primary_key[0]
            s.execute(insert(F), [{"version_id": vid, "path": p, "blob": b, "size": n} for p, b, n in stored])
            if tags:
                s.execute(insert(G), [{"version_id": vid, "key": k, "value": v} for k, v in tags.items()])
            if import_from:
                edges.append((None, import_from, "imported", {}))
            if edges:
                s.execute(insert(L), [{"child_id": vid, "parent_id": pid, "parent_ref": pref, "kind": kind,
                                       "params": params} for pid, pref, kind, params in edges])
            return queries.resolve(s, f"{task}:{next_number}")
    except BaseException:
        try:
            housekeeping.release(engine, store, token, created)
        except Exception:  # noqa: BLE001 - the original error matters; stale pins expire, gc frees blobs
            pass
        raise


def as_folder(adapter_or_folder: Any, tmp: Path) -> tuple[Path, dict[str, Any]]:
    if isinstance(adapter_or_folder, (str, os.PathLike)):
        return Path(adapter_or_folder), {}
    if hasattr(adapter_or_folder, "save") and hasattr(adapter_or_folder, "provenance"):
        adapter_or_folder.save(tmp / "adapter")
        return tmp / "adapter", dict(adapter_or_folder.provenance or {})
    raise TypeError(f"register() takes a LoraAdapter or an adapter folder, got {type(adapter_or_folder).__name__}")


def parent_edges(engine: Engine, parents: Sequence[str] | Mapping[str, str] | None,
                 provenance: dict[str, Any]) -> list[tuple[int | None, str | None, str, dict]]:
    """(parent id, external ref, kind, params) edges; every named ref must resolve (checked before any write)."""
    default_kind = edge_kind(provenance)
    # the edge keeps the operation's parameters; bulky per-module details stay in the adapter file
    params = {k: v for k, v in provenance.items() if k not in ("inputs", "chain", "relative_error")}
    wanted: dict[str, str] = {}
    if isinstance(parents, Mapping):
        wanted.update(parents)
    elif parents:
        if isinstance(parents, str):
            raise TypeError("parents must be a list of refs (or a {ref: kind} mapping), not a string")
        wanted.update({p: default_kind for p in parents})
    edges, seen = [], set()
    with session_scope(engine) as s:
        for ref, kind in wanted.items():
            parent = queries.resolve(s, ref, include_deleted=True)
            if parent.id not in seen:
                seen.add(parent.id)
                edges.append((parent.id, None, str(kind), params))
        for label in provenance.get("inputs", []) or []:
            try:
                parent = queries.resolve(s, str(label), include_deleted=True)
            except (RefError, RegistryError, ValueError):
                edges.append((None, str(label), default_kind, params))  # outside this registry
                continue
            if parent.id not in seen:
                seen.add(parent.id)
                edges.append((parent.id, None, default_kind, params))
    return edges


def lock_task(s, engine: Engine, name: str) -> tuple[int, int]:
    """Create the task if new, then lock its row; returns (task id, next version number)."""
    dialect = engine.dialect.name
    values = {"name": name, "next_version": 1, "created_at": utcnow()}
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    if dialect in ("sqlite", "postgresql"):
        s.execute(upsert(T).values(**values).on_conflict_do_nothing(index_elements=["name"]))
    elif s.execute(select(T.c.id).where(T.c.name == name)).scalar() is None:
        try:
            with s.begin_nested():
                s.execute(insert(T).values(**values))
        except SQLIntegrityError:
            pass  # another writer created it first
    row = s.execute(select(T.c.id, T.c.next_version).where(T.c.name == name).with_for_update()).one()
    return row[0], row[1]


def lock_existing_task(s, ref_or_task: str) -> int:
    """Lock the row of the task a ref names (or the task itself), so concurrent alias moves, tags and
    deletes on one task serialise on PostgreSQL (SQLite's BEGIN IMMEDIATE already does)."""
    parsed = parse_ref(ref_or_task)
    name = parsed.task if parsed.kind != "digest" else queries.resolve(s, parsed).task
    tid = queries.task_id(s, name)
    s.execute(select(T.c.id).where(T.c.id == tid).with_for_update())
    return tid
