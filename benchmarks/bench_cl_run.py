"""One bench config run end to end with each speed-up switched off in turn and all on, in one process,
interleaved, medians; the accuracy matrices of every variant are compared with the all-on run's.

Switches:
  share_work     the step cache (a training call already done in the registry is reloaded) and the
                 score cache (a state already scored on a task is read back); bit-identical by design
  answer_head    training runs the vocabulary head on the answer positions only; off = the full head
                 at every position, then the answer positions picked (the path before this speed-up)
  train_prefix   training runs the instruction a batch's rows share once, as a one-row cache
  sorted_rows    evaluation batches rows of similar length; off = rows in test order (more padding)
  shared_prefix  evaluation encodes the instruction every prompt starts with once per state and task (older
                 than the other four: "all_off_but_prefix" is the run without this wave's speed-ups)
The last four are equal up to float rounding: a near-tie could flip, and the script reports it if so.
The packed label candidates (bench_eval_paths.py) stay on in every variant.

Default: the tiny model on the built-in tasks, five strategies that share their first step.
`--model smollm2-135m --data-root DIR --tasks dbpedia amazon` runs two real tasks at a small budget.

Run:  python benchmarks/bench_cl_run.py [--repeats 2] [--steps 60] [--variants all_off ...] [--device cuda]
      [--json out.json]

A bench config's cost instead (`--config`): one seed of it, run once with everything on, its time split
into training (the optimizer steps), dev checks (plateau training's held-out scoring) and scoring (every
state on every task, both scorers, and the base model):
      python benchmarks/bench_cl_run.py --config examples/cl_regime.toml --data-root ../shared/data/cl_benchmark
The same split of a run already made, per seed and per strategy, from its export (no model loaded):
      python benchmarks/bench_cl_run.py --export benchmarks/results/cl_regime/run_export.json [--fresh]
--fresh charges each step the step cache brought from another run the time it took there (FreshCost):
the cost of the run from an empty registry.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import emit  # noqa: E402

SWITCHES = ("share_work", "answer_head", "train_prefix", "sorted_rows", "shared_prefix")
VARIANTS = {  # name -> the switches that are off
    "all_on": (),
    **{f"no_{switch}": (switch,) for switch in SWITCHES},
    "all_off_but_prefix": SWITCHES[:-1],
    "all_off": SWITCHES,
}


def config(args, off: tuple[str, ...]):
    from adapter_hub.bench.config import BenchConfig

    raw = {"name": "speed", "base_model": args.model, "tasks": args.tasks, "max_train": args.max_train,
           "max_test": args.max_test, "seed": 0, "device": args.device, "share_work": "share_work" not in off, "data_root": args.data_root,
           "lora": {"r": 8, "alpha": 32},
           "train": {"steps": args.steps, "batch_size": 8, "lr": 3e-3 if args.model.startswith("tiny") else 1e-3,
                     "max_length": args.max_length, "progress": False},
           "eval": {"batch_size": 16, "max_length": args.max_length, "shared_prefix": "shared_prefix" not in off},
           "strategies": [{"name": s} for s in args.strategies]}
    return BenchConfig.from_dict(raw)


@contextlib.contextmanager
def code_paths_off(off: tuple[str, ...]):
    """The speed-ups that are code paths, not settings, swapped for their slower equivalents."""
    import adapter_hub.evaluation.scoring as scoring
    import adapter_hub.training.loss as loss

    saved = loss.decoder_and_head, loss.shared_prefix_length, scoring.scoring_order
    if "answer_head" in off:  # no separable head: loss.answer_logits takes the full-logits path
        loss.decoder_and_head = lambda model: (None, None)
    if "train_prefix" in off:
        loss.shared_prefix_length = lambda model, batch: 0
    if "sorted_rows" in off:
        scoring.scoring_order = lambda prompts: list(range(len(prompts)))
    try:
        yield
    finally:
        loss.decoder_and_head, loss.shared_prefix_length, scoring.scoring_order = saved


def _dev_seconds(loss: dict | None) -> float:
    """Dev-check seconds a training call spent; 0 for a step reloaded from the step cache (its summary
    repeats the original's, whose time belongs to the cell that trained it)."""
    if not loss or loss.get("reused_from"):
        return 0.0
    return float((loss.get("stop") or {}).get("dev_seconds") or 0.0)


def cell_split(cell: dict, fresh: FreshCost | None = None) -> dict[str, float]:
    """One cell's seconds: training (optimizer steps), dev checks (plateau training's held-out
    scoring, counted inside the cell's training time) and scoring its states."""
    train = cell.get("train_seconds") or 0.0
    dev = sum(_dev_seconds(loss) for loss in cell.get("losses") or [])
    if fresh is not None:
        extra_train, extra_dev = fresh.charge(cell.get("losses") or [])
        train, dev = train + extra_train, dev + extra_dev
    return {"training_s": train - dev, "dev_checks_s": dev, "scoring_s": cell.get("eval_seconds") or 0.0}


class FreshCost:
    """What a run would have cost from an empty registry: a step the step cache brought from another
    run (an earlier run in the same registry, e.g. the one a changed config replaces) is charged the
    time it took there, once — the first cell that needs it would train it, later ones reuse it, as
    within any run. Steps reused from this run's own states stay free, as they would be."""

    def __init__(self, own_refs: set[str]) -> None:
        self.own_refs, self.charged = own_refs, set()

    def charge(self, losses: list[dict | None]) -> tuple[float, float]:
        train = dev = 0.0
        for loss in losses:
            ref = (loss or {}).get("reused_from")
            if ref and ref not in self.own_refs and ref not in self.charged:
                self.charged.add(ref)
                train += float(loss.get("seconds") or 0.0)  # the original's training time, dev checks included
                dev += float((loss.get("stop") or {}).get("dev_seconds") or 0.0)
        return train, dev


def time_split(results: dict) -> dict[str, float]:
    """Seconds of a run spent training (optimizer steps), in dev checks, and scoring (every cell's and
    the base model's)."""
    cells = [cell for entry in results["strategies"].values() for cell in (entry.get("cells") or {}).values()]
    split = {k: sum(cell_split(c)[k] for c in cells) for k in ("training_s", "dev_checks_s")}
    scoring = results.get("eval_seconds") or 0.0
    return {k: round(v, 1) for k, v in {**split, "scoring_s": scoring,
                                        "total_s": sum(split.values()) + scoring}.items()}


def machine_label(machine: dict) -> str:
    """One line for where a cell ran (bench.provenance.machine), so its seconds are read against it."""
    if "gpu" in machine:
        return f"{machine['device']} {machine['gpu']}"
    cpu = f"{machine['cpu']} ({machine['cpu_id']})" if machine.get("cpu_id") else machine["cpu"]  # older cells lack it
    return f"{cpu}, {machine['cores']} cores, {machine['torch_threads']} threads, bf16: {machine['bf16']}"


def split_by_seed(results: dict, fresh: FreshCost | None = None, order: list[str] | None = None) -> dict[str, object]:
    """An existing run's time, per seed and per (seed, strategy), split as `cell_split` does; the base
    model's scoring (once per run) is reported on its own. Cells still running are not counted.
    `order`: the strategies' labels in the order the run trains them (its config's), so that a step
    FreshCost charges once lands on the cell a fresh run would have trained it in (an export's
    strategies are keyed alphabetically); default: the order of results["strategies"]."""
    out: dict[str, object] = {"base_model_scoring_s": results.get("base_seconds")}
    by_seed: dict[int, list[dict[str, float]]] = {}
    strategies = results["strategies"]
    labels = [label for label in order or [] if label in strategies] + [label for label in strategies
                                                                          if label not in (order or [])]
    cells = [(label, cell) for label in labels for cell in (strategies[label].get("cells") or {}).values()]
    # bench.cells.plan's order: order-major, then seed, then the config's strategies (a stable sort)
    for label, cell in sorted(cells, key=lambda pair: (pair[1].get("order", 0), pair[1]["seed"])):
        if cell.get("eval_seconds") is None:
            continue
        part = cell_split(cell, fresh)
        out.update({f"seed{cell['seed']}_{label}_{k}": round(v, 1) for k, v in part.items()})
        if cell.get("machine"):  # cells from before the record have none: their session is in RESULTS.md
            out[f"seed{cell['seed']}_{label}_machine"] = machine_label(cell["machine"])
        by_seed.setdefault(cell["seed"], []).append(part)
    for seed, parts in sorted(by_seed.items()):
        out[f"seed{seed}_cells"] = len(parts)
        out.update({f"seed{seed}_{k}": round(sum(p[k] for p in parts), 1) for k in parts[0]})
        out[f"seed{seed}_total_s"] = round(sum(sum(p.values()) for p in parts), 1)
    return out


def trained_here(exported: dict) -> set[str]:
    """The versions this run trained itself: a step row whose cell's loss summary says it was reloaded
    (`reused_from`) points at a state some other run trained, even though the row names it."""
    cells = {key: cell for entry in exported["results"]["strategies"].values()
             for key, cell in (entry.get("cells") or {}).items()}  # a row names its cell by key ("seq/s0/o2")
    own = set()
    for row in exported.get("steps") or []:
        losses = (cells.get(row["strategy"]) or {}).get("losses") or []
        loss = losses[row["step"] - 1] if 0 < row["step"] <= len(losses) else None
        if not (loss or {}).get("reused_from"):
            own.add(row["version"])
    return own


def from_export(args) -> None:
    """Where an exported run's time went (`adapter-hub bench export RUN FILE`), no model loaded."""
    import json

    exported = json.loads(Path(args.export).read_text())
    fresh = FreshCost(trained_here(exported)) if args.fresh else None
    order = [entry.get("label") or entry["name"] for entry in (exported.get("config") or {}).get("strategies", [])]
    results = {"run": exported.get("name"), "status": exported.get("status"), "fresh": bool(args.fresh),
               **split_by_seed(exported["results"], fresh, order)}
    emit(results, args.json, width=52)


def run_config(args) -> None:
    from adapter_hub.bench.config import BenchConfig
    from adapter_hub.bench.driver import run_bench
    from adapter_hub.core import progress
    from registry import Registry

    progress.set_mode("lines")
    config = BenchConfig.from_toml(args.config, data_root=args.data_root, device=args.device)
    first = config.cell_seeds()[0]
    config = BenchConfig.from_dict({**config.to_dict(), "name": "cost", "seeds": [first], "orders": config.orders[:1],
                                    "strategies": [{"name": s.name, "label": s.label, **s.params}
                                                   for s in config.strategies]})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = run_bench(config, Registry.open(Path(tmp) / "registry"), echo=lambda m: None)
        wall = time.perf_counter() - start
    results = {"config": args.config, "seed": first, "strategies": len(config.strategies), "wall_s": round(wall, 1),
               **time_split(run.results)}
    emit(results, args.json, width=34)


def matrices(run) -> dict:
    return {label: entry["matrix"] for label, entry in run.results["strategies"].items()}


def work_done(run) -> tuple[int, int]:
    """(training calls run, training calls reused from the step cache) over every cell: with share_work
    the all-on run can be at most trained / (trained + reused) of the all-off run's training time."""
    cells = [cell for entry in run.results["strategies"].values() for cell in entry["cells"].values()]
    reused = sum(cell["shared_steps"] for cell in cells)
    return sum(len(cell["states"]) for cell in cells) - reused, reused


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--tasks", nargs="+", default=["builtin:topic", "builtin:sentiment", "builtin:animal"])
    parser.add_argument("--data-root")
    parser.add_argument("--strategies", nargs="+", default=["seq", "replay", "mtl", "per_task", "olora"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-train", type=int, default=128)
    parser.add_argument("--max-test", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when there is one)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no-warmup", action="store_true", help="skip the discarded first run (costly on a real model)")
    parser.add_argument("--json")
    parser.add_argument("--config", help="time one seed of this bench config instead (see the module docstring)")
    parser.add_argument("--export", help="split an exported run's time per seed and strategy (nothing is run)")
    parser.add_argument("--fresh", action="store_true",
                        help="with --export: charge steps reused from another run the time they took there")
    args = parser.parse_args()
    if args.export:
        from_export(args)
        return
    if args.config:
        run_config(args)
        return
    variants = {name: VARIANTS[name] for name in VARIANTS if name in args.variants or name == "all_on"}

    from adapter_hub.bench.driver import run_bench
    from adapter_hub.core import progress
    from registry import Registry

    progress.set_mode("quiet")
    times: dict[str, list[float]] = {name: [] for name in variants}
    found: dict[str, dict] = {}
    work: dict[str, tuple[int, int]] = {}
    if not args.no_warmup:
        with tempfile.TemporaryDirectory() as tmp:  # warm-up, discarded: imports, first model load, allocator
            run_bench(config(args, ()), Registry.open(Path(tmp) / "registry"), echo=lambda m: None)
    for _ in range(args.repeats):
        for name, off in variants.items():
            with tempfile.TemporaryDirectory() as tmp, code_paths_off(off):
                reg = Registry.open(Path(tmp) / "registry")
                start = time.perf_counter()
                run = run_bench(config(args, off), reg, echo=lambda m: None)
                times[name].append(time.perf_counter() - start)
                found[name] = matrices(run)
                work[name] = work_done(run)
                reg.close()
    results: dict[str, object] = {"model": args.model, "device": args.device, "tasks": " ".join(args.tasks),
                                  "strategies": " ".join(args.strategies), "repeats": args.repeats}
    for name in variants:
        results[f"{name}_s"] = statistics.median(times[name])
    for name in variants:
        if name != "all_on":
            results[f"all_on_over_{name}"] = results["all_on_s"] / results[f"{name}_s"]
    trained, reused = work["all_on"]
    results["all_on_training_calls_run"], results["all_on_training_calls_reused"] = trained, reused
    # the best share_work alone can do: every training call equally long, nothing else in the run
    results["all_on_training_calls_fraction"] = trained / (trained + reused)
    for name in variants:
        if name != "all_on":
            same = found[name] == found["all_on"]
            results[f"matrices_{name}_identical"] = same
            if not same:
                worst = max(abs(a - b) for label in found[name] for ra, rb in zip(found[name][label],
                            found["all_on"][label]) for a, b in zip(ra, rb))
                results[f"matrices_{name}_max_difference"] = worst
    emit(results, args.json, width=34)


if __name__ == "__main__":
    main()
