"""Registry: versioned LoRA adapters per task, content-addressed blobs, lineage, evaluations, runs.

Never imports torch: adapters given as objects are saved through their own `.save()`, and `load()`
imports adapter_hub only when called. Every write validates everything first, stores blobs (durable)
second, and commits one database transaction last, so a crash at any point leaves either nothing or
orphan blobs (which `gc` frees) — never a row whose bytes are missing.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from registry import housekeeping, leases, queries, runs
from registry.adapter_format import EXPORT_MANIFEST, inspect_folder
from registry.db import (check_schema, check_sqlite_file, current_revision, describe, has_tables, make_engine,
                         session_scope,
                         upgrade)
from registry.errors import DuplicateVersionError, RefError, RegistryError
from registry.models import alias as A
from registry.models import evaluation as E
from registry.models import lineage as L
from registry.models import setting as S
from registry.models import tag as G
from registry.models import task as T
from registry.models import utcnow
from registry.models import version as V
from registry.models import version_file as F
from registry.queries import MetricFilter, VersionInfo
from registry.refs import check_name, parse_ref
from registry.store import (BlobStore, check_file_name, check_hex, fill_from_store, materialise, open_store,
                            output_folder, sha256_file)

if TYPE_CHECKING:
    from adapter_hub.adapter import LoraAdapter

DB_FILE = "registry.db"
INIT_LOCK = ".init.lock"  # serialises the creation of a registry folder
OnDuplicate = Literal["error", "reuse", "new"]
# Lineage edge kind for an adapter's recorded operation (adapter.provenance["op"], and "chain_ops" for
# unsaved results it was built from); when several apply, the first kind in EDGE_PRECEDENCE wins.
EDGE_PRECEDENCE = ("merged_from", "reduced_from", "trained_from", "imported", "derived_from")
EDGE_KIND = {"train": "trained_from", "merge": "merged_from", "compose": "merged_from", "add": "merged_from",
             "subtract": "merged_from", "linear": "merged_from", "task_arithmetic": "merged_from",
             "reduce_rank": "reduced_from", "scale": "derived_from", "negate": "derived_from", "import": "imported"}


def default_location() -> str:
    """$ADAPTER_HUB_REGISTRY, else $ADAPTER_HUB_HOME, else <user data dir>/adapter-hub/registry."""
    if os.environ.get("ADAPTER_HUB_REGISTRY"):
        return os.environ["ADAPTER_HUB_REGISTRY"]
    if os.environ.get("ADAPTER_HUB_HOME"):
        return os.environ["ADAPTER_HUB_HOME"]
    import platformdirs

    return str(Path(platformdirs.user_data_dir("adapter-hub")) / "registry")


def edge_kind(provenance: Mapping[str, Any]) -> str:
    """The lineage kind an adapter's recorded operations imply: a merge anywhere makes it merged_from."""
    ops = {provenance.get("op"), *provenance.get("chain_ops", [])} - {None}
    if not ops:
        return "trained_from"
    kinds = {EDGE_KIND.get(op, "derived_from") for op in ops}
    return next(kind for kind in EDGE_PRECEDENCE if kind in kinds)


def _created_by() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False, default=_reject))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable without NaN/inf: {exc}")


