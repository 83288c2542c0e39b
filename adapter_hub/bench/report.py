"""Reports for benchmark runs: a Markdown page, a PNG heatmap of R per strategy, a plot of each task's
accuracy over the sequence, and the raw results as JSON. Needs matplotlib only (no torch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from adapter_hub.bench.summary import scorers_of
from registry.folders import output_folder

METRIC_COLUMNS = [  # (key, header, note for the legend)
    ("acc", "ACC", "mean accuracy over all tasks after the last task"),
    ("bwt", "BWT", "mean (R[T][j] − R[j][j]), j < T: negative = forgetting"),
    ("fwt", "FWT", "mean (R[j−1][j] − base_j), j > 1: help from earlier tasks before seeing task j"),
    ("forgetting", "F (max)", "mean (max_{j≤l<T} R[l][j] − R[T][j]), j < T: the best accuracy on task j after it "
                              "was learnt minus the last — Chaudhry et al. 2018"),
    ("forgetting_first", "F (first)", "mean (R[j][j] − R[T][j]) — Avalanche's definition"),
    ("intransigence", "I", "mean (R*[k] − R[k][k]), R* from the run's mtl strategy"),
]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_interval(interval: dict[str, Any] | None, value: Any = None) -> str:
    """'0.523±0.012 [0.50,0.55]': mean ± std over cells and the 95% bootstrap interval."""
    if not interval:
        return fmt(value)
    spread = f"±{interval['std']:.3f}" if interval.get("seeds", 1) > 1 else ""
    return f"{interval['mean']:.3f}{spread} [{interval['low']:.2f},{interval['high']:.2f}]"


PHASE_HEADER = ["strategy", "cells", "train s per task (mean over cells)", "train s", "eval s", "total s"]


def phase_rows(run) -> list[list[str]]:
    """Where each strategy's time went: training per task position, training and scoring in all."""
    rows = []
    for label, entry in (run.results.get("strategies") or {}).items():
        cells = [c for c in (entry.get("cells") or {}).values() if c.get("matrix") is not None]
        if not cells:
            continue
        per_task = [sum(c["step_seconds"][i] for c in cells) / len(cells) for i in range(len(cells[0]["step_seconds"]))]
        train = sum(c.get("train_seconds") or 0.0 for c in cells)
        scoring = sum(c.get("eval_seconds") or 0.0 for c in cells)
        rows.append([label, str(len(cells)), " / ".join(f"{s:.0f}" for s in per_task), f"{train:.0f}",
                     f"{scoring:.0f}", f"{train + scoring:.0f}"])
    return rows


def scored(entry: dict[str, Any], scorer: str, primary: str) -> dict[str, Any]:
    """A strategy's summary as one scorer saw it (the primary's is the entry itself)."""
    return entry if scorer == primary else (entry.get("also") or {}).get(scorer, {})


def not_learnt(entry: dict[str, Any]) -> list[str]:
    """The tasks a strategy (as one scorer saw it) did not learn beyond test-example noise."""
    return [task for task, c in (entry.get("competence") or {}).items() if not c["learnt"]]


NOT_LEARNT_MARK = "†"  # on BWT and F: some task was not learnt, so its forgetting measures nothing


def comparison_rows(runs) -> list[list[str]]:
    """One row per (run, strategy, scorer): the numbers `bench compare` and the report's table show.
    ACC, BWT and forgetting carry their intervals when the run stored per-example correctness; BWT and
    F are marked † when a task was not learnt (see competence_notes)."""
    rows = []
    for run in runs:
        scorers = scorers_of(run.results)
        for label, entry in (run.results.get("strategies") or {}).items():
            for scorer in scorers:
                view = scored(entry, scorer, scorers[0])
                metrics, intervals = view.get("metrics") or {}, view.get("intervals") or {}
                if scorer != scorers[0] and not metrics:
                    continue
                mark = NOT_LEARNT_MARK if not_learnt(view) else ""
                cells = f"{entry.get('cells_done', 1 if metrics else 0)}/{entry.get('cells_total', 1)}"
                values = [fmt_interval(intervals.get(k), metrics.get(k)) + (mark if k in ("bwt", "forgetting") else "")
                          for k, _, _ in METRIC_COLUMNS]
                rows.append([run.name, label, scorer, cells, *values, fmt(entry.get("train_seconds"), 1)])
    return rows


