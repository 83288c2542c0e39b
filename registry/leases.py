"""Benchmark cells as the registry tracks them when several workers run one benchmark: each cell's
state (pending, running on which node, done, failed with the error) and its lease.

A worker claims a cell before running it: the claim bumps the cell's epoch (the fencing token) and
records who holds it and a heartbeat. Only the holder of the current epoch may store the cell's
results (`finish`), so when a cell is retried — its worker died, or fell silent long enough for its
lease to lapse — the retry and a slow original can never both write: the original's epoch is stale
and its `finish` is refused. A lease can be taken over when the cell is pending or failed, when its
holder is a process on this host that no longer exists, or when its heartbeat is older than the lease.

Every transition is one transaction; the run row is locked (SELECT ... FOR UPDATE on PostgreSQL,
BEGIN IMMEDIATE on SQLite) while a cell's results are merged into it, so concurrent finishes of
different cells never lose each other's results.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection as Session
from sqlalchemy.engine import Engine

from registry.db import session_scope
from registry.errors import RegistryError
from registry.queries import utc
from registry.runs import run_id
from registry.tables import bench_cell as C
from registry.tables import bench_run as R
from registry.tables import utcnow
from registry.values import json_object

DEFAULT_LEASE_SECONDS = 120.0  # several heartbeats (every lease/6 s) may be missed before a takeover
CELL_STATES = ("pending", "running", "done", "failed")


class CellBusyError(RegistryError):
    """The cell is running under a live lease held by another process."""


class LeaseLostError(RegistryError):
    """This process's claim on the cell was taken over (its epoch is stale): it must not write."""


@dataclass
class CellLease:
    cell: str
    state: str
    epoch: int
    attempts: int
    holder: str | None
    node: str | None
    heartbeat_at: datetime | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["heartbeat_at"] = self.heartbeat_at.isoformat() if self.heartbeat_at else None
        return out


def this_holder() -> str:
    """'host:pid' of the calling process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_is_dead(holder: str | None) -> bool:
    """True only when the holder is a process on this host that no longer exists (pid reuse aside)."""
    if not holder:
        return True
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine: only its silence (the heartbeat) can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # killed but not yet reaped by its parent: a zombie runs nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def plan(session: Session, run: str | int, cells: list[str]) -> None:
    """A pending row for every cell that has none (idempotent: a resumed run keeps its rows)."""
    rid = run_id(session, run)
    known = set(session.execute(select(C.c.cell).where(C.c.run_id == rid)).scalars())
    for cell in cells:
        if cell not in known:
            session.execute(insert(C).values(run_id=rid, cell=cell, state="pending", epoch=0, attempts=0))


def _row(session: Session, rid: int, cell: str):
    row = session.execute(select(C).where(C.c.run_id == rid, C.c.cell == cell).with_for_update()).first()
    if row is None:
        raise RegistryError(f"benchmark cell {cell!r} is not planned in this run")
    return row


def claim(session: Session, run: str | int, cell: str, *, holder: str, node: str | None,
          lease_seconds: float = DEFAULT_LEASE_SECONDS) -> int | None:
    """Take the cell's lease: the new epoch, or None when the cell is already done. CellBusyError when a
    live holder has it."""
    rid = run_id(session, run)
    row = _row(session, rid, cell)
    if row.state == "done":
        return None
    if row.state == "running" and row.holder != holder and not holder_is_dead(row.holder):
        age = (utcnow() - utc(row.heartbeat_at)).total_seconds() if row.heartbeat_at else float("inf")
        if age < lease_seconds:
            raise CellBusyError(f"cell {cell!r} is running on {row.node or row.holder} (holder {row.holder}, "
                                f"heartbeat {age:.0f} s ago; the lease lapses after {lease_seconds:.0f} s)")
    epoch = row.epoch + 1
    session.execute(update(C).where(C.c.run_id == rid, C.c.cell == cell).values(
        state="running", epoch=epoch, attempts=row.attempts + 1, holder=holder, node=node,
        heartbeat_at=utcnow(), error=None))
    return epoch


def _check(row, cell: str, epoch: int) -> None:
    if row.epoch != epoch or row.state != "running":
        raise LeaseLostError(f"cell {cell!r}: this worker's claim (epoch {epoch}) was taken over (now epoch "
                             f"{row.epoch}, {row.state}, held by {row.holder}); its results are not stored")


def heartbeat(session: Session, run: str | int, cell: str, epoch: int) -> bool:
    """Renew the lease; False when it was taken over (the caller should stop)."""
    rid = run_id(session, run)
    done = session.execute(update(C).where(C.c.run_id == rid, C.c.cell == cell, C.c.epoch == epoch,
                                           C.c.state == "running").values(heartbeat_at=utcnow()))
    return done.rowcount == 1


def check(session: Session, run: str | int, cell: str, epoch: int) -> None:
    """LeaseLostError unless this epoch still holds the cell."""
    _check(_row(session, run_id(session, run), cell), cell, epoch)


def finish(session: Session, run: str | int, cell: str, epoch: int, *, strategy: str, result: dict[str, Any],
           score_cache: dict[str, Any] | None = None) -> None:
    """Store the cell's results into the run (merged under the run row's lock) and mark it done — only
    for the current epoch's holder."""
    rid = run_id(session, run)
    _check(_row(session, rid, cell), cell, epoch)
    results = session.execute(select(R.c.results).where(R.c.id == rid).with_for_update()).scalar() or {}
    results = dict(results)
    strategies = dict(results.get("strategies") or {})
    entry = dict(strategies.get(strategy) or {})
    entry["cells"] = {**(entry.get("cells") or {}), cell: result}
    strategies[strategy] = entry
    results["strategies"] = strategies
    if score_cache:
        results["score_cache"] = {**(results.get("score_cache") or {}), **score_cache}
    results["eval_seconds"] = round((results.get("eval_seconds") or 0.0) + (result.get("eval_seconds") or 0.0), 2)
    session.execute(update(R).where(R.c.id == rid).values(results=results, updated_at=utcnow()))
    session.execute(update(C).where(C.c.run_id == rid, C.c.cell == cell).values(
        state="done", heartbeat_at=utcnow(), error=None))


