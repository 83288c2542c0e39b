"""`replay`: seq plus a small memory of past examples mixed into each new task's training data.

The memory is the only way past data reaches later tasks. After task k the new memory is drawn from
(the previous memory ∪ task k's training examples) — never from an earlier task's full set, which is
gone by then, as in a real stream. Its size is `memory` examples, or (the default) `memory_fraction`
of the training examples seen so far (2%: the budget rehearsal papers call "tiny episodic memory").
Two ways to fill it:
  "balanced"   equal shares per task seen (±1); an earlier task's share can only shrink, by keeping a
               seeded subset of what it already has in memory (GEM / A-GEM-style episodic memory);
  "reservoir"  Vitter's algorithm R over the stream of every training example: with a fixed `memory`
               each example seen is in memory with equal probability; when the size grows with the
               data seen, the new slots are filled from the incoming task.
Replayed examples keep their own task's prompt. Each registered state records the memory it leaves
(task name and example index per slot, in order), so a resumed run restores exactly that memory
without reading an earlier task's data beyond those examples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.data import Example, Task
from adapter_hub.lora import attach, list_adapters

NAME = "replay"
SAMPLINGS = ("balanced", "reservoir")


class ReplayBuffer:
    """Slots of (task, index into that task's training list); `update` is the only way in."""

    def __init__(self, sampling: str, seed: int, memory: int | None = None, fraction: float = 0.02) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be 'balanced' or 'reservoir', got {sampling!r}")
        if memory is not None and memory < 0:
            raise ValueError(f"memory must be >= 0, got {memory}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in [0, 1], got {fraction}")
        self.sampling, self.seed, self.memory, self.fraction = sampling, seed, memory, fraction
        self.slots: list[tuple[Task, int]] = []
        self.seen = 0  # training examples streamed so far (all tasks)
        self.steps = 0

    @property
    def items(self) -> list[tuple[Task, Example]]:
        return [(task, task.train[i]) for task, i in self.slots]

    def capacity(self) -> int:
        return self.memory if self.memory is not None else round(self.fraction * self.seen)

    def update(self, task: Task) -> None:
        """Task k has been learnt: the new memory ⊆ (the current memory ∪ task k's examples)."""
        self.steps += 1
        self.seen += len(task.train)
        if self.sampling == "balanced":
            self._balanced(task)
        else:
            self._reservoir(task)

    def _balanced(self, task: Task) -> None:
        held: dict[str, list[tuple[Task, int]]] = {}
        order: list[str] = []
        for slot in self.slots:
            if slot[0].name not in held:
                order.append(slot[0].name)
            held.setdefault(slot[0].name, []).append(slot)
        capacity, k = self.capacity(), len(order) + 1
        quota = {name: min(capacity // k, len(held[name])) for name in order}
        quota[task.name] = min(capacity // k, len(task.train))
        for name in [task.name, *reversed(order)]:  # what is left over goes to whoever still has examples
            room = (len(task.train) if name == task.name else len(held[name])) - quota[name]
            extra = min(room, capacity - sum(quota.values()))
            quota[name] += max(extra, 0)
        slots = []
        for name in order:  # an earlier task keeps a seeded subset of what memory already had of it
            rng = random.Random(f"{self.seed}:balanced:{self.steps}:{name}")
            keep = sorted(rng.sample(range(len(held[name])), quota[name]))
            slots += [held[name][i] for i in keep]
        rng = random.Random(f"{self.seed}:balanced:{self.steps}:{task.name}")
        slots += [(task, i) for i in sorted(rng.sample(range(len(task.train)), quota[task.name]))]
        self.slots = slots

    def _reservoir(self, task: Task) -> None:
        rng = random.Random(f"{self.seed}:reservoir:{self.steps}")
        capacity, streamed = self.capacity(), self.seen - len(task.train)
        for i in range(len(task.train)):  # algorithm R, the stream position counting every task's examples
            streamed += 1
            if len(self.slots) < capacity:
                self.slots.append((task, i))
            else:
                j = rng.randrange(streamed)
                if j < capacity:
                    self.slots[j] = (task, i)
        del self.slots[capacity:]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for task, _ in self.slots:
            out[task.name] = out.get(task.name, 0) + 1
        return out

    def record(self) -> dict:
        """What a registered state stores: the memory slots in order, and the stream position."""
        return {"slots": [[task.name, i] for task, i in self.slots], "seen": self.seen, "steps": self.steps}

    def restore(self, recorded: dict, tasks: Sequence[Task]) -> None:
        by_name = {t.name: t for t in tasks}
        self.slots = [(by_name[name], int(i)) for name, i in recorded["slots"]]
        self.seen, self.steps = int(recorded["seen"]), int(recorded["steps"])


class Replay(Strategy):
    name = "replay"
    # memory None: a fraction of the data seen (2%, a "tiny episodic memory"); an int fixes the count.
    defaults = {"memory": None, "memory_fraction": 0.02, "sampling": "balanced"}

    @classmethod
    def check_values(cls, params, where):
        memory = params["memory"]
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int) or memory < 0):
            raise ValueError(f"{where} parameter memory must be an integer >= 0 (or unset), got {memory!r}")
        if not isinstance(params["memory_fraction"], (int, float)) or not 0 <= params["memory_fraction"] <= 1:
            raise ValueError(f"{where} parameter memory_fraction must be in [0, 1], got {params['memory_fraction']!r}")
        if params["sampling"] not in SAMPLINGS:
            raise ValueError(f"{where} parameter sampling must be 'balanced' or 'reservoir', got {params['sampling']!r}")

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        memory = self.params["memory"]
        self.buffer = ReplayBuffer(self.params["sampling"], config.seed, None if memory is None else int(memory),
                                   float(self.params["memory_fraction"]))

    def learn(self, task, step, history):
        if NAME not in list_adapters(self.model):
            self.new_adapter(NAME, step)
        examples, truncated = self.encode(task)
        replayed: dict[str, int] = {}
        for past_task, ex in self.buffer.items:  # each replayed example in its own task's format
            mixed_in = self.encode(past_task, [ex])[0]
            examples += mixed_in
            replayed[past_task.name] = replayed.get(past_task.name, 0) + len(mixed_in)
        result = self.train([NAME], [NAME], examples, step, truncated=truncated, dev=[task],
                            description=f"replay {task.name}")
        info = {"replayed": replayed}  # what was mixed into this step's training, per earlier task
        self.buffer.update(task)
        info.update(memory=self.buffer.record(), memory_size=len(self.buffer.slots),
                    memory_fraction_of_seen=round(len(self.buffer.slots) / max(self.buffer.seen, 1), 6))
        return StepResult(task.name, step, self.snapshot(NAME, step, task), result, info=info)

    def restore(self, steps, history: Sequence[Task]):
        attach(self.model, steps[-1].state, name=NAME, activate="add")
        self.buffer.restore(steps[-1].info["memory"], history)
