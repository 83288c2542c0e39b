"""The read-only web app: HTML pages (Jinja2, autoescaped) and the JSON API they are built from.

Every route is a GET; nothing here calls a registry method that writes. Path parameters are registry
references (`task:3`, `task@best`, `sha256:ab12…`) or run names, resolved by the registry — never
file paths. Unknown references answer 404 with the registry's own message; malformed filters 400.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from adapter_hub.bench import report, summary
from adapter_hub.ui import plots
from registry import views
from registry.errors import RefError, RegistryError

HERE = Path(__file__).parent
LINEAGE_DIRECTIONS = ("up", "down", "both")


def version_url(ref: str) -> str:
    return "/versions/" + quote(ref, safe=":@")


def run_url(name: str) -> str:
    return "/runs/" + quote(name, safe="")


def task_url(task: str) -> str:
    return "/tasks/" + quote(task, safe="")


def create_app(registry) -> Starlette:
    """A Starlette app over an open `registry.Registry` (the caller owns and closes it)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.globals.update(version_url=version_url, run_url=run_url, task_url=task_url, fmt=report.fmt, is_ref=_is_ref,
                       location=str(registry.location) if hasattr(registry, "location") else "")
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)

    def page(name: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(request=request, query=dict(request.query_params), **context)
        return HTMLResponse(html, status_code=status)

    # ---- JSON API (the shapes of the CLI's --json: registry.views) --------------------------------

    async def api_tasks(request: Request) -> Response:
        return JSONResponse(views.tasks(registry))

    async def api_versions(request: Request) -> Response:
        return JSONResponse(views.versions(registry, request.path_params["task"],
                                           include_deleted=_flag(request, "all")))

    async def api_version(request: Request) -> Response:
        return JSONResponse(views.version(registry, request.path_params["ref"]))

    async def api_lineage(request: Request) -> Response:
        direction, depth = _lineage_args(request)
        return JSONResponse(views.lineage(registry, request.path_params["ref"], direction, depth))

    async def api_search(request: Request) -> Response:
        return JSONResponse(views.search(registry, **_search_filters(request)))

    async def api_runs(request: Request) -> Response:
        return JSONResponse(views.runs(registry))

    async def api_run(request: Request) -> Response:
        return JSONResponse(json.loads(json.dumps(views.run(registry, request.path_params["run"]), default=str)))

    async def api_curves(request: Request) -> Response:
        info = registry.runs.get(request.path_params["run"])
        return JSONResponse(_curves(info))

    async def api_compare(request: Request) -> Response:
        return JSONResponse(views.comparison(_runs_asked(request)))

    # ---- pages -------------------------------------------------------------------------------------

    async def tasks_page(request: Request) -> Response:
        return page("tasks.html", request, title="tasks", tasks=views.tasks(registry), runs=views.runs(registry)[:5])

    async def task_page(request: Request) -> Response:
        task = request.path_params["task"]
        found = views.versions(registry, task, include_deleted=_flag(request, "all"))
        return page("task.html", request, title=task, task=task, versions=found, show_all=_flag(request, "all"))

    async def version_page(request: Request) -> Response:
        detail = views.version(registry, request.path_params["ref"])
        up = views.lineage(registry, detail["ref"], "up")
        down = views.lineage(registry, detail["ref"], "down")
        graph = plots.lineage(detail["ref"], up, down, href=lambda ref: version_url(ref) if _is_ref(ref) else None)
        config = None
        if not detail["deleted_at"] and any(f["path"] == "adapter_config.json" for f in detail["files"]):
            config = json.loads(registry.read_file(detail["ref"], "adapter_config.json"))
        return page("version.html", request, title=detail["ref"], v=detail, graph=Markup(graph), up=up, down=down,
                    config=config)

    async def runs_page(request: Request) -> Response:
        return page("runs.html", request, title="benchmark runs", runs=views.runs(registry))

    async def run_page(request: Request) -> Response:
        info = registry.runs.get(request.path_params["run"])
        cells = [[c.cell, c.state, c.node or "", c.holder or "", c.attempts,
                  c.heartbeat_at.isoformat()[:19].replace("T", " ") if c.heartbeat_at else "", c.error or ""]
                 for c in registry.cells.list(info.name)]
        return page("run.html", request, title=info.name, run=info, cell_rows=cells, cell_header=CELL_HEADER,
                    **_run_context(info))

    async def compare_page(request: Request) -> Response:
        infos = _runs_asked(request)
        panels = [(info, Markup(_curve_svg(info))) for info in infos]
        return page("compare.html", request, title="compare " + ", ".join(i.name for i in infos), runs=infos,
                    header=report.COMPARISON_HEADER, rows=report.comparison_rows(infos), panels=panels)

    async def search_page(request: Request) -> Response:
        filters = _search_filters(request)
        searched = any(request.query_params.get(k) for k in SEARCH_FIELDS)
        found = views.search(registry, **filters) if searched else []
        return page("search.html", request, title="search", found=found, searched=searched)

    def _runs_asked(request: Request) -> list:
        names = request.query_params.getlist("run")
        if not names:
            raise HTTPException(400, "name the runs to compare: ?run=A&run=B")
        return [registry.runs.get(name) for name in names]

    # ---- errors ------------------------------------------------------------------------------------

    def _error(request: Request, status: int, message: str, kind: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message, "type": kind}, status_code=status)
        return page("error.html", request, status=status, title=f"{status}", status_code=status, message=message)

    async def on_ref_error(request: Request, exc: Exception) -> Response:
        return _error(request, 404, str(exc), type(exc).__name__)

    async def on_bad_input(request: Request, exc: Exception) -> Response:
        return _error(request, 400, str(exc), type(exc).__name__)

    async def on_http(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, exc.detail, "HTTPException")

    async def on_registry_error(request: Request, exc: Exception) -> Response:
        return _error(request, 500, str(exc), type(exc).__name__)

    routes = [
        Route("/api/tasks", api_tasks),
        Route("/api/tasks/{task}/versions", api_versions),
        Route("/api/versions/{ref}", api_version),
        Route("/api/versions/{ref}/lineage", api_lineage),
        Route("/api/search", api_search),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run}", api_run),
        Route("/api/runs/{run}/curves", api_curves),
        Route("/api/compare", api_compare),
        Route("/", tasks_page),
        Route("/tasks/{task}", task_page),
        Route("/versions/{ref}", version_page),
        Route("/runs", runs_page),
        Route("/runs/{run}", run_page),
        Route("/compare", compare_page),
        Route("/search", search_page),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers = {RefError: on_ref_error, ValueError: on_bad_input, HTTPException: on_http,
                RegistryError: on_registry_error}
    return Starlette(routes=routes, exception_handlers=handlers)


