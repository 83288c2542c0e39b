"""The tables benchmarks/RESULTS.md quotes for a continual-learning run, printed as Markdown from the
run's export (`bench export`): per strategy, ACC and BWT under each scorer with their 95% intervals,
format forgetting and the tasks not learnt; then the paired differences against the baseline; then
each strategy's share of the baseline -> mtl generate-ACC gap (issue 29's bar: >= 95%, BWT >= -0.02,
the difference from the baseline significant). Reads JSON only (no torch), so it runs beside a run.

    python benchmarks/regime_tables.py benchmarks/results/cl_regime/run_export.json \
        --data-root ../shared/data/cl_benchmark

With --data-root (the run's task folders) it also checks issue 28's bar for "learnt" on every cell's
diagonal under the primary scorer: at least the base model's accuracy + 0.25 and the test set's
majority-label rate + 0.15 (more than guessing the common label).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _ci(entry: dict[str, Any] | None, metric: str) -> str:
    if not entry:
        return "—"
    iv = (entry.get("intervals") or {}).get(metric)
    value = (entry.get("metrics") or {}).get(metric)
    if value is None:
        return "—"
    fmt = "{:+.3f}" if metric == "bwt" else "{:.3f}"  # a sign on differences from zero, not on accuracies
    if not iv or iv.get("low") is None:
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(iv['low'])}, {fmt.format(iv['high'])}]"


def _diff(d: dict[str, Any] | None) -> str:
    if not d or d.get("diff") is None:
        return "—"
    star = "*" if d.get("significant") else ""
    return f"{d['diff']:+.3f}{star} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _not_learnt(entry: dict[str, Any]) -> str:
    names = [t for t, c in (entry.get("competence") or {}).items() if not c.get("learnt", True)]
    also = [f"{t} ({scorer})" for scorer, view in (entry.get("also") or {}).items()
            for t, c in (view.get("competence") or {}).items() if not c.get("learnt", True)]
    return ", ".join(names + also) or "—"


def _by_seed(entry: dict[str, Any], metric: str) -> dict[int, float]:
    return {cell["seed"]: cell["metrics"][metric] for cell in (entry.get("cells") or {}).values()
            if (cell.get("metrics") or {}).get(metric) is not None}


def gap_lines(strategies: dict[str, Any], baseline: str, primary: str) -> list[str]:
    """Each strategy's share of the baseline -> mtl ACC gap, on the seeds all three have (a partial run
    has more cells of some strategies than of others; unmatched seeds would mix seed noise into it)."""
    seq_acc, mtl_acc = _by_seed(strategies.get(baseline) or {}, "acc"), _by_seed(strategies.get("mtl") or {}, "acc")
    if not seq_acc or not mtl_acc:
        return []
    lines = ["", f"Share of the {baseline} → mtl {primary}-ACC gap each strategy closes, on the seeds the three "
                 "share (issue 29's bar: ≥ 95%, BWT ≥ −0.02, the paired difference significant):", ""]
    for label, entry in strategies.items():
        acc, bwt = _by_seed(entry, "acc"), _by_seed(entry, "bwt")
        seeds = sorted(set(acc) & set(seq_acc) & set(mtl_acc))
        if label in (baseline, "mtl") or not seeds:
            continue
        mean = lambda d: sum(d[s] for s in seeds) / len(seeds)  # noqa: E731
        gap = mean(mtl_acc) - mean(seq_acc)
        share = (mean(acc) - mean(seq_acc)) / gap if gap else float("nan")
        lines.append(f"- {label}, seeds {seeds}: {100 * share:.0f}% ({mean(seq_acc):.3f} → {mean(mtl_acc):.3f}; "
                     f"{label} {mean(acc):.3f}, BWT {mean(bwt):+.3f})")
    return lines


def tables(document: dict[str, Any]) -> str:
    results = document["results"]
    strategies: dict[str, Any] = results["strategies"]
    primary, extra = results["scorers"][0], results["scorers"][1:]
    baseline = results.get("baseline", "seq")
    lines = ["Cells per strategy: " + ", ".join(f"{k} {v.get('cells_done', 0)}" for k, v in strategies.items()), ""]
    head = ["strategy", "seeds", f"{primary} ACC", f"{primary} BWT"]
    for scorer in extra:
        head += [f"{scorer} ACC", f"{scorer} BWT"]
    head += ["format forgetting", "not learnt"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, entry in strategies.items():
        if not entry.get("cells_done"):
            continue
        row = [label, str(entry.get("cells_done")), _ci(entry, "acc"), _ci(entry, "bwt")]
        for scorer in extra:
            view = (entry.get("also") or {}).get(scorer)
            row += [_ci(view, "acc"), _ci(view, "bwt")]
        row += [_diff(entry.get("format_forgetting")), _not_learnt(entry)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Paired differences against {baseline} (* = the 95% interval excludes 0):", ""]
    head = [f"strategy − {baseline}", f"{primary} ACC", f"{primary} BWT"] + [
        f"{s} {m}" for s in extra for m in ("ACC", "BWT")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, diffs in (results.get("differences") or {}).items():
        row = [label, _diff(diffs.get("acc")), _diff(diffs.get("bwt"))]
        for scorer in extra:
            other = ((results.get("differences_also") or {}).get(scorer) or {}).get(label) or {}
            row += [_diff(other.get("acc")), _diff(other.get("bwt"))]
        lines.append("| " + " | ".join(row) + " |")
    lines += gap_lines(strategies, baseline, primary)
    return "\n".join(lines)


def majority_rates(document: dict[str, Any], data_root: str) -> dict[str, float]:
    """task -> the share of its most common label among the test examples the run scored."""
    from collections import Counter
    from pathlib import Path

    from adapter_hub.data import load_tasks

    config = document["config"]
    tasks = load_tasks([str(Path(data_root) / name) for name in config["tasks"]], max_train=config["max_train"],
                       max_test=config["max_test"], seed=config["seed"])
    return {t.name: Counter(e.target for e in t.test).most_common(1)[0][1] / len(t.test) for t in tasks}


def below_bar(document: dict[str, Any], majority: dict[str, float]) -> list[str]:
    """One line per cell whose diagonal misses issue 28's bar on some task (none: every task learnt)."""
    results = document["results"]
    base = results.get("base_by_task", {})
    lines = []
    bar = {t: max(base[t] + 0.25, majority[t] + 0.15) for t in majority}
    for entry in results["strategies"].values():
        for key, cell in (entry.get("cells") or {}).items():
            missed = [f"{t} {cell['matrix'][i][i]:.3f} (bar {bar[t]:.3f})" for i, t in enumerate(cell["tasks"])
                      if cell["matrix"][i][i] < bar[t]]
            if missed:
                lines.append(f"- {key}: " + ", ".join(missed))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="a run exported with `adapter-hub bench export`")
    parser.add_argument("--data-root", help="the run's task folders: also check issue 28's bar for 'learnt'")
    args = parser.parse_args()
    with open(args.export) as f:
        document = json.load(f)
    print(tables(document))
    if args.data_root:
        majority = majority_rates(document, args.data_root)
        print("\nMajority-label rates of the test examples: " + ", ".join(f"{t} {r:.3f}" for t, r in majority.items()))
        missed = below_bar(document, majority)
        print("Cells with a task under issue 28's bar for 'learnt' (base + 0.25 and majority + 0.15):")
        print("\n".join(missed) if missed else "- none: every task of every cell is learnt")


if __name__ == "__main__":
    main()