COMPARISON_HEADER = ["run", "strategy", "scorer", "cells", *(h for _, h, _ in METRIC_COLUMNS), "train s"]
DIFFERENCE_HEADER = ["comparison", "scorer", "cells", "ACC diff [95% CI]", "BWT diff [95% CI]", "F diff [95% CI]",
                     "verdict"]
FORMAT_HEADER = ["strategy", "cells", "format forgetting = generate-BWT − loglik-BWT [95% CI]", "verdict"]


def competence_notes(run) -> list[str]:
    """One line per (strategy, scorer) with tasks that were not learnt: their diagonal does not exceed
    the base model's accuracy beyond test-example noise, so their forgetting numbers mean nothing."""
    lines = []
    scorers = scorers_of(run.results)
    for label, entry in (run.results.get("strategies") or {}).items():
        for scorer in scorers:
            view = scored(entry, scorer, scorers[0])
            missing = not_learnt(view)
            if missing:
                shown = ", ".join(f"{t} ({view['competence'][t]['mean']:+.3f} [{view['competence'][t]['low']:+.2f},"
                                  f"{view['competence'][t]['high']:+.2f}] over the base model)" for t in missing)
                lines.append(f"{label} ({scorer}): not learnt: {shown}; its forgetting numbers mean nothing")
    return lines


def format_rows(run) -> list[list[str]]:
    """Per strategy, the forgetting generation shows and label ranking does not, paired over seeds
    and test examples (runs scored both ways)."""
    rows = []
    for label, entry in (run.results.get("strategies") or {}).items():
        found = entry.get("format_forgetting")
        if found:
            verdict = (f"significant: generation forgets {'more' if found['diff'] < 0 else 'less'} than ranking shows "
                       f"(p={found['p_value']:.3f})") if found["significant"] else "no difference"
            rows.append([label, str(found["cells"]), f"{found['diff']:+.3f} [{found['low']:+.2f},{found['high']:+.2f}]",
                         verdict])
    return rows


def difference_rows(run) -> list[list[str]]:
    """Every strategy minus the run's baseline, paired over the same seeds, orders and test examples,
    for each scorer. A difference whose interval holds 0 is reported as no difference; with one
    paired cell the verdict says that only the test examples were resampled (two runs of one strategy
    differ by more)."""
    results = run.results or {}
    baseline = results.get("baseline")
    scorers = scorers_of(results)
    by_scorer = {scorers[0]: results.get("differences") or {}, **(results.get("differences_also") or {})}
    rows = []
    for scorer, differences in by_scorer.items():
        for label, by_metric in differences.items():
            rows.append(_difference_row(f"{label} − {baseline}", scorer, by_metric))
    return rows


def _difference_row(comparison: str, scorer: str, by_metric: dict[str, Any]) -> list[str]:
    cells = [comparison, scorer, str(by_metric["acc"]["cells"])]
    verdicts = []
    for metric, header in (("acc", "ACC"), ("bwt", "BWT"), ("forgetting", "F")):
        d = by_metric[metric]
        mark = "*" if d["significant"] else ""
        cells.append(f"{d['diff']:+.3f}{mark} [{d['low']:+.2f},{d['high']:+.2f}]")
        if d["significant"]:
            verdicts.append(f"{header} {'higher' if d['diff'] > 0 else 'lower'} (p={d['p_value']:.3f})")
    verdict = "significant: " + ", ".join(verdicts) if verdicts else "no difference"
    if by_metric["acc"]["cells"] < 2:  # nothing resampled but the test examples: say so
        verdict += " (one seed: test-example noise only, training noise not measured)"
    cells.append(verdict)
    return cells


def write_report(run, out: str | Path, *, force: bool = False) -> list[Path]:
    """Write report.md, results.json, heatmap_<strategy>.png and accuracy_over_sequence.png into `out`.

    `out` must be new or empty unless `force` (its old content is then replaced as a whole); the report
    is built beside it and renamed in, so a failed or killed run never leaves half a report there."""
    names: list[str] = []
    output_folder(out, lambda staging: names.extend(p.name for p in _write_into(run, staging)), force=force,
                  option="report folder")
    return [Path(out) / name for name in names]