def fail(session: Session, run: str | int, cell: str, epoch: int, error: str) -> None:
    """Mark the cell failed with its error (ignored when the claim was already taken over)."""
    rid = run_id(session, run)
    session.execute(update(C).where(C.c.run_id == rid, C.c.cell == cell, C.c.epoch == epoch).values(
        state="failed", error=error[:2000], heartbeat_at=utcnow()))


def leases(session: Session, run: str | int) -> list[CellLease]:
    rid = run_id(session, run)
    rows = session.execute(select(C.c.cell, C.c.state, C.c.epoch, C.c.attempts, C.c.holder, C.c.node,
                                  C.c.heartbeat_at, C.c.error).where(C.c.run_id == rid).order_by(C.c.cell)).all()
    return [CellLease(r[0], r[1], r[2], r[3], r[4], r[5], utc(r[6]), r[7]) for r in rows]


@dataclass
class CellLeases:
    """A registry's benchmark cells run by several workers (`reg.cells`): each call is one transaction."""

    engine: Engine

    def plan(self, run: str | int, cells: Sequence[str]) -> None:
        """A pending row for each cell of the run that has none."""
        with session_scope(self.engine, write=True) as s:
            plan(s, run, list(cells))

    def claim(self, run: str | int, cell: str, *, holder: str | None = None, node: str | None = None,
              lease_seconds: float = DEFAULT_LEASE_SECONDS) -> int | None:
        """Take the cell's lease: its new epoch (pass it to finish), None if the cell is done;
        CellBusyError while another live process holds it."""
        with session_scope(self.engine, write=True) as s:
            return claim(s, run, cell, holder=holder or this_holder(), node=node, lease_seconds=lease_seconds)

    def heartbeat(self, run: str | int, cell: str, epoch: int) -> bool:
        with session_scope(self.engine, write=True) as s:
            return heartbeat(s, run, cell, epoch)

    def check(self, run: str | int, cell: str, epoch: int) -> None:
        with session_scope(self.engine) as s:
            check(s, run, cell, epoch)

    def finish(self, run: str | int, cell: str, epoch: int, *, strategy: str, result: Mapping[str, Any],
               score_cache: Mapping[str, Any] | None = None) -> None:
        """Merge the cell's results into the run and mark it done; LeaseLostError if the claim was taken over."""
        payload = json_object(result, "cell results")
        cache = json_object(score_cache, "score cache") if score_cache else None
        with session_scope(self.engine, write=True) as s:
            finish(s, run, cell, epoch, strategy=strategy, result=payload, score_cache=cache)

    def fail(self, run: str | int, cell: str, epoch: int, error: str) -> None:
        with session_scope(self.engine, write=True) as s:
            fail(s, run, cell, epoch, error)

    def list(self, run: str | int) -> list[CellLease]:
        with session_scope(self.engine) as s:
            return leases(s, run)
