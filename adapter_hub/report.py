"""Reports for benchmark runs: a Markdown page, a PNG heatmap of R per strategy, a plot of each task's
accuracy over the sequence, and the raw results as JSON. Needs matplotlib only (no torch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRIC_COLUMNS = [  # (key, header, note for the legend)
    ("acc", "ACC", "mean accuracy over all tasks after the last task"),
    ("bwt", "BWT", "mean (R[T][j] − R[j][j]), j < T: negative = forgetting"),
    ("fwt", "FWT", "mean (R[j−1][j] − base_j), j > 1: help from earlier tasks before seeing task j"),
    ("forgetting", "F (max)", "mean (max_{l<T} R[l][j] − R[T][j]) — Chaudhry et al. 2018"),
    ("forgetting_first", "F (first)", "mean (R[j][j] − R[T][j]) — Avalanche's definition"),
    ("intransigence", "I", "mean (R*[k] − R[k][k]), R* from the run's mtl strategy"),
]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def comparison_rows(runs) -> list[list[str]]:
    """One row per (run, strategy): the numbers `bench compare` and the report's table show."""
    rows = []
    for run in runs:
        for label, entry in (run.results.get("strategies") or {}).items():
            metrics = entry.get("metrics") or {}
            rows.append([run.name, label, *(fmt(metrics.get(k)) for k, _, _ in METRIC_COLUMNS),
                         fmt(entry.get("train_seconds"), 1)])
    return rows


COMPARISON_HEADER = ["run", "strategy", *(h for _, h, _ in METRIC_COLUMNS), "train s"]


def write_report(run, out: str | Path, *, force: bool = False) -> list[Path]:
    """Write report.md, results.json, heatmap_<strategy>.png and accuracy_over_sequence.png into `out`.

    `out` must be new or empty unless `force` (its old content is then replaced as a whole); the report
    is built beside it and renamed in, so a failed or killed run never leaves half a report there."""
    from registry.store import output_folder

    names: list[str] = []
    output_folder(out, lambda staging: names.extend(p.name for p in _write_into(run, staging)), force=force,
                  option="report folder")
    return [Path(out) / name for name in names]


def _write_into(run, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = run.results or {}
    strategies: dict[str, Any] = results.get("strategies") or {}
    if not strategies or not all("matrix" in e for e in strategies.values()):
        raise ValueError(f"run {run.name!r} has no accuracy matrices yet (status {run.status}); run or resume it first")
    tasks: list[str] = results["tasks"]
    written = [out / "results.json"]
    (out / "results.json").write_text(json.dumps({"run": run.name, "status": run.status, "config": run.config,
                                                  "results": results}, indent=2, default=str) + "\n")
    for label, entry in strategies.items():
        path = out / f"heatmap_{_slug(label)}.png"
        _heatmap(plt, entry["matrix"], tasks, f"{label}: accuracy after each task ({results.get('scorer')})", path)
        written.append(path)
    path = out / "accuracy_over_sequence.png"
    _curves(plt, strategies, tasks, results.get("base"), path)
    written.append(path)
    (out / "report.md").write_text(_markdown(run, results, strategies, tasks))
    written.append(out / "report.md")
    return written


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


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


def _curves(plt, strategies, tasks, base, path) -> None:
    cols = min(len(tasks), 4)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, sharey=True)
    steps = list(range(1, len(tasks) + 1))
    for j, task in enumerate(tasks):
        ax = axes[j // cols][j % cols]
        for label, entry in strategies.items():
            ax.plot(steps, [row[j] for row in entry["matrix"]], marker="o", label=label)
        if base is not None:
            ax.axhline(base[j], color="gray", linestyle=":", label="base model")
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
    fig.suptitle("Accuracy on each task over the sequence (shaded: when the task is learnt)", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(run, results, strategies, tasks) -> str:
    cfg = run.config or {}
    lines = [f"# Benchmark run `{run.name}`", ""]
    lines += [f"- status: **{run.status}**, created {run.created_at:%Y-%m-%d %H:%M} UTC",
              f"- base model: `{cfg.get('base_model')}`; tasks in order: {' → '.join(tasks)}",
              f"- per task: max_train={cfg.get('max_train')}, max_test={cfg.get('max_test')}; "
              f"LoRA r={cfg.get('lora', {}).get('r')}, alpha={cfg.get('lora', {}).get('alpha')}; "
              f"train {_budget(cfg.get('train', {}))}",
              f"- scorer: **{results.get('scorer')}** (loglik = rank the labels by length-normalised log-likelihood; "
              f"generate = greedy decoding, exact match); evaluation took {fmt(results.get('eval_seconds'), 1)} s",
              ""]
    lines += ["## Strategies compared", "", "| " + " | ".join(COMPARISON_HEADER[1:]) + " |",
              "|" + "---|" * (len(COMPARISON_HEADER) - 1)]
    lines += ["| " + " | ".join(row[1:]) + " |" for row in comparison_rows([run])]
    merged = results.get("merged")
    if merged:
        blanks = ["—"] * (len(COMPARISON_HEADER) - 3)  # the metrics after ACC, and train time
        lines.append("| " + " | ".join([merged["label"], fmt(merged["acc"]), *blanks]) + " |")
    lines += ["", *(f"- **{h}**: {note}" for _, h, note in METRIC_COLUMNS), ""]
    if merged:
        lines += [f"The merged row is one adapter (`{merged['version']}`) scored after the whole sequence: "
                  + ", ".join(f"{t} {fmt(a)}" for t, a in zip(tasks, merged["accuracy"]))
                  + f" (rank-reduction relative error {fmt(merged.get('max_relative_error'))}).", ""]
    base = results.get("base")
    if base:
        lines += ["Base model (no adapter) accuracy per task: " +
                  ", ".join(f"{t} {fmt(b)}" for t, b in zip(tasks, base)), ""]
    lines += ["![accuracy over the sequence](accuracy_over_sequence.png)", ""]
    for label, entry in strategies.items():
        lines += [f"## {label}", "", f"Strategy `{entry['strategy']}`"
                  + (f" with {json.dumps(entry['params'])}" if entry.get("params") else "")
                  + f"; trained in {fmt(entry.get('train_seconds'), 1)} s.", "",
                  "| after \\ on | " + " | ".join(tasks) + " | version |", "|---|" + "---|" * (len(tasks) + 1)]
        for i, row in enumerate(entry["matrix"]):
            version = (entry.get("states") or [None] * len(tasks))[i]
            lines.append(f"| {tasks[i]} | " + " | ".join(fmt(v) for v in row) + f" | `{version}` |")
        lines += ["", f"![R for {label}](heatmap_{_slug(label)}.png)", ""]
    return "\n".join(lines) + "\n"


def _budget(train: dict[str, Any]) -> str:
    amount = f"{train.get('steps')} steps" if train.get("steps") else f"{train.get('epochs')} epochs"
    return f"{amount}, batch {train.get('batch_size')}, lr {train.get('lr')}"
