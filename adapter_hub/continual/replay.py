"""`replay`: seq plus a memory of past examples mixed into each new task's training data.

Memory (`memory` examples in all) is filled after each task by one of two samplers:
  "balanced"   memory // k examples from each of the k tasks seen (re-drawn as k grows), the usual
               choice for class/task-balanced rehearsal (e.g. GEM/A-GEM-style episodic memory);
  "reservoir"  reservoir sampling over the stream of every training example (Vitter's algorithm R):
               each example seen so far is in memory with equal probability.
Replayed examples keep their own task's prompt. Everything is seeded, so a resumed run rebuilds the
same memory from the same tasks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.data import Example, Task
from adapter_hub.lora import attach, list_adapters

NAME = "replay"


class ReplayBuffer:
    def __init__(self, memory: int, sampling: str, seed: int) -> None:
        if memory < 0:
            raise ValueError(f"memory must be >= 0, got {memory}")
        if sampling not in ("balanced", "reservoir"):
            raise ValueError(f"sampling must be 'balanced' or 'reservoir', got {sampling!r}")
        self.memory, self.sampling, self.seed = memory, sampling, seed
        self.tasks: list[Task] = []
        self.items: list[tuple[Task, Example]] = []
        self.seen = 0  # reservoir: examples streamed so far

    def add_task(self, task: Task) -> None:
        self.tasks.append(task)
        if self.sampling == "balanced":
            per_task = self.memory // len(self.tasks)
            self.items = []
            for i, t in enumerate(self.tasks):
                rng = random.Random(f"{self.seed}:{i}:{per_task}")
                self.items += [(t, ex) for ex in rng.sample(t.train, min(per_task, len(t.train)))]
            return
        rng = random.Random(f"{self.seed}:reservoir:{len(self.tasks)}")
        for ex in task.train:  # algorithm R
            self.seen += 1
            if len(self.items) < self.memory:
                self.items.append((task, ex))
            else:
                j = rng.randrange(self.seen)
                if j < self.memory:
                    self.items[j] = (task, ex)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for task, _ in self.items:
            out[task.name] = out.get(task.name, 0) + 1
        return out


class Replay(Strategy):
    name = "replay"
    defaults = {"memory": 200, "sampling": "balanced"}  # 200: ~5% of a 4000-example task, a common budget

    @classmethod
    def check_values(cls, params, where):
        if params["memory"] < 0:
            raise ValueError(f"{where} parameter memory must be >= 0, got {params['memory']}")
        if params["sampling"] not in ("balanced", "reservoir"):
            raise ValueError(f"{where} parameter sampling must be 'balanced' or 'reservoir', got {params['sampling']!r}")

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.buffer = ReplayBuffer(int(self.params["memory"]), self.params["sampling"], config.seed)

    def learn(self, task, step, history):
        if NAME not in list_adapters(self.model):
            self.new_adapter(NAME, step)
        examples, truncated = self.encode(task)
        for past_task, ex in self.buffer.items:  # each replayed example in its own task's format
            examples += self.encode(past_task, [ex])[0]
        result = self.train([NAME], [NAME], examples, step, truncated=truncated, description=f"replay {task.name}")
        info = {"replayed": self.buffer.counts()}
        self.buffer.add_task(task)
        return StepResult(task.name, step, self.snapshot(NAME, step, task), result, info=info)

    def restore(self, steps, history: Sequence[Task]):
        attach(self.model, steps[-1].state, name=NAME, activate="add")
        for task in history:
            self.buffer.add_task(task)