SEARCH_FIELDS = ("task", "tag", "metric", "alias", "base_model")
CELL_HEADER = ["cell", "state", "node", "holder", "attempts", "heartbeat (UTC)", "error"]


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "") not in ("", "0", "false", "no")


def _lineage_args(request: Request) -> tuple[str, int | None]:
    direction = request.query_params.get("direction", "up")
    if direction not in LINEAGE_DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(LINEAGE_DIRECTIONS)}, got {direction!r}")
    raw = request.query_params.get("depth")
    if raw is None or raw == "":
        return direction, None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"depth must be a whole number ≥ 1, got {raw!r}")
    return direction, int(raw)


def _search_filters(request: Request) -> dict[str, Any]:
    """?task=&tag=KEY=VALUE (repeatable)&metric=EXPR (repeatable)&alias=&base_model= -> Registry.search."""
    q = request.query_params
    tags = {}
    for pair in q.getlist("tag"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"tag filter {pair!r} must look like KEY=VALUE")
        tags[key] = value
    return {"task": q.get("task") or None, "tag": tags, "metrics": [m for m in q.getlist("metric") if m],
            "alias": q.get("alias") or None, "base_model": q.get("base_model") or None}


def _is_ref(text: str) -> bool:
    """A registry reference (task:N) rather than an external parent (a path or hub id outside it)."""
    task, sep, number = text.rpartition(":")
    return bool(sep and task and number.isdigit())


