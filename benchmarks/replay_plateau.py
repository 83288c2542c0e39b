"""Which stored cells the current plateau rule would have ended differently: every plateau-trained
step of an exported run has its dev curve; replaying that curve through today's PlateauStop says
where it would stop and which check it would restore. A cell whose every step replays to the same
(stop, restored step) is what today's code would have produced (training is deterministic and the
dev checks are the same up to the stop); a step that differs marks its cell for `bench import --drop`.
A curve the old rule cut short cannot be replayed past its end ("needs more checks").

    python benchmarks/replay_plateau.py benchmarks/results/cl_regime/run_export.json
    python benchmarks/replay_plateau.py benchmarks/results/cl_regime_v3/run_export.json --set patience=4
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from adapter_hub.training.config import TrainConfig
from adapter_hub.training.plateau import PlateauStop


def replay(curve: list[list[float]], config: TrainConfig) -> tuple[str, int, int] | None:
    """(reason, steps run, restored step) under today's rule, or None when the curve ends first."""
    values = iter(acc for _, acc in curve)
    stop = PlateauStop(config, [], lambda: next(values))
    for step, _ in curve:
        if stop.record(int(step)):
            return "plateau", int(step), stop.best_step
    last = int(curve[-1][0])
    return ("max_steps", last, stop.best_step) if last >= config.max_steps else None


def changed_cells(document: dict[str, Any], changes: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """cell -> what differs, under today's rule with the run's settings (and `changes` to them)."""
    settings = {k: v for k, v in document["config"]["train"].items() if k in TrainConfig.__dataclass_fields__}
    train = TrainConfig(**{**settings, **(changes or {})})
    found: dict[str, list[str]] = {}
    for entry in document["results"]["strategies"].values():
        for key, cell in (entry.get("cells") or {}).items():
            for task, loss in zip(cell.get("tasks", []), cell.get("losses") or []):
                stored = (loss or {}).get("stop") if isinstance(loss, dict) else None
                if not stored:
                    continue
                now = replay(stored["dev"], train)
                then = (stored["reason"], stored["steps_run"], stored["best_step"])
                if now != then:
                    why = "needs more checks" if now is None else f"now {now}"
                    found.setdefault(key, []).append(f"{task}: stored {then}, {why}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="a run exported with `adapter-hub bench export`")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="replay under a changed [train] setting (e.g. patience=4); repeatable")
    args = parser.parse_args()
    changes = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    with open(args.export) as f:
        document = json.load(f)
    changed = changed_cells(document, changes)
    cells = sum(len(e.get("cells") or {}) for e in document["results"]["strategies"].values())
    print(f"{cells - len(changed)} of {cells} cells replay to the same stops under today's rule")
    for key, lines in changed.items():
        print(f"  {key}: " + "; ".join(lines))
    if changed:
        print("retrain them: bench import FILE " + " ".join(f"--drop {k}" for k in changed) + " (into a fresh registry)")


if __name__ == "__main__":
    main()
