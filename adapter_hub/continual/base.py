"""The interface every continual-learning strategy implements, and what they share.

A strategy owns the adapters it attaches to the (shared, frozen) base model. For each task in the
sequence, `learn` trains and returns a StepResult whose `state` is the whole model state after the
step as ONE LoraAdapter (for inc/O-LoRA: the exact sum of the frozen and new components), so every
state can be registered, reloaded, evaluated and merged like any adapter. `restore` rebuilds the
strategy from the states (and components) a previous, interrupted run registered.

Reproducibility: step i trains with seed `config.train.seed + i` for data order, dropout and the new
adapter's init, so a resumed run retraces the uninterrupted one exactly (CPU).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from adapter_hub.continual.frozen import frozen_as_one, fusable
from adapter_hub.continual.step_cache import RegistryStepCache, load_into, step_key
from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.core.config import LoraConfig
from adapter_hub.core.typed import check_like_default
from adapter_hub.data import Task
from adapter_hub.data.prompts import Encoded, encode_examples
from adapter_hub.evaluation import CURRENT, EvalConfig, score
from adapter_hub.lora import (
    attach,
    lora_layers,
    lora_parameters,
    set_active,
    set_trainable,
)
from adapter_hub.training import TrainConfig, TrainResult, train_on


@dataclass
class ContinualConfig:
    """What every strategy in a comparison shares: the adapter shape and the training budget. The
    sequence's seed is the training config's: step i trains with train.seed + i."""

    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def seed(self) -> int:
        return self.train.seed

    def train_for(self, step: int, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self.train, seed=self.seed + step, **changes)


@dataclass
class StepResult:
    task: str
    step: int  # 1-based position in the sequence
    state: LoraAdapter  # the model state after this step, as one adapter
    train: TrainResult | None
    components: list[LoraAdapter] = field(default_factory=list)  # what restore() needs besides states
    info: dict[str, Any] = field(default_factory=dict)  # strategy-specific measurements
    # The adapters the state was computed from (merge: every component so far); once they are
    # registered, the state's lineage names them instead of the previous state.
    state_inputs: list[LoraAdapter] = field(default_factory=list)
    # For a step reloaded from the registry: what its registration recorded (loss summary, seconds).
    recorded: dict[str, Any] = field(default_factory=dict)


class Strategy:
    """Base class: subclasses set `name` and implement `learn` and `restore`."""

    name: ClassVar[str] = ""
    # True when task j is evaluated with its own adapter (per_task: the task id is given at test time).
    per_task_states: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, tokenizer, config: ContinualConfig, **params: Any) -> None:
        self.check_params(params)
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.params = {**self.defaults, **params}
        # Where already-trained steps are found by content (continual.step_cache); the runner sets it
        # when it registers the sequence.
        self.step_cache: RegistryStepCache | None = None
        self._splits: dict[str, tuple[list[int], list[int]]] = {}  # task -> (train, dev) indices

    @property
    def warm_start(self) -> bool:
        """Whether each step's state grows out of the previous one (its lineage: trained_from it), for
        strategies whose states otherwise stand alone (per_task)."""
        return not self.per_task_states

    @classmethod
    def check_params(cls, params: dict[str, Any], where: str = "") -> None:
        """Refuse unknown names and values of the wrong kind (before a run writes anything);
        subclasses add range checks in `check_values`."""
        where = where or f"strategy {cls.name!r}"
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise ValueError(f"{where}: strategy {cls.name!r} has no parameter(s) {unknown}; "
                             f"it takes {sorted(cls.defaults) or 'none'}")
        for key, value in params.items():
            check_like_default(value, cls.defaults[key], f"{where} parameter {key}")
        cls.check_values({**cls.defaults, **params}, where)

    @classmethod
    def check_values(cls, params: dict[str, Any], where: str) -> None:
        """Range checks on the merged parameters (raise ValueError naming `where` and the key)."""

    # ---- the interface ---------------------------------------------------------------------------

    def learn(self, task: Task, step: int, history: Sequence[Task]) -> StepResult:
        """Train on `task` (history = the tasks before it, in order)."""
        raise NotImplementedError

    def restore(self, steps: Sequence[StepResult], history: Sequence[Task]) -> None:
        """Continue after `steps` (what an earlier run registered, in order) over `history`."""
        raise NotImplementedError

    # ---- shared pieces ---------------------------------------------------------------------------

    def encode(self, task: Task, examples=None) -> tuple[list[Encoded], int]:
        """`examples` (default: the task's training examples, minus its dev split when training runs
        to a plateau) as token ids, and how many lost input tokens."""
        if examples is None:
            examples = [task.train[i] for i in self.split(task)[0]] if self.config.train.plateau else task.train
        return encode_examples(self.tokenizer, task, list(examples), self.config.train.max_length)

    def split(self, task: Task) -> tuple[list[int], list[int]]:
        """(train, dev) indices into task.train for plateau training, drawn once per task and seed."""
        if task.name not in self._splits:
            t = self.config.train
            self._splits[task.name] = task.dev_split(t.dev_fraction, t.dev_max, self.config.seed, t.dev_min)
        return self._splits[task.name]

    def dev_examples(self, task: Task) -> list:
        """The task's dev split: the training examples plateau training scores and never trains on."""
        return [task.train[i] for i in self.split(task)[1]]

    def dev_check(self, tasks: Sequence[Task]):
        """The callable plateau training checks: the mean over `tasks` of each task's dev accuracy, scored
        the cheap way (labels ranked by likelihood; generation for free-text tasks), the model as it is.

        A mean of per-task accuracies, not one accuracy over the pooled examples: mtl's dev is every task
        so far, and pooled, a task's weight is its dev split's size. On the regime run, cb's 25 dev
        examples were a third of mtl's pool, its noisy checks decided the stop, and mtl ended cb after
        64-80 steps where seq trains it 80-128 (cb under the "learnt" bar in all three seeds). With one
        task the two are the same number."""
        def check() -> float:
            accuracies = []
            for task in tasks:
                dev = self.dev_examples(task)
                config = EvalConfig(scorer="loglik" if task.is_classification else "generate",
                                    max_length=self.config.train.max_length, progress=False)
                correct = score(self.model, self.tokenizer, task, config=config, examples=dev)[CURRENT].correct
                accuracies.append(sum(correct) / len(dev))
            return sum(accuracies) / len(accuracies)
        return check

    def new_adapter(self, name: str, step: int) -> None:
        attach(self.model, self.config.lora, name=name, seed=self.config.seed + step, activate="add")

    def train(self, names_trained: Sequence[str], names_active: Sequence[str], examples: list[Encoded], step: int,
              *, truncated: int, dev: Sequence[Task], extra_loss=None, description: str = "", frozen_A: bool = False,
              **train_changes: Any) -> TrainResult:
        """Train only `names_trained` while `names_active` act in the forward pass; `truncated` (how many
        examples lost input tokens when encoded) is reported with the result. `dev`: the tasks being
        learnt, whose dev splits decide when to stop under until = "plateau". `frozen_A`: train their
        B factors only (InfLoRA fixes A before training)."""
        set_active(self.model, list(names_active))
        set_trainable(self.model, list(names_trained))
        if frozen_A:
            for _, layer in lora_layers(self.model):
                for n in names_trained:
                    if n in layer.lora_A:
                        layer.lora_A[n].requires_grad_(False)
        config = self.config.train_for(step, **train_changes)
        key = None
        if self.step_cache is not None and extra_loss is None and len(names_trained) == 1:
            summed = fusable(self.model, names_trained)  # what frozen_as_one below decides
            dev_sets = [self.encode(t, self.dev_examples(t))[0] for t in dev] if config.plateau else []
            keyed = examples + [e for d in dev_sets for e in d]  # built once, hashed under each key tried

            def key_for(legacy_max_steps: int | None = None) -> str:
                return step_key(self.model, names_trained, names_active, self.config.lora.to_dict(), keyed, config,
                                self.tokenizer.pad_token_id, frozen_A, dev_split_sizes=[len(d) for d in dev_sets],
                                legacy_max_steps=legacy_max_steps, frozen_summed=summed)

            key = key_for()
            legacy = (key_for(cap) for cap in self.step_cache.legacy_caps()) if config.plateau else ()
            hit = self.step_cache.get(itertools.chain([key], legacy), config)
            if hit is not None:  # the same computation was trained before: its result, bit for bit
                adapter, recorded = hit
                load_into(self.model, names_trained[0], adapter)
                return TrainResult(steps=(recorded.get("loss") or {}).get("steps", 0), truncated=truncated,
                                   reused=recorded, cache_key=key, trained=adapter)
        with frozen_as_one(self.model, names_trained):  # earlier components: one branch, not one each
            result = train_on(self.model, examples, config, pad_id=self.tokenizer.pad_token_id,
                              params=lora_parameters(self.model, names_trained), extra_loss=extra_loss,
                              description=description, dev_check=self.dev_check(dev) if config.plateau else None)
        result.truncated = truncated
        if key is not None:
            result.cache_key, result.trained = key, LoraAdapter.from_model(self.model, names_trained[0])
        return result

    def snapshot(self, name: str, step: int, task: Task, **info: Any) -> LoraAdapter:
        adapter = LoraAdapter.from_model(self.model, name)
        adapter.provenance = self.train_provenance(step, task, **info)
        return adapter

    def train_provenance(self, step: int, task: Task, **info: Any) -> dict[str, Any]:
        """What a trained state records about itself (the registry turns it into trained_from lineage)."""
        return {"op": "train", "strategy": self.name, "step": step, "task": task.name, **info}

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.params)
