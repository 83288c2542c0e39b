"""A benchmark run's config: the tasks, the strategies, the model and the budget every strategy shares,
checked key by key (naming the key) before anything is built or written; and how a stored config is
compared with a new one when a run is resumed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from adapter_hub.continual import STRATEGIES
from adapter_hub.core.config import LoraConfig
from adapter_hub.core.typed import build, check_value
from adapter_hub.data import Task, load_tasks
from adapter_hub.evaluation.config import EvalConfig
from adapter_hub.models.names import DTYPE_SETTINGS, SMOLLM2
from adapter_hub.training.config import TrainConfig


@dataclass
class StrategyEntry:
    """One [[strategies]] entry of a bench config."""

    name: str  # a continual.STRATEGIES name
    label: str = ""  # unique within the run (default: the name); lets one strategy appear twice
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label = self.label or self.name


@dataclass
class BenchConfig:
    tasks: list[str]  # task specs in order: builtin:NAME, a folder, or a name under data_root
    strategies: list[StrategyEntry]
    name: str | None = None  # run name (default: from the config file name and the time)
    base_model: str = SMOLLM2  # the packaged real model (offline); tiny-llama for a quick look
    data_root: str | None = None  # where named tasks live (e.g. the CL_Benchmark folder); CLI --data-root
    max_train: int | None = None  # per task, seeded sample: keeps CPU runs to minutes
    max_test: int | None = None
    seed: int = 0  # samples max_train/max_test (the same test examples in every cell) and is the default seed
    # Training seeds: one run cell per (strategy, seed, order); two or more give intervals over seeds.
    seeds: list[int] = field(default_factory=list)  # empty: [seed]
    # Task orders, each a permutation of `tasks` (as written there); empty: the order of `tasks`.
    orders: list[list[str]] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "auto"  # the base model's: bf16 on a CUDA device that supports it, else fp32 (models.resolve_dtype)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # A step some cell already trained (same content key: seq's, replay's, mtl's, per_task's first
    # steps...) is reused, and a state already scored on a task is not scored again; both are
    # bit-identical to doing the work again (continual.step_cache), so off only to measure the saving.
    share_work: bool = True
    # Tasks not yet learnt that each state is scored on: None (= "all") scores every one, the full
    # matrix (a task's accuracy before it is learnt, in the plots); "next" only the next task, which is
    # all the metrics need (FWT reads the superdiagonal): (T−1)(T−2)/2 of T² scorings fewer (3 of 16
    # at T = 4, 91 of 225 at T = 15). None rather than "all" so that runs started before it resume.
    future_tasks: str | None = None

    def __post_init__(self) -> None:
        if self.future_tasks not in (None, "all", "next"):
            raise ValueError(f"future_tasks must be 'all' or 'next', got {self.future_tasks!r}")
        if self.dtype not in DTYPE_SETTINGS:
            raise ValueError(f"dtype must be {', '.join(DTYPE_SETTINGS)}, got {self.dtype!r}")
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1 (or left out for all examples), got {value}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for order in self.orders:
            if sorted(order) != sorted(self.tasks):
                raise ValueError(f"every entry of orders must list the same tasks as tasks = {self.tasks} in some "
                                 f"order, got {order}")
        if len({tuple(o) for o in self.orders}) != len(self.orders):
            raise ValueError("orders must be distinct")

    def eval_config(self) -> EvalConfig:
        """[eval] with max_length resolved: prompts are cut as training cut them unless it says otherwise."""
        return dataclasses.replace(self.eval, max_length=self.eval.max_length or self.train.max_length)

    def cell_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    def cell_orders(self) -> list[list[str]]:
        return [list(o) for o in self.orders] or [list(self.tasks)]

    def load_tasks(self) -> list[Task]:
        """The config's tasks, in `tasks` order: named ones from data_root, sampled with `seed`."""
        specs = []
        for spec in self.tasks:
            if spec.startswith(("builtin:", "hf:")) or Path(spec).expanduser().is_absolute() or self.data_root is None:
                specs.append(spec)
            else:
                specs.append(str(Path(self.data_root).expanduser() / spec))
        return load_tasks(specs, max_train=self.max_train, max_test=self.max_test, seed=self.seed)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "BenchConfig":
        """Check every key, type and range (naming the key) before anything is built or written."""
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown bench config key(s) {unknown}; known: {sorted(known)}")
        if not raw.get("tasks"):
            raise ValueError("a bench config needs tasks = [...] (at least one)")
        check_value(raw["tasks"], list[str], "bench config key tasks")
        if not raw.get("strategies"):
            raise ValueError("a bench config needs at least one [[strategies]] entry")
        check_value(raw["strategies"], list[Union[dict, str]], "bench config key strategies")
        strategies = []
        for entry in raw.pop("strategies"):
            entry = dict(entry) if isinstance(entry, dict) else {"name": entry}
            name, label = entry.pop("name", None), entry.pop("label", "")
            if not name:
                raise ValueError(f"a [[strategies]] entry needs a name: {entry}")
            check_value(label, str, f"[[strategies]] {name} label")
            if name not in STRATEGIES:
                raise ValueError(f"[[strategies]] unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
            STRATEGIES[name].check_params(entry, where=f"[[strategies]] {label or name}")
            strategies.append(StrategyEntry(name, label, entry))
        labels = [s.label for s in strategies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"strategy labels must be unique (add label = ...): {labels}")
        if "seed" in (raw.get("train") or {}):
            raise ValueError("[train] seed: a bench run trains every strategy with each of `seeds = [...]` (default "
                             "[seed]); set those instead")
        sections = {"lora": LoraConfig, "train": TrainConfig, "eval": EvalConfig}
        built = {key: build(kind, raw.pop(key, {}), f"[{key}]") for key, kind in sections.items()}
        return build(cls, {"strategies": strategies, **built, **raw}, "bench config")

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "BenchConfig":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every setting that differs (nested keys dotted; the run's name excluded).
    A setting the stored config does not have at all (added to adapter-hub after the run started)
    counts as unchanged when it is unset, empty or at its default now (the default is what the older
    version did): a newer version can resume an older run. Settings that never change the stored
    numbers (NOT_RESULTS) and retired ones (RETIRED) never count."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            return {k: v for key, value in d.items() if not (prefix == "" and key == "name")
                    for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: d}

    old, new = flat(json.loads(json.dumps(stored))), flat(json.loads(json.dumps(current)))
    defaults = flat({"lora": LoraConfig().to_dict(), "train": TrainConfig().to_dict(),
                     "eval": dataclasses.asdict(EvalConfig())})
    added_and_empty = {k for k, v in new.items() if k not in old and (v in (None, [], {}, "") or defaults.get(k) == v)}
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in added_and_empty and k not in NOT_RESULTS | RETIRED]


# Settings that change what a run shows or how fast it gets there, never the numbers it stores.
NOT_RESULTS = {"train.progress", "eval.progress", "share_work"}
# Settings older runs stored that adapter-hub no longer has; they never changed a result (train.device
# was never read), so a run that stored them resumes.
RETIRED = {"train.device"}
