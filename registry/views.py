"""The JSON shapes of what the registry shows: one definition shared by the CLI's `--json` and the web
page's `/api/...`, so a script written against one works against the other. Plain dicts and lists of
JSON types only (datetimes as ISO strings); never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from registry.api import Registry
    from registry.runs import RunInfo


def tasks(reg: "Registry") -> list[dict[str, Any]]:
    """`list --json`: one row per task (live version count, latest, update time, aliases)."""
    return reg.tasks()


def versions(reg: "Registry", task: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
    """`versions TASK --json`."""
    return [v.to_dict() for v in reg.versions(task, include_deleted=include_deleted)]


def search(reg: "Registry", **filters: Any) -> list[dict[str, Any]]:
    """`search --json` with Registry.search's keyword filters."""
    return [v.to_dict() for v in reg.search(**filters)]


def version(reg: "Registry", ref: str) -> dict[str, Any]:
    """`show REF --json`: the version, its files (none once deleted), direct parents, evaluations."""
    v = reg.get(ref, include_deleted=True)
    files = reg.files(v.ref) if not v.deleted else []
    return {**v.to_dict(), "files": [{"path": p, "sha256": b, "size": n} for p, b, n in files],
            "parents": [e.to_dict() for e in reg.lineage(v.ref, "up", max_depth=1)],
            "evaluations": reg.evaluations(v.ref)}


def lineage(reg: "Registry", ref: str, direction: str = "up", depth: int | None = None) -> list[dict[str, Any]]:
    """`lineage REF [--down|--both] [--depth N] --json`: edges with their kind, parameters and depth."""
    return [e.to_dict() for e in reg.lineage(ref, direction, depth)]


def runs(reg: "Registry") -> list[dict[str, Any]]:
    """`bench list --json`."""
    return [{"name": r.name, "status": r.status, "created_at": r.created_at.isoformat(),
             "tasks": r.results.get("tasks") or r.config.get("tasks"),
             "strategies": list((r.results.get("strategies") or {}).keys())} for r in reg.runs.list()]


def run(reg: "Registry", name: str) -> dict[str, Any]:
    """`bench show RUN --json`: the whole stored run (config, status, results with cells, steps) and,
    for a run whose cells were claimed by workers, each cell's state, node, attempts and error."""
    return {**reg.runs.get(name).to_dict(), "cell_states": [c.to_dict() for c in reg.cells.list(name)]}


def comparison(infos: Sequence["RunInfo"]) -> list[dict[str, Any]]:
    """`bench compare RUN... --json`: per (run, strategy) the metrics, intervals, cells, training time and
    the paired difference against the run's baseline."""
    return [{"run": i.name, "strategy": label, "metrics": e.get("metrics"), "intervals": e.get("intervals"),
             "cells": e.get("cells_done"), "train_seconds": e.get("train_seconds"),
             "against": i.results.get("baseline"), "difference": (i.results.get("differences") or {}).get(label)}
            for i in infos for label, e in (i.results.get("strategies") or {}).items()]