def _reject(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in (tags or {}).items():
        check_name(key, "tag key")
        text = str(value)
        if len(text) > 1024:
            raise ValueError(f"tag {key!r}: value is {len(text)} characters (at most 1024)")
        out[key] = text
    return out


def manifest_digest(files: Sequence[tuple[str, str, int]]) -> str:
    """A version's content digest: sha256 over its sorted (path, blob sha256) pairs."""
    h = hashlib.sha256()
    for path, blob, _ in sorted(files):
        h.update(f"{path}\0{blob}\n".encode())
    return "sha256:" + h.hexdigest()


@dataclass
class Registry:
    engine: Engine
    store: BlobStore
    location: str
    checkouts: Path  # verified local copies of versions, for path()/load()

    # ---- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, location: str | os.PathLike | None = None, *, store: str | None = None,
             create: bool = True, check: bool = True) -> "Registry":
        """A registry folder (SQLite inside) or a database URL. New ones are built by Alembic."""
        location = str(location) if location is not None else default_location()
        if "://" in location:
            return cls._open_url(location, store, create, check)
        root = Path(location).expanduser().resolve()
        db = root / DB_FILE
        if not db.exists():
            if not create:
                raise RegistryError(f"no registry at {root} (no {DB_FILE} there); check the path, or create one "
                                    f"with `adapter-hub --registry {root} init`")
            cls._create_folder(root)
        check_sqlite_file(db)
        engine = make_engine(f"sqlite:///{db}")
        cls._ensure_schema(engine, str(root), create, check)
        store_url = cls._setting(engine, "store") or store or str(root / "objects")
        return cls(engine, open_store(store_url), str(root), root / "checkouts")

    @staticmethod
    def _create_folder(root: Path) -> None:
        """Build a new registry folder; several processes may race here (the first builds, the rest wait).
        A folder holding anything else is refused: a registry is never created over unknown content."""
        if root.exists() and not root.is_dir():
            raise RegistryError(f"{root} exists and is not a folder; pick a new or empty folder for the registry")
        if root.is_dir() and any(e.name != INIT_LOCK for e in root.iterdir()):
            raise RegistryError(f"{root} exists and is not an adapter-hub registry (no {DB_FILE}); "
                                f"pick a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
        import fcntl

        with open(root / INIT_LOCK, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if (root / DB_FILE).exists():
                return  # another process built it while we waited
            engine = make_engine(f"sqlite:///{root / DB_FILE}")
            try:
                upgrade(engine)
            finally:
                engine.dispose()

    @classmethod
    def _open_url(cls, url: str, store: str | None, create: bool, check: bool) -> "Registry":
        engine = make_engine(url)
        fresh = cls._ensure_schema(engine, url, create, check)
        saved = cls._setting(engine, "store")
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
            saved = cls._setting(engine, "store")
            if store and saved != store:
                raise RegistryError(f"{url} keeps its blobs in {saved}, not {store}")
            store_url = saved
        import platformdirs

        cache = Path(platformdirs.user_cache_dir("adapter-hub")) / "checkouts"
        return cls(engine, open_store(store_url), url, cache)

    @staticmethod
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

    @staticmethod
    def _setting(engine: Engine, key: str) -> str | None:
        with session_scope(engine) as conn:
            return conn.execute(select(S.c.value).where(S.c.key == key)).scalar()

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
        metadata = _json_object(metadata, "metadata")
        tags = _check_tags(tags)
        if note is not None and (not isinstance(note, str) or len(note) > 4096):
            raise ValueError("note must be a string of at most 4096 characters")
        with tempfile.TemporaryDirectory(prefix="adapter-hub-register-") as tmp:
            folder, provenance = self._as_folder(adapter_or_folder, Path(tmp))
            info = inspect_folder(folder)
            provenance = provenance or info.provenance
            edges = self._parent_edges(parents, provenance)
            staged = []
            try:
                for name in info.files:
                    staged.append((name, self.store.stage(folder / name, progress)))
                return self._store_and_insert(task, staged, info, edges, metadata, tags, note, on_duplicate,
                                              created_by, _import_from)
            finally:
                for _, st in staged:
                    self.store.discard(st)

    def _store_and_insert(self, task, staged, info, edges, metadata, tags, note, on_duplicate, created_by,
                          import_from) -> VersionInfo:
        """Pin the staged blobs, move them to their addresses, then insert the version and drop the pins
        in one transaction (the gc protocol in registry/housekeeping.py); a failure releases the pins
        and removes the blobs this call created that nothing else needs."""
        stored = [(name, st.digest, st.size) for name, st in staged]
        blobs = [b for _, b, _ in stored]
        token = housekeeping.pin(self.engine, blobs)
        created: list[str] = []
        try:
            for _, st in staged:
                if self.store.commit(st):
                    created.append(st.digest)
            digest = manifest_digest(stored)
            row = dict(digest=digest, base_model=info.base_model, base_fingerprint=info.base_fingerprint,
                       rank=info.rank, alpha=info.alpha, target_modules=info.target_modules,
                       size_bytes=info.size_bytes, created_by=created_by or _created_by(), note=note,
                       metadata=metadata)
            with session_scope(self.engine, write=True) as s:
                tid, next_number = self._lock_task(s, task)
                housekeeping.unpin(s, token, blobs, self.store)
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
                housekeeping.release(self.engine, self.store, token, created)
            except Exception:  # noqa: BLE001 - the original error matters; stale pins expire, gc frees blobs
                pass
            raise

    @staticmethod
    def _as_folder(adapter_or_folder: Any, tmp: Path) -> tuple[Path, dict[str, Any]]:
        if isinstance(adapter_or_folder, (str, os.PathLike)):
            return Path(adapter_or_folder), {}
        if hasattr(adapter_or_folder, "save") and hasattr(adapter_or_folder, "provenance"):
            adapter_or_folder.save(tmp / "adapter")
            return tmp / "adapter", dict(adapter_or_folder.provenance or {})
        raise TypeError(f"register() takes a LoraAdapter or an adapter folder, got {type(adapter_or_folder).__name__}")

    def _parent_edges(self, parents: Sequence[str] | Mapping[str, str] | None,
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
        with session_scope(self.engine) as s:
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

    def _lock_task(self, s, name: str) -> tuple[int, int]:
        """Create the task if new, then lock its row; returns (task id, next version number)."""
        dialect = self.engine.dialect.name
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

    @staticmethod
    def _lock_existing_task(s, ref_or_task: str) -> int:
        """Lock the row of the task a ref names (or the task itself), so concurrent alias moves, tags and
        deletes on one task serialise on PostgreSQL (SQLite's BEGIN IMMEDIATE already does)."""
        parsed = parse_ref(ref_or_task)
        name = parsed.task if parsed.kind != "digest" else queries.resolve(s, parsed).task
        tid = queries.task_id(s, name)
        s.execute(select(T.c.id).where(T.c.id == tid).with_for_update())
        return tid

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
        from sqlalchemy import func

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
        import tempfile

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
        from adapter_hub.adapter import LoraAdapter

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
        manifest: dict[str, Any] = {}
        if (folder / EXPORT_MANIFEST).is_file():
            try:
                manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
            except json.JSONDecodeError as exc:
                raise RegistryError(f"{folder / EXPORT_MANIFEST}: not valid JSON ({exc})")
        source = f"{manifest['ref']}@{manifest.get('registry', '?')}" if manifest.get("ref") else str(folder.resolve())
        return self.register(folder, task=task, metadata=manifest.get("metadata"), tags=manifest.get("tags"),
                             note=note if note is not None else manifest.get("note"), on_duplicate=on_duplicate,
                             _import_from=source)

    # ---- aliases, tags, deletion, evaluations ----------------------------------------------------

    def alias(self, ref: str, name: str) -> VersionInfo:
        """Point `task@name` at this version (moving it if it exists)."""
        check_name(name, "alias")
        with session_scope(self.engine, write=True) as s:
            tid = self._lock_existing_task(s, ref)
            info = queries.resolve(s, ref)
            key = (A.c.task_id == tid) & (A.c.name == name)
            if s.execute(select(A.c.name).where(key)).first():
                s.execute(update(A).where(key).values(version_id=info.id, updated_at=utcnow()))
            else:
                s.execute(insert(A).values(task_id=tid, name=name, version_id=info.id, updated_at=utcnow()))
            return queries.resolve(s, info.ref)

    def unalias(self, task: str, name: str) -> None:
        with session_scope(self.engine, write=True) as s:
            tid = self._lock_existing_task(s, check_name(task))
            if s.execute(delete(A).where(A.c.task_id == tid, A.c.name == check_name(name, "alias"))).rowcount == 0:
                raise RefError(f"task {task!r} has no alias {name!r}")

    def tag(self, ref: str, key: str, value: Any) -> VersionInfo:
        (key, text), = _check_tags({key: value}).items()
        with session_scope(self.engine, write=True) as s:
            self._lock_existing_task(s, ref)
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
            self._lock_existing_task(s, ref)
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

    # ---- benchmark runs --------------------------------------------------------------------------

    def create_run(self, name: str, config: Mapping[str, Any]) -> runs.RunInfo:
        check_name(name, "run")
        config = _json_object(config, "run config")
        with session_scope(self.engine, write=True) as s:
            if s.execute(select(runs.R.c.id).where(runs.R.c.name == name)).first():
                raise RegistryError(f"a benchmark run named {name!r} exists; resume it or pick another name")
            runs.create_run(s, name, config)
            return runs.get_run(s, name)

    def export_run(self, run: str | int) -> dict[str, Any]:
        """The run as one JSON-ready document (config, status, results with every cell) for import_run."""
        return runs.export_document(self.get_run(run), source=describe(self.engine))

    def import_run(self, document: Mapping[str, Any], *, name: str | None = None) -> runs.RunInfo:
        """Recreate an exported run here (under `name`, default its own). Its finished cells come back
        as they were, so `bench run` with the same config resumes it with the cells still to do; the
        adapter versions the cells name are not copied (they stay in the registry they were trained in)."""
        stored_name, status, config, results = runs.check_document(document)
        name = name or stored_name
        check_name(name, "run")
        config, results = _json_object(config, "run config"), _json_object(results, "run results")
        with session_scope(self.engine, write=True) as s:
            if s.execute(select(runs.R.c.id).where(runs.R.c.name == name)).first():
                raise RegistryError(f"a benchmark run named {name!r} exists here; import it under another name")
            runs.create_run(s, name, config, status=status, results=results)
            return runs.get_run(s, name)

    def update_run(self, run: str | int, *, status: str | None = None, results: Mapping[str, Any] | None = None) -> None:
        payload = _json_object(results, "run results") if results is not None else None
        with session_scope(self.engine, write=True) as s:
            runs.update_run(s, run, status=status, results=payload)

    def record_run_step(self, run: str | int, *, strategy: str, step: int, task: str, version: str | None = None,
                        seconds: float | None = None) -> None:
        with session_scope(self.engine, write=True) as s:
            vid = queries.resolve(s, version, include_deleted=True).id if version else None
            runs.record_step(s, run, strategy=strategy, step=step, task=task, version_id=vid, seconds=seconds)

    def get_run(self, run: str | int) -> runs.RunInfo:
        with session_scope(self.engine) as s:
            return runs.get_run(s, run)

    # ---- benchmark cells run by several workers (registry/leases.py) ------------------------------

    def plan_cells(self, run: str | int, cells: Sequence[str]) -> None:
        """A pending row for each cell of the run that has none."""
        with session_scope(self.engine, write=True) as s:
            leases.plan(s, run, list(cells))

    def claim_cell(self, run: str | int, cell: str, *, holder: str | None = None, node: str | None = None,
                   lease_seconds: float = leases.DEFAULT_LEASE_SECONDS) -> int | None:
        """Take the cell's lease: its new epoch (pass it to finish_cell), None if the cell is done;
        CellBusyError while another live process holds it."""
        with session_scope(self.engine, write=True) as s:
            return leases.claim(s, run, cell, holder=holder or leases.this_holder(), node=node,
                                lease_seconds=lease_seconds)

    def heartbeat_cell(self, run: str | int, cell: str, epoch: int) -> bool:
        with session_scope(self.engine, write=True) as s:
            return leases.heartbeat(s, run, cell, epoch)

    def check_cell(self, run: str | int, cell: str, epoch: int) -> None:
        with session_scope(self.engine) as s:
            leases.check(s, run, cell, epoch)

    def finish_cell(self, run: str | int, cell: str, epoch: int, *, strategy: str, result: Mapping[str, Any],
                    score_cache: Mapping[str, Any] | None = None) -> None:
        """Merge the cell's results into the run and mark it done; LeaseLostError if the claim was taken over."""
        payload = _json_object(result, "cell results")
        cache = _json_object(score_cache, "score cache") if score_cache else None
        with session_scope(self.engine, write=True) as s:
            leases.finish(s, run, cell, epoch, strategy=strategy, result=payload, score_cache=cache)

    def fail_cell(self, run: str | int, cell: str, epoch: int, error: str) -> None:
        with session_scope(self.engine, write=True) as s:
            leases.fail(s, run, cell, epoch, error)

    def merge_run_results(self, run: str | int, values: Mapping[str, Any]) -> None:
        """Set top-level keys of a run's results without overwriting what concurrent cells stored."""
        payload = _json_object(values, "run results")
        with session_scope(self.engine, write=True) as s:
            leases.merge_results(s, run, payload)

    def cell_states(self, run: str | int) -> list[leases.CellState]:
        with session_scope(self.engine) as s:
            return leases.states(s, run)

    def list_runs(self) -> list[runs.RunInfo]:
        with session_scope(self.engine) as s:
            return runs.list_runs(s)

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


def parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    """['k=v', ...] -> {k: v} (for the CLI)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


__all__ = ["Registry", "VersionInfo", "MetricFilter", "default_location", "manifest_digest", "parse_tags"]
