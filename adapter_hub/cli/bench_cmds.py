"""Benchmark and evaluation commands. `bench list/show/compare` read the registry only (no torch);
`bench run`, `bench report` and `eval` import what they need when called."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from adapter_hub.bench.report import (
    COMPARISON_HEADER,
    DIFFERENCE_HEADER,
    FORMAT_HEADER,
    NOT_LEARNT_MARK,
    PHASE_HEADER,
    comparison_rows,
    competence_notes,
    difference_rows,
    fmt,
    format_rows,
    phase_rows,
    scored,
    write_report,
)
from adapter_hub.bench.summary import scorers_of
from adapter_hub.cli.main import Context, cli, compute_options, pass_ctx
from adapter_hub.cli.output import emit_json, table
from adapter_hub.core import progress
from adapter_hub.data import load_tasks
from adapter_hub.models.names import DTYPE_SETTINGS
from registry import views


@cli.group()
def bench() -> None:
    """Continual-learning benchmark runs: every strategy on the same tasks, model and budget."""


@bench.command("run")
@click.argument("config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Run name (default: the config's name, else bench-<time>).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding the config's named tasks (e.g. the CL_Benchmark folder).")
@click.option("--device", help="auto, cpu or cuda (overrides the config).")
@click.option("--dtype", type=click.Choice(DTYPE_SETTINGS), help="Base model dtype (overrides the "
              "config; auto = bf16 on a CUDA device that supports it, else fp32).")
@click.option("--no-resume", is_flag=True, help="Refuse to continue a run of the same name.")
@click.option("--new-run", is_flag=True, help="Start a new run even if one of this name exists (named NAME-2, ...).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the report into this folder (new or empty) when the run is done.")
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Rewrite this file with the run's export (as `bench export`) after every finished cell, so a "
                   "run whose registry is lost resumes from it (`bench import`) at the cell it reached.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where cells run: one after another in this process, or as Ray tasks (pip install "
                   "'adapter-hub[ray]'); the registry is the one shared truth.")
@click.option("--address", metavar="auto|ray://HOST:PORT", help="Ray cluster to join (default: start one here).")
@click.option("--max-parallel", type=click.IntRange(min=1), metavar="N", help="At most N cells at a time (Ray).")
@compute_options
@pass_ctx
def bench_run(ctx: Context, config_path: Path, name, data_root, device, dtype, no_resume, new_run, report_dir,
              export_path, executor, address, max_parallel) -> None:
    """Train every strategy of CONFIG (TOML) through its task sequence, evaluate after every task, store it all.

    A run of the same name is resumed when its config is unchanged, refused (naming the changed
    settings) when it is not. Example: adapter-hub bench run examples/builtin_quick.toml
    (on Ray: add --executor ray --max-parallel 2)"""
    from adapter_hub.bench.config import BenchConfig
    from adapter_hub.bench.driver import free_run_name, run_bench

    if report_dir is not None and report_dir.is_dir() and any(report_dir.iterdir()):  # before hours of training
        raise click.UsageError(f"--report {report_dir} exists and is not empty; pick a new folder")
    if export_path is not None and not export_path.parent.is_dir():
        raise click.UsageError(f"--export {export_path}: no folder {export_path.parent} to write it into")
    config = BenchConfig.from_toml(config_path, data_root=str(data_root) if data_root else None, device=device,
                                   dtype=dtype)
    reg = ctx.registry(create=True)
    name = name or config.name or config_path.stem
    if new_run:
        name = free_run_name(reg, name)
    on_cell = None if export_path is None else (lambda: reg.runs.export_to(name, export_path, replace=True))
    run = run_bench(config, reg, name=name, resume=not no_resume, echo=progress.say, on_cell=on_cell,
                    executor=executor, address=address, max_parallel=max_parallel)
    _print_comparison([run])
    if report_dir is not None:
        write_report(run, report_dir)
        click.echo(f"report: {report_dir / 'report.md'}", err=True)


@bench.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def bench_list(ctx: Context, as_json: bool) -> None:
    """List benchmark runs.

    Example: adapter-hub bench list --json
    """
    if as_json:
        emit_json(views.runs(ctx.registry()))
        return
    runs = ctx.registry().runs.list()
    table(["run", "status", "created (UTC)", "tasks", "strategies"],
          [[r.name, r.status, f"{r.created_at:%Y-%m-%d %H:%M}", " → ".join(r.results.get("tasks") or
            [str(t) for t in r.config.get("tasks", [])]), ", ".join(s.get("label") or s.get("name")
            for s in r.config.get("strategies", []))] for r in runs])


@bench.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_ctx
def bench_show(ctx: Context, run: str, as_json: bool) -> None:
    """Show one run: per strategy, the accuracy matrix and its metrics.

    Example: adapter-hub bench show builtin-quick
    """
    if as_json:
        emit_json(views.run(ctx.registry(), run))
        return
    info = ctx.registry().runs.get(run)
    tasks = info.results.get("tasks") or []
    click.echo(f"run {info.name}: {info.status}; base model {info.config.get('base_model')}; "
               f"scorers {', '.join(scorers_of(info.results))}")
    versions = Counter(cell.get("code", "unrecorded") for entry in (info.results.get("strategies") or {}).values()
                       for cell in (entry.get("cells") or {}).values())
    if len(versions) > 1:
        click.echo("cells come from different code: " + ", ".join(f"{v} ({n})" for v, n in versions.most_common()))
    for label, entry in (info.results.get("strategies") or {}).items():
        if "matrix" not in entry:
            click.echo(f"{label}: no cell evaluated yet")
            continue
        order = entry.get("matrix_tasks") or tasks
        done = entry.get("cells_done", 1)
        scorers = scorers_of(info.results)
        for scorer in scorers:
            view = scored(entry, scorer, scorers[0])
            if "matrix" not in view:
                continue
            title = f"{label} ({entry['strategy']}, {scorer})" + (f", mean over {done} cells" if done > 1 else "")
            table(["after \\ on", *order, "version"],
                  [[order[i], *(fmt(v) for v in row), (entry.get("states") or [None] * len(order))[i]]
                   for i, row in enumerate(view["matrix"])], title=title)
    states = ctx.registry().cells.list(info.name)
    if any(c.state != "done" for c in states):
        table(["cell", "state", "node", "holder", "attempts", "heartbeat (UTC)", "error"],
              [[c.cell, c.state, c.node, c.holder, c.attempts, f"{c.heartbeat_at:%H:%M:%S}" if c.heartbeat_at else "",
                (c.error or "")[:100]] for c in states], title="cells (distributed run)")
    if info.results.get("strategies"):
        _print_comparison([info])
        rows = phase_rows(info)
        if rows:
            table(PHASE_HEADER, rows, title=f"where the time went (base model scored in "
                                            f"{fmt(info.results.get('base_seconds'), 0)} s)")


@bench.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def bench_compare(ctx: Context, runs: tuple[str, ...], as_json: bool) -> None:
    """Strategies side by side (ACC, BWT, FWT, forgetting, intransigence, time) across one or more runs,
    with intervals; within each run, every strategy against the baseline by a paired bootstrap.

    A difference is called significant only when its 95% interval excludes 0; otherwise it reads
    "no difference". Example: adapter-hub bench compare builtin-quick my-other-run
    """
    reg = ctx.registry()
    infos = [reg.runs.get(r) for r in runs]
    if as_json:
        emit_json(views.comparison(infos))
    else:
        _print_comparison(infos)


@bench.command("report")
@click.argument("run")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write into (new or empty unless --force).")
@click.option("--force", is_flag=True, help="Replace the content of a non-empty --out folder.")
@pass_ctx
def bench_report(ctx: Context, run: str, out: Path, force: bool) -> None:
    """Write report.md, a heatmap of R per strategy, accuracy curves and results.json into --out.

    Example: adapter-hub bench report my-run --out reports/my-run"""
    for path in write_report(ctx.registry().runs.get(run), out, force=force):
        click.echo(str(path))


@bench.command("export")
@click.argument("run")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def bench_export(ctx: Context, run: str, dest: Path) -> None:
    """Write RUN (config, status, every cell's results) as one JSON file DEST, for `bench import`.

    The adapter versions named in the cells are not included (export them with `adapter-hub export`).
    Example: adapter-hub bench export my-run my-run.json"""
    try:
        document = ctx.registry().runs.export_to(run, dest)
    except (FileExistsError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None
    cells = sum(len(e.get("cells") or {}) for e in (document["results"].get("strategies") or {}).values())
    click.echo(f"exported run {document['name']} ({document['status']}, {cells} cells) to {dest}", err=True)


@bench.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Import under this name (default: the exported run's).")
@click.option("--drop", "drop", multiple=True, metavar="CELL",
              help="Leave this cell out (e.g. seq/s1; repeatable), so `bench run` trains it again: for cells "
                   "whose results are known to be wrong. Import into a fresh registry.")
@pass_ctx
def bench_import(ctx: Context, source: Path, name: str | None, drop: tuple[str, ...]) -> None:
    """Recreate an exported run from SOURCE here. Running `bench run` with the same config then
    resumes it: finished cells are kept as they were, only the missing ones are trained.

    Example: adapter-hub bench import my-run.json --drop seq/s1"""
    import json

    from adapter_hub.bench.prune import without_cells
    from registry.runs import check_document

    try:
        document = json.loads(source.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.UsageError(f"{source} is not JSON: {exc}")
    if drop:
        check_document(document)  # the document's own errors first, as a plain import would give them
        document = without_cells(document, drop)  # an unknown cell: refused before the registry is opened
    info = ctx.registry(create=True).runs.import_document(document, name=name)
    click.echo(f"imported run {info.name} ({info.status})", err=True)


def _print_comparison(runs) -> None:
    table(COMPARISON_HEADER, comparison_rows(runs), title="strategies compared (mean ±std over cells [95% CI]; "
                                                          f"{NOT_LEARNT_MARK}: a task was not learnt)")
    for run in runs:
        rows = difference_rows(run)
        if rows:
            table(DIFFERENCE_HEADER, rows, title=f"{run.name}: paired differences (* = the 95% interval excludes 0)")
        rows = format_rows(run)
        if rows:
            table(FORMAT_HEADER, rows, title=f"{run.name}: format forgetting (negative: generation forgets more)")
        for line in competence_notes(run):
            click.echo(f"{run.name}: {line}")


@cli.command("eval")
@click.argument("refs", nargs=-1, required=True)
@click.option("--data", "specs", multiple=True, required=True, metavar="SPEC",
              help="A task to score on: folder, builtin:NAME or hf:ID (repeatable).")
@click.option("--base-model", help="Base model (default: the first version's recorded base model).")
@click.option("--scorer", type=click.Choice(["loglik", "generate"]),
              help="loglik: rank the labels by likelihood; generate: greedy decoding, exact match (default: "
                   "EvalConfig.scorer).")
@click.option("--max-test", type=int, help="Score at most this many test examples per task (seeded sample).")
@click.option("--batch-size", type=int, help="Examples per forward (default: EvalConfig.batch_size).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", type=click.Choice(DTYPE_SETTINGS), default="auto", show_default=True,
              help="Base model dtype: auto = bf16 on a CUDA device that supports it, else fp32.")
@click.option("--with-base", is_flag=True, help="Also score the bare base model.")
@click.option("--record/--no-record", default=True, show_default=True, help="Store the results as evaluations.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@compute_options
@pass_ctx
def eval_cmd(ctx: Context, refs, specs, base_model, scorer, max_test, batch_size, device, dtype, with_base, record,
             as_json):
    """Score registry versions REF... on tasks: every version on every task, one routed pass per task.

    Example: adapter-hub eval topic:1 sentiment --data builtin:topic --data builtin:sentiment
    """
    from adapter_hub.evaluation import EvalConfig, evaluate_states
    from adapter_hub.models.devices import resolve_device
    from adapter_hub.models.loading import load_base_model, load_tokenizer

    reg = ctx.registry()
    versions = [reg.get(r) for r in refs]
    tasks = load_tasks(list(specs), max_test=max_test)
    base_model = base_model or versions[0].base_model
    if not base_model:
        raise click.UsageError("the versions record no base model; pass --base-model")
    adapters = {v.ref: reg.load(v.ref) for v in versions}
    states = {**adapters, **({"base": None} if with_base else {})}
    model = load_base_model(base_model, device=resolve_device(device), dtype=dtype)
    scores = evaluate_states(model, load_tokenizer(base_model), tasks, states,
                             EvalConfig(**{k: v for k, v in {"scorer": scorer, "batch_size": batch_size}.items()
                                           if v is not None}))
    if record:
        for ref in adapters:
            for t in tasks:
                s = scores[ref][t.name]
                reg.record_evaluation(ref, task=t.name, metric="accuracy", value=s.accuracy, dataset=t.fingerprint(),
                                      scorer=s.scorer)
    if as_json:
        emit_json({label: {t: s.to_dict() for t, s in per.items()} for label, per in scores.items()})
    else:
        table(["version", *(t.name for t in tasks)], [[label, *(fmt(scores[label][t.name].accuracy) for t in tasks)]
                                                      for label in states], title=f"accuracy ({scorer})")