def _write_into(run, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = run.results or {}
    every: dict[str, Any] = results.get("strategies") or {}
    # a running or interrupted run reports the strategies evaluated so far and names the others
    strategies = {label: e for label, e in every.items() if "matrix" in e}
    if not strategies:
        raise ValueError(f"run {run.name!r} has no accuracy matrices yet (status {run.status}); run or resume it first")
    tasks: list[str] = results["tasks"]
    written = [out / "results.json"]
    (out / "results.json").write_text(json.dumps({"run": run.name, "status": run.status, "config": run.config,
                                                  "results": results}, indent=2, default=str) + "\n")
    scorers = scorers_of(results)
    for label, entry in strategies.items():
        for scorer in scorers:
            view = scored(entry, scorer, scorers[0])
            if "matrix" not in view:
                continue
            path = out / heatmap_name(label, scorer, scorers[0])
            _heatmap(plt, view["matrix"], entry.get("matrix_tasks") or tasks, f"{label}: accuracy after each task ({scorer})",
                     path)
            written.append(path)
    for scorer in scorers:
        views = {label: {**entry, "matrix": scored(entry, scorer, scorers[0])["matrix"]}
                 for label, entry in strategies.items() if "matrix" in scored(entry, scorer, scorers[0])}
        base = results.get("base") if scorer == scorers[0] else [
            ((results.get("base_also") or {}).get(scorer) or {}).get(t, {}).get("accuracy") for t in tasks]
        path = out / curves_name(scorer, scorers[0])
        _curves(plt, views, tasks, base, path, scorer)
        written.append(path)
    if any(_dev_curves(entry) for entry in strategies.values()):
        path = out / "dev_curves.png"
        _dev_plot(plt, strategies, path)
        written.append(path)
    if any(e.get("intervals") for e in strategies.values()):
        path = out / "metrics_intervals.png"
        _intervals(plt, strategies, path)
        written.append(path)
    pending = [label for label in every if label not in strategies]
    (out / "report.md").write_text(_markdown(run, results, strategies, tasks, pending))
    written.append(out / "report.md")
    return written


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def heatmap_name(label: str, scorer: str, primary: str) -> str:
    return f"heatmap_{_slug(label)}.png" if scorer == primary else f"heatmap_{_slug(label)}_{scorer}.png"


def curves_name(scorer: str, primary: str) -> str:
    return "accuracy_over_sequence.png" if scorer == primary else f"accuracy_over_sequence_{scorer}.png"


def _dev_curves(entry: dict[str, Any]) -> dict[str, list]:
    """task -> the dev curve ([[step, accuracy], ...]) of the first cell that trained to a plateau."""
    for cell in (entry.get("cells") or {}).values():
        found = {task: (loss or {}).get("stop", {}).get("dev") for task, loss in zip(cell.get("tasks", []),
                                                                                      cell.get("losses") or [])}
        if any(found.values()):
            return {task: curve for task, curve in found.items() if curve}
    return {}


def _dev_plot(plt, strategies, path) -> None:
    """Each strategy's dev accuracy over its training steps, one line per task (plateau training)."""
    shown = [(label, _dev_curves(entry)) for label, entry in strategies.items() if _dev_curves(entry)]
    cols = min(len(shown), 4)
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharey=True)
    for k, (label, curves) in enumerate(shown):
        ax = axes[k // cols][k % cols]
        for task, curve in curves.items():
            ax.plot([s for s, _ in curve], [a for _, a in curve], marker=".", label=task)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.02, 1.02)
    for k in range(len(shown), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].set_ylabel("dev accuracy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Dev accuracy while training each task (first cell; training stops at the plateau)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _heatmap(plt, R, tasks, title, path) -> None:
    import numpy as np

    m = np.array([[math.nan if v is None else v for v in row] for row in R], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2.5, 1.0 * len(tasks) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(m), vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(tasks)), [f"after {t}" for t in tasks])
    ax.set_xlabel("evaluated on")
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            if not math.isnan(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="white" if m[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves(plt, strategies, tasks, base, path, scorer: str = "") -> None:
    cols = min(len(tasks), 4)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, sharey=True)
    steps = list(range(1, len(tasks) + 1))
    base_of = dict(zip(tasks, base)) if base is not None else None
    order = next(iter(strategies.values())).get("matrix_tasks") or tasks  # every strategy's first order
    for j, task in enumerate(order):
        ax = axes[j // cols][j % cols]
        for label, entry in strategies.items():
            column = (entry.get("matrix_tasks") or tasks).index(task)  # its place in this strategy's order
            ax.plot(steps, [math.nan if row[column] is None else row[column] for row in entry["matrix"]],
                    marker="o", label=label)
        if base_of is not None:
            if base_of.get(task) is not None:
                ax.axhline(base_of[task], color="gray", linestyle=":", label="base model")
        ax.axvline(j + 1, color="lightgray", linewidth=6, zorder=0)
        ax.set_title(task, fontsize=10)
        ax.set_xticks(steps, [f"{i}" for i in steps])
        ax.set_xlabel("after task #")
        ax.set_ylim(-0.02, 1.02)
    for k in range(len(tasks), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].set_ylabel("accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"Accuracy on each task over the sequence ({scorer}; shaded: when the task is learnt)", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _intervals(plt, strategies, path) -> None:
    """ACC, BWT and forgetting per strategy: the mean over cells and its 95% bootstrap interval."""
    shown = [(label, e["intervals"]) for label, e in strategies.items() if e.get("intervals")]
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 0.45 * len(shown) + 1.8), squeeze=False)
    for ax, (key, header) in zip(axes[0], (("acc", "ACC"), ("bwt", "BWT"), ("forgetting", "F (max)"))):
        means = [iv[key]["mean"] for _, iv in shown]
        lows = [iv[key]["mean"] - iv[key]["low"] for _, iv in shown]
        highs = [iv[key]["high"] - iv[key]["mean"] for _, iv in shown]
        ys = range(len(shown))
        ax.errorbar(means, ys, xerr=[[max(v, 0) for v in lows], [max(v, 0) for v in highs]], fmt="o", capsize=4)
        ax.set_yticks(list(ys), [label for label, _ in shown] if key == "acc" else [""] * len(shown))
        ax.invert_yaxis()
        if key != "acc":
            ax.axvline(0, color="lightgray", zorder=0)
        ax.set_title(f"{header} (95% bootstrap CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(run, results, strategies, tasks, pending: list[str] = ()) -> str:
    cfg = run.config or {}
    lines = [f"# Benchmark run `{run.name}`", ""]
    lines += [f"- status: **{run.status}**, created {run.created_at:%Y-%m-%d %H:%M} UTC",
              f"- base model: `{cfg.get('base_model')}`; tasks in order: {' → '.join(tasks)}",
              f"- per task: max_train={cfg.get('max_train')}, max_test={cfg.get('max_test')}; "
              f"LoRA r={cfg.get('lora', {}).get('r')}, alpha={cfg.get('lora', {}).get('alpha')}; "
              f"train {_budget(cfg.get('train', {}))}",
              f"- scorers: **{', '.join(scorers_of(results))}** (the first is the primary; loglik = rank the labels by "
              f"length-normalised log-likelihood; generate = greedy decoding, exact match: what a user of the adapter "
              f"gets); evaluation took {fmt(results.get('eval_seconds'), 1)} s",
              *([f"- not evaluated yet: {', '.join(pending)} (the run is {run.status}; this report shows the "
                 f"strategies with at least one evaluated cell)"] if pending else []),
              ""]
    lines += ["## Strategies compared", "", "| " + " | ".join(COMPARISON_HEADER[1:]) + " |",
              "|" + "---|" * (len(COMPARISON_HEADER) - 1)]
    lines += ["| " + " | ".join(row[1:]) + " |" for row in comparison_rows([run])]
    merged = results.get("merged")
    if merged:
        blanks = ["—"] * (len(COMPARISON_HEADER) - 5)  # the metrics after ACC, and train time
        lines.append("| " + " | ".join([merged["label"], results.get("scorer") or "", "1", fmt(merged["acc"]),
                                        *blanks]) + " |")
    lines += ["", *(f"- **{h}**: {note}" for _, h, note in METRIC_COLUMNS),
              "- ACC, BWT and F (max) read `mean ±std over cells [95% bootstrap interval]`; the interval resamples "
              "seeds and test examples (adapter_hub.stats). Cells = (seed, task order) pairs evaluated / planned.",
              f"- {NOT_LEARNT_MARK} on BWT and F: a task of that row was not learnt (below); its forgetting means nothing.",
              ""]
    notes = competence_notes(run)
    if notes:
        lines += ["## Tasks not learnt", "", "A task is learnt when its accuracy right after it was trained exceeds "
                  "the base model's by more than test-example noise (the 95% interval of the paired margin excludes "
                  "0). These did not:", "", *(f"- {line}" for line in notes), ""]
    formats = format_rows(run)
    if formats:
        lines += ["## Format forgetting", "", "generate-BWT − loglik-BWT per strategy, paired over the same seeds and "
                  "test examples: forgetting a user of the adapter sees (the answer format collapsing to the latest "
                  "task's labels) that ranking the label strings does not.", "",
                  "| " + " | ".join(FORMAT_HEADER) + " |", "|" + "---|" * len(FORMAT_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in formats] + [""]
    differences = difference_rows(run)
    if differences:
        lines += [f"## Differences against `{results.get('baseline')}`", "",
                  "Paired bootstrap over the same seeds, orders and test examples; `*` marks an interval that "
                  "excludes 0. Anything else is no difference at this number of seeds and test examples.", "",
                  "| " + " | ".join(DIFFERENCE_HEADER) + " |", "|" + "---|" * len(DIFFERENCE_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in differences]
        lines += ["", "![metrics with intervals](metrics_intervals.png)", ""]
    if merged:
        lines += [f"The merged row is one adapter (`{merged['version']}`) scored after the whole sequence: "
                  + ", ".join(f"{t} {fmt(a)}" for t, a in zip(tasks, merged["accuracy"]))
                  + f" (rank-reduction relative error {fmt(merged.get('max_relative_error'))}).", ""]
    base = results.get("base")
    if base:
        lines += ["Base model (no adapter) accuracy per task: " +
                  ", ".join(f"{t} {fmt(b)}" for t, b in zip(tasks, base)), ""]
    primary = scorers_of(results)[0]
    lines += [f"![accuracy over the sequence ({s})]({curves_name(s, primary)})" for s in scorers_of(results)] + [""]
    if any(_dev_curves(entry) for entry in strategies.values()):
        lines += ["![dev accuracy while training](dev_curves.png)", ""]
    for label, entry in strategies.items():
        order = entry.get("matrix_tasks") or tasks
        cells = entry.get("cells") or {}
        lines += [f"## {label}", "", f"Strategy `{entry['strategy']}`"
                  + (f" with {json.dumps(entry['params'])}" if entry.get("params") else "")
                  + f"; trained in {fmt(entry.get('train_seconds'), 1)} s in all.", ""]
        if len(cells) > 1:
            lines += [f"The matrix is the mean over the {sum(c['order'] == cells[next(iter(cells))]['order'] for c in cells.values())} "
                      f"cell(s) of the order {' → '.join(order)}; versions are the first cell's.", ""]
        lines += ["| after \\ on | " + " | ".join(order) + " | version |", "|---|" + "---|" * (len(order) + 1)]
        for i, row in enumerate(entry["matrix"]):
            version = (entry.get("states") or [None] * len(order))[i]
            lines.append(f"| {order[i]} | " + " | ".join(fmt(v) for v in row) + f" | `{version}` |")
        routers = [c["router"] for c in cells.values() if c.get("router")]
        if routers:
            lines += ["", f"Task-free routing ({routers[0]['name']}): router accuracy after the last task "
                      + ", ".join(fmt(r["accuracy"][-1]) for r in routers)
                      + "; ACC with the router / ACC with the task id given: "
                      + ", ".join(fmt(r["acc_over_oracle"]) for r in routers) + " (one value per cell)."]
        lines += [""] + [f"![R for {label} ({s})]({heatmap_name(label, s, primary)})" for s in scorers_of(results)
                         if "matrix" in scored(entry, s, primary)] + [""]
    return "\n".join(lines) + "\n"


def _budget(train: dict[str, Any]) -> str:
    amount = f"{train.get('steps')} steps" if train.get("steps") else f"{train.get('epochs')} epochs"
    return f"{amount}, batch {train.get('batch_size')}, lr {train.get('lr')}"
