"""Read-side queries in SQLAlchemy Core: resolving references, version rows -> VersionInfo, search, lineage.

Core selects (not ORM objects) keep `list`/`show`/`versions` in the low milliseconds even with tens
of thousands of versions; every filter value is a bound parameter, never spliced into SQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection as Session

from registry.errors import RefError
from registry.refs import Ref, check_name, parse_ref
from registry.tables import alias as A
from registry.tables import evaluation as E
from registry.tables import lineage as L
from registry.tables import tag as G
from registry.tables import task as T
from registry.tables import version as V


@dataclass
class VersionInfo:
    id: int
    task: str
    number: int
    digest: str
    base_model: str | None
    base_fingerprint: str | None
    rank: int | None
    alpha: float | None
    target_modules: list[str]
    size_bytes: int
    created_at: datetime
    created_by: str
    note: str | None
    metadata: dict[str, Any]
    deleted_at: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.task}:{self.number}"

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ref"] = self.ref
        out["created_at"] = self.created_at.isoformat()
        out["deleted_at"] = self.deleted_at.isoformat() if self.deleted_at else None
        return out


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


VERSION_COLUMNS = [V.c.id, T.c.name, V.c.number, V.c.digest, V.c.base_model, V.c.base_fingerprint, V.c.rank,
                   V.c.alpha, V.c.target_modules, V.c.size_bytes, V.c.created_at, V.c.created_by, V.c.note,
                   V.c.metadata, V.c.deleted_at]


def version_select():
    return select(*VERSION_COLUMNS).select_from(V.join(T, V.c.task_id == T.c.id))


def to_infos(session: Session, rows: Sequence[Any]) -> list[VersionInfo]:
    """Rows of version_select() -> VersionInfo with tags and aliases (two IN queries for the lot)."""
    infos = [VersionInfo(*row[:10], utc(row[10]), row[11], row[12], row[13] or {}, utc(row[14])) for row in rows]
    if not infos:
        return infos
    by_id = {info.id: info for info in infos}
    ids = list(by_id)
    for chunk in _chunks(ids, 900):  # stay under SQLite's bound-parameter limit
        for vid, key, value in session.execute(select(G.c.version_id, G.c.key, G.c.value).where(G.c.version_id.in_(chunk))):
            by_id[vid].tags[key] = value
        for vid, name in session.execute(select(A.c.version_id, A.c.name).where(A.c.version_id.in_(chunk)).order_by(A.c.name)):
            by_id[vid].aliases.append(name)
    return infos


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def task_id(session: Session, name: str) -> int:
    tid = session.execute(select(T.c.id).where(T.c.name == name)).scalar()
    if tid is None:
        known = session.execute(select(T.c.name).order_by(T.c.name).limit(6)).scalars().all()
        hint = f" (tasks: {', '.join(known[:5])}{', ...' if len(known) > 5 else ''})" if known else " (the registry is empty)"
        raise RefError(f"no task named {name!r}{hint}")
    return tid


def resolve(session: Session, ref: str | Ref, *, include_deleted: bool = False) -> VersionInfo:
    """The version a reference names; RefError says precisely why when there is none (or several)."""
    parsed = ref if isinstance(ref, Ref) else parse_ref(ref)
    query = version_select()
    if parsed.kind == "digest":
        rows = session.execute(query.where(V.c.digest.startswith(parsed.digest_prefix, autoescape=True),
                                           V.c.deleted_at.is_(None)).order_by(T.c.name, V.c.number)).all()
        if not rows:
            raise RefError(f"no live version has a digest starting with {parsed.digest_prefix}")
        if len(rows) > 1:
            shown = ", ".join(f"{r[1]}:{r[2]}" for r in rows[:5])
            raise RefError(f"{parsed.text} is ambiguous: it matches {shown}; use a longer prefix or task:N")
        return to_infos(session, rows)[0]
    tid = task_id(session, parsed.task)
    if parsed.kind == "number":
        rows = session.execute(query.where(V.c.task_id == tid, V.c.number == parsed.number)).all()
        if not rows:
            latest = session.execute(select(func.max(V.c.number)).where(V.c.task_id == tid)).scalar()
            raise RefError(f"{parsed.text}: task {parsed.task!r} has no version {parsed.number} (latest is {latest})")
    elif parsed.kind == "alias":
        rows = session.execute(query.join(A, A.c.version_id == V.c.id).where(A.c.task_id == tid, A.c.name == parsed.alias)).all()
        if not rows:
            names = session.execute(select(A.c.name).where(A.c.task_id == tid).order_by(A.c.name)).scalars().all()
            raise RefError(f"{parsed.text}: task {parsed.task!r} has no alias {parsed.alias!r}"
                           f" (aliases: {', '.join(names) or 'none'})")
    else:
        latest = select(func.max(V.c.number)).where(V.c.task_id == tid, V.c.deleted_at.is_(None)).scalar_subquery()
        rows = session.execute(query.where(V.c.task_id == tid, V.c.number == latest)).all()
        if not rows:
            raise RefError(f"{parsed.text}: task {parsed.task!r} has no live version (all deleted)")
    info = to_infos(session, rows)[0]
    if info.deleted and not include_deleted:
        raise RefError(f"{info.ref} was deleted at {info.deleted_at:%Y-%m-%d %H:%M:%S} UTC")
    return info


# ---- search ---------------------------------------------------------------------------------------

_METRIC_RE = re.compile(r"^\s*([A-Za-z0-9_.:/-]{1,64})\s*(>=|<=|==|!=|>|<|=)\s*([-+0-9.eE]+)\s*$")
_OPS = {">=": "__ge__", "<=": "__le__", "==": "__eq__", "=": "__eq__", "!=": "__ne__", ">": "__gt__", "<": "__lt__"}


@dataclass(frozen=True)
class MetricFilter:
    metric: str
    op: str
    value: float
    task: str | None = None  # the evaluated task; None = any

    @classmethod
    def parse(cls, text: str) -> "MetricFilter":
        """'accuracy>=0.8' or 'agnews/accuracy>=0.8' (metric on a given evaluated task)."""
        m = _METRIC_RE.match(text)
        if not m:
            raise ValueError(f"metric filter {text!r} must look like 'accuracy>=0.8' or 'agnews/accuracy>=0.8'")
        name, op, raw = m.groups()
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"metric filter {text!r}: {raw!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"metric filter {text!r}: the threshold must be finite")
        task, _, metric = name.rpartition("/")
        return cls(metric, op, value, task or None)


def search(
    session: Session,
    *,
    task: str | None = None,
    base_model: str | None = None,
    tags: dict[str, str] | None = None,
    alias: str | None = None,
    metrics: Sequence[MetricFilter] = (),
    since: datetime | None = None,
    include_deleted: bool = False,
    limit: int | None = None,
) -> list[VersionInfo]:
    query = version_select()
    conditions = []
    if task is not None:
        conditions.append(T.c.name == check_name(task))
    if base_model is not None:
        conditions.append((V.c.base_model == base_model) | (V.c.base_fingerprint == base_model))
    for key, value in (tags or {}).items():
        conditions.append(V.c.id.in_(select(G.c.version_id).where(G.c.key == key, G.c.value == value)))
    if alias is not None:
        conditions.append(V.c.id.in_(select(A.c.version_id).where(A.c.name == check_name(alias, "alias"))))
    for f in metrics:
        cond = [E.c.metric == f.metric, getattr(E.c.value, _OPS[f.op])(f.value)]
        if f.task:
            cond.append(E.c.task == f.task)
        conditions.append(V.c.id.in_(select(E.c.version_id).where(*cond)))
    if since is not None:
        conditions.append(V.c.created_at >= utc(since))
    if not include_deleted:
        conditions.append(V.c.deleted_at.is_(None))
    query = query.where(and_(*conditions)).order_by(T.c.name, V.c.number)
    if limit is not None:
        query = query.limit(limit)
    return to_infos(session, session.execute(query).all())


# ---- lineage --------------------------------------------------------------------------------------


@dataclass
class Edge:
    parent: str  # "task:N", or the external reference for parents outside the registry
    child: str
    kind: str
    params: dict[str, Any]
    depth: int  # 1 = direct parent/child of the starting version

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lineage(session: Session, start: VersionInfo, direction: str = "up", max_depth: int | None = None) -> list[Edge]:
    """Breadth-first walk of lineage edges: "up" (ancestors), "down" (descendants) or "both"."""
    if direction not in ("up", "down", "both"):
        raise ValueError(f"direction must be 'up', 'down' or 'both', got {direction!r}")
    labels: dict[int, str] = {start.id: start.ref}
    edges: list[Edge] = []
    for way in (["up", "down"] if direction == "both" else [direction]):
        frontier, seen, depth = {start.id}, {start.id}, 0
        while frontier and (max_depth is None or depth < max_depth):
            depth += 1
            here = L.c.child_id if way == "up" else L.c.parent_id
            rows = session.execute(select(L.c.parent_id, L.c.child_id, L.c.parent_ref, L.c.kind, L.c.params)
                                   .where(here.in_(frontier)).order_by(L.c.id)).all()
            _label(session, labels, {r[0] for r in rows if r[0]} | {r[1] for r in rows})
            nxt = set()
            for parent_id, child_id, parent_ref, kind, params in rows:
                parent = labels[parent_id] if parent_id else (parent_ref or "?")
                edges.append(Edge(parent, labels[child_id], kind, params or {}, depth))
                other = parent_id if way == "up" else child_id
                if other and other not in seen:
                    seen.add(other)
                    nxt.add(other)
            frontier = nxt
    return edges


def _label(session: Session, labels: dict[int, str], ids: set[int]) -> None:
    missing = [i for i in ids if i not in labels]
    for chunk in _chunks(missing, 900):
        for vid, name, number in session.execute(select(V.c.id, T.c.name, V.c.number)
                                                 .select_from(V.join(T, V.c.task_id == T.c.id)).where(V.c.id.in_(chunk))):
            labels[vid] = f"{name}:{number}"
