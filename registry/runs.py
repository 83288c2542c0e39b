"""Continual-learning benchmark runs as the registry stores them: config, status, per-strategy results,
and which adapter version each strategy held after each task (so every cell of an accuracy matrix
can be traced to the adapter that produced it). `RunStore` is `registry.runs`; the functions below it
work inside a caller's transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection as Session
from sqlalchemy.engine import Engine

from registry import queries
from registry.db import describe, session_scope
from registry.errors import RefError, RegistryError
from registry.queries import utc
from registry.refs import check_name
from registry.tables import bench_run as R
from registry.tables import bench_step as S
from registry.tables import task as T
from registry.tables import utcnow
from registry.tables import version as V
from registry.values import json_object

STATUSES = ("running", "done", "failed")


@dataclass
class RunStep:
    strategy: str
    step: int
    task: str
    version: str | None  # "task:N"
    seconds: float | None


@dataclass
class RunInfo:
    id: int
    name: str
    status: str
    config: dict[str, Any]
    results: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    steps: list[RunStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"], out["updated_at"] = self.created_at.isoformat(), self.updated_at.isoformat()
        return out


def run_id(session: Session, run: str | int) -> int:
    column = R.c.id if isinstance(run, int) else R.c.name
    rid = session.execute(select(R.c.id).where(column == run)).scalar()
    if rid is None:
        known = session.execute(select(R.c.name).order_by(R.c.created_at.desc()).limit(5)).scalars().all()
        raise RefError(f"no benchmark run {run!r} (recent runs: {', '.join(known) or 'none'})")
    return rid


def create_run(session: Session, name: str, config: dict[str, Any], *, status: str = "running",
               results: dict[str, Any] | None = None, created_at: datetime | None = None) -> int:
    now = utcnow()
    return session.execute(insert(R).values(name=name, status=status, config=config, results=results or {},
                                            created_at=created_at or now, updated_at=now)).inserted_primary_key[0]


# A run moved between registries (another machine, a teammate, a later session on a fresh disk)
# travels as one JSON document: config, status and results, cells included. The adapter versions
# its cells name stay in the registry they were trained in; the document says where that was.
EXPORT_FORMAT = "adapter-hub-bench-run"
EXPORT_VERSION = 1


def export_document(info: RunInfo, source: str) -> dict[str, Any]:
    return {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "name": info.name, "status": info.status,
            "created_at": info.created_at.isoformat(), "exported_from": source, "config": info.config,
            "results": info.results, "steps": [asdict(step) for step in info.steps]}


def check_document(doc: Any) -> tuple[str, str, dict[str, Any], dict[str, Any], datetime | None]:
    """(name, status, config, results, created_at) of an exported run, or ValueError naming what is
    wrong. created_at (None where the document has none) lets a moved run keep its start date."""
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ValueError(f"not an exported benchmark run (expected \"format\": \"{EXPORT_FORMAT}\")")
    if doc.get("format_version") != EXPORT_VERSION:
        raise ValueError(f"exported run has format_version {doc.get('format_version')!r}; this version reads "
                         f"{EXPORT_VERSION}")
    for key in ("name", "status"):
        if not isinstance(doc.get(key), str):
            raise ValueError(f"exported run: {key} must be a string")
    for key in ("config", "results"):
        if not isinstance(doc.get(key), dict):
            raise ValueError(f"exported run: {key} must be an object")
    status = doc["status"]
    if status not in STATUSES:
        raise ValueError(f"exported run: status must be one of {STATUSES}, got {status!r}")
    # Nothing is running it here: an exported "running" run was interrupted (it resumes like one).
    return (doc["name"], "failed" if status == "running" else status, doc["config"], doc["results"],
            _created_at(doc.get("created_at")))


def _created_at(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        created = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        created = None
    if created is None:
        raise ValueError(f"exported run: created_at must be an ISO 8601 time, got {value!r}")
    # Exports write UTC with its offset; a time without one is read as UTC, as the registry stores it.
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def update_run(session: Session, run: str | int, *, status: str | None = None,
               results: dict[str, Any] | None = None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"run status must be one of {STATUSES}, got {status!r}")
    values: dict[str, Any] = {"updated_at": utcnow()}
    if status is not None:
        values["status"] = status
    if results is not None:
        values["results"] = results
    session.execute(update(R).where(R.c.id == run_id(session, run)).values(**values))


def record_step(session: Session, run: str | int, *, strategy: str, step: int, task: str,
                version_id: int | None, seconds: float | None) -> None:
    rid = run_id(session, run)
    key = (S.c.run_id == rid) & (S.c.strategy == strategy) & (S.c.step == step)
    values = {"task": task, "version_id": version_id, "seconds": seconds}
    if session.execute(select(S.c.step).where(key)).first():
        session.execute(update(S).where(key).values(**values))
    else:
        session.execute(insert(S).values(run_id=rid, strategy=strategy, step=step, **values))


_RUN_COLUMNS = (R.c.id, R.c.name, R.c.status, R.c.config, R.c.results, R.c.created_at, R.c.updated_at)


def _run_info(row) -> RunInfo:
    return RunInfo(row[0], row[1], row[2], row[3] or {}, row[4] or {}, utc(row[5]), utc(row[6]))


def get_run(session: Session, run: str | int) -> RunInfo:
    rid = run_id(session, run)
    info = _run_info(session.execute(select(*_RUN_COLUMNS).where(R.c.id == rid)).one())
    steps = session.execute(
        select(S.c.strategy, S.c.step, S.c.task, T.c.name, V.c.number, S.c.seconds)
        .select_from(S.outerjoin(V, S.c.version_id == V.c.id).outerjoin(T, V.c.task_id == T.c.id))
        .where(S.c.run_id == rid).order_by(S.c.strategy, S.c.step)
    ).all()
    info.steps = [RunStep(s, n, task, f"{vt}:{vn}" if vt else None, sec) for s, n, task, vt, vn, sec in steps]
    return info


def list_runs(session: Session) -> list[RunInfo]:
    return [_run_info(row) for row in session.execute(select(*_RUN_COLUMNS).order_by(R.c.created_at, R.c.id))]


def merge_results(session: Session, run: str | int, values: dict[str, Any]) -> None:
    """Set top-level keys of the run's results under the run row's lock (e.g. the base model's scores)."""
    rid = run_id(session, run)
    results = dict(session.execute(select(R.c.results).where(R.c.id == rid).with_for_update()).scalar() or {})
    results.update(values)
    session.execute(update(R).where(R.c.id == rid).values(results=results, updated_at=utcnow()))


@dataclass
class RunStore:
    """A registry's benchmark runs (`reg.runs`): each call is one transaction."""

    engine: Engine

    def create(self, name: str, config: Mapping[str, Any]) -> RunInfo:
        check_name(name, "run")
        config = json_object(config, "run config")
        with session_scope(self.engine, write=True) as s:
            if s.execute(select(R.c.id).where(R.c.name == name)).first():
                raise RegistryError(f"a benchmark run named {name!r} exists; resume it or pick another name")
            create_run(s, name, config)
            return get_run(s, name)

    def get(self, run: str | int) -> RunInfo:
        with session_scope(self.engine) as s:
            return get_run(s, run)

    def list(self) -> list[RunInfo]:
        with session_scope(self.engine) as s:
            return list_runs(s)

    def update(self, run: str | int, *, status: str | None = None, results: Mapping[str, Any] | None = None) -> None:
        payload = json_object(results, "run results") if results is not None else None
        with session_scope(self.engine, write=True) as s:
            update_run(s, run, status=status, results=payload)

    def merge_results(self, run: str | int, values: Mapping[str, Any]) -> None:
        """Set top-level keys of a run's results without overwriting what concurrent cells stored."""
        payload = json_object(values, "run results")
        with session_scope(self.engine, write=True) as s:
            merge_results(s, run, payload)

    def record_step(self, run: str | int, *, strategy: str, step: int, task: str, version: str | None = None,
                    seconds: float | None = None) -> None:
        with session_scope(self.engine, write=True) as s:
            vid = queries.resolve(s, version, include_deleted=True).id if version else None
            record_step(s, run, strategy=strategy, step=step, task=task, version_id=vid, seconds=seconds)

    def export(self, run: str | int) -> dict[str, Any]:
        """The run as one JSON-ready document (config, status, results with every cell) for import_document."""
        return export_document(self.get(run), source=describe(self.engine))

    def export_to(self, run: str | int, dest: str | os.PathLike, *, replace: bool = False) -> dict[str, Any]:
        """Write export(run) to the file `dest` and return the document. The file is written beside
        `dest` and renamed into place, so a reader, or a crash mid-write, never meets half a document
        (a long run rewrites its export after every cell). An existing `dest` is refused unless `replace`."""
        dest = Path(dest)
        if dest.exists() and not replace:
            raise FileExistsError(f"{dest} exists; pick a new file name")
        if not dest.parent.is_dir():
            raise FileNotFoundError(f"no folder {dest.parent} to write the export {dest.name} into")
        document = self.export(run)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return document

    def import_document(self, document: Mapping[str, Any], *, name: str | None = None) -> RunInfo:
        """Recreate an exported run here (under `name`, default its own). Its finished cells come back
        as they were, so `bench run` with the same config resumes it with the cells still to do; the
        adapter versions the cells name are not copied (they stay in the registry they were trained in)."""
        stored_name, status, config, results, created_at = check_document(document)
        name = name or stored_name
        check_name(name, "run")
        config, results = json_object(config, "run config"), json_object(results, "run results")
        with session_scope(self.engine, write=True) as s:
            if s.execute(select(R.c.id).where(R.c.name == name)).first():
                raise RegistryError(f"a benchmark run named {name!r} exists here; import it under another name")
            create_run(s, name, config, status=status, results=results, created_at=created_at)
            return get_run(s, name)