def _curves(info) -> dict[str, Any]:
    """Per strategy, the seen-task accuracy after each step with its interval (None for older runs)."""
    tasks = info.results.get("tasks") or []
    return {"tasks": tasks,
            "strategies": {label: summary.strategy_curve(entry, tasks)
                           for label, entry in (info.results.get("strategies") or {}).items()}}


def _curve_svg(info) -> str:
    data = _curves(info)
    series = []
    for label, points in data["strategies"].items():
        if points is None:  # older runs: the mean matrix, no interval
            entry = info.results["strategies"][label]
            if "matrix" not in entry:
                continue
            R = entry["matrix"]
            points = [{"mean": sum(R[i][:i + 1]) / (i + 1)} for i in range(len(R))]
        series.append((label, points))
    if not series:
        return ""
    cells = max((p[0].get("seeds", 1) for _, p in series), default=1)
    note = f"mean over {cells} cells; shaded: 95% bootstrap interval" if cells > 1 else "one cell per strategy"
    return plots.curves(series, data["tasks"], f"{info.name}: accuracy over the sequence", note)


ROUTING_HEADER = ["strategy", "router", "cells", "examples sent to their own task's adapter (after the last task)",
                  "ACC routed", "ACC with the task id (oracle)", "routed / oracle"]


def _routing_rows(info) -> list[list[str]]:
    """Task-free strategies: how often the router picked the right adapter, and what that cost in ACC."""
    rows = []
    for label, entry in (info.results.get("strategies") or {}).items():
        routed = [c for c in (entry.get("cells") or {}).values() if c.get("router") and c.get("matrix")]
        if not routed:
            continue
        mean = lambda values: sum(values) / len(values)  # noqa: E731
        rows.append([label, routed[0]["router"]["name"], str(len(routed)),
                     report.fmt(mean([c["router"]["accuracy"][-1] for c in routed])),
                     report.fmt(mean([c["metrics"]["acc"] for c in routed if c.get("metrics")] or [float("nan")])),
                     report.fmt(mean([c["router"]["oracle_acc"] for c in routed])),
                     report.fmt(mean([c["router"]["acc_over_oracle"] for c in routed]))])
    return rows


def _run_context(info) -> dict[str, Any]:
    strategies = info.results.get("strategies") or {}
    scorers = summary.scorers_of(info.results)
    heatmaps = []
    for label, entry in strategies.items():
        for scorer in scorers:
            view = report.scored(entry, scorer, scorers[0])
            if "matrix" in view:
                done = entry.get("cells_done", 1)
                title = (f"{label} ({entry.get('strategy', label)}, {scorer})"
                         + (f", mean over {done} cells" if done > 1 else ""))
                heatmaps.append((label, Markup(plots.heatmap(view["matrix"], entry.get("matrix_tasks") or
                                                             info.results.get("tasks") or [], title))))
    states = {label: list(zip(entry.get("matrix_tasks") or [], entry.get("states") or []))
              for label, entry in strategies.items() if entry.get("states")}
    return {"heatmaps": heatmaps, "curve": Markup(_curve_svg(info)), "states": states, "routing": _routing_rows(info),
            "routing_header": ROUTING_HEADER, "comparison_header": report.COMPARISON_HEADER[1:],
            "comparison": [row[1:] for row in report.comparison_rows([info])],
            "difference_header": report.DIFFERENCE_HEADER, "differences": report.difference_rows(info),
            "format_header": report.FORMAT_HEADER, "formats": report.format_rows(info),
            "competence": report.competence_notes(info), "scorers": scorers,
            "phase_header": report.PHASE_HEADER, "phases": report.phase_rows(info),
            "base_seconds": info.results.get("base_seconds")}
