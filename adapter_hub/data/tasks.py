"""What a task is: a name, train/test examples, a prompt (instruction + input) and either a closed
label set (classification) or free-text targets (generation); and drawing a seeded subset of it.
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from adapter_hub.core.errors import DataError

# What a task's prompt looks like. The target follows "Answer:" after one space.
DEFAULT_TEMPLATE = "{instruction}\nInput: {text}\nAnswer:"


@dataclass(frozen=True)
class Example:
    text: str
    target: str


@dataclass
class Task:
    name: str
    train: list[Example]
    test: list[Example]
    labels: list[str] | None = None  # the closed label set; None for free-text generation tasks
    instruction: str = ""
    template: str = DEFAULT_TEMPLATE
    source: str = ""  # where it came from (a path, "builtin:<name>", "hf:<id>")
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_classification(self) -> bool:
        return self.labels is not None

    def prompt(self, text: str) -> str:
        return self.template.format(instruction=self.instruction, text=text)

    def prompt_parts(self) -> tuple[str, str]:
        """The template around {text}: (before, after). Lets tokenisation truncate only the input."""
        before, after = self.template.split("{text}", 1)
        return before.format(instruction=self.instruction), after.format(instruction=self.instruction)

    def load_args(self) -> dict[str, Any]:
        """What `load_task(**args)` needs to rebuild this task (recorded with every registered state)."""
        return {"spec": self.source, "name": self.name, "instruction": self.instruction, "template": self.template,
                "generation": not self.is_classification, "max_train": self.meta.get("max_train"),
                "max_test": self.meta.get("max_test"), "seed": self.meta.get("seed", 0)}

    def fingerprint(self) -> str:
        """Dataset identity recorded with every evaluation: sha256 of the test set, prompt and labels."""
        h = hashlib.sha256()
        h.update(json.dumps([self.instruction, self.template, self.labels], sort_keys=True).encode())
        for ex in self.test:
            h.update(json.dumps([ex.text, ex.target]).encode())
        return "sha256:" + h.hexdigest()[:16]

    def subset(self, max_train: int | None = None, max_test: int | None = None, seed: int = 0) -> "Task":
        """A copy with at most this many examples, drawn with a fixed seed. Classification tasks are
        sampled stratified by label: each label keeps its share (largest remainder) and at least one
        example while there is room for every label."""
        return Task(
            self.name, _sample(self.train, max_train, seed, bool(self.labels)),
            _sample(self.test, max_test, seed + 1, bool(self.labels)), self.labels,
            self.instruction, self.template, self.source,
            {**self.meta, "max_train": max_train, "max_test": max_test, "seed": seed},
        )

    def dev_split(self, fraction: float, max_n: int | None, seed: int, min_n: int = 1) -> tuple[list[int], list[int]]:
        """(train, dev) indices into `self.train`: a seeded, label-stratified `fraction` (at least min_n,
        at most max_n) held out for deciding when to stop training. The floor never takes more than a
        quarter of the training examples: a small task keeps three quarters to learn from. Drawn from the
        training examples only, so no test example ever steers training; the same (task, seed) gives
        the same split in any process."""
        n = len(self.train)
        size = max(round(fraction * n), min(min_n, n // 4))
        size = min(n - 1, max(1, size), max_n if max_n is not None else n)
        if size < 1:
            raise DataError(f"task {self.name}: {n} training example(s) leave none to hold out for a dev split")
        tagged = [Example(str(i), ex.target) for i, ex in enumerate(self.train)]  # the index rides as the text
        dev = sorted(int(ex.text) for ex in _sample(tagged, size, zlib.crc32(f"{seed}:dev:{self.name}".encode()),
                                                    bool(self.labels)))
        held = set(dev)
        return [i for i in range(n) if i not in held], dev

    def __repr__(self) -> str:
        kind = f"{len(self.labels)} labels" if self.labels else "generation"
        return f"Task({self.name!r}, train={len(self.train)}, test={len(self.test)}, {kind}, source={self.source!r})"


def _sample(examples: list[Example], n: int | None, seed: int, stratify: bool) -> list[Example]:
    if n is None or n >= len(examples):
        return list(examples)
    if n <= 0:
        raise DataError(f"cannot sample {n} examples")
    rng = random.Random(seed)
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.target, []).append(ex)
    if not stratify or len(groups) == 1 or len(groups) > n:  # free text, or no room for every label
        return rng.sample(examples, n)
    labels = sorted(groups)
    share = {k: n * len(groups[k]) / len(examples) for k in labels}
    quota = {k: max(1, int(share[k])) for k in labels}
    while sum(quota.values()) > n:  # the at-least-one rule overshot: take back from the largest quotas
        quota[max(labels, key=lambda k: (quota[k], k))] -= 1
    for k in sorted(labels, key=lambda k: (-(share[k] - int(share[k])), k)):  # largest remainders first
        if sum(quota.values()) == n:
            break
        if quota[k] < len(groups[k]):
            quota[k] += 1
    for k in labels:  # still short (remainders went to full groups): fill from any group with room
        while sum(quota.values()) < n and quota[k] < len(groups[k]):
            quota[k] += 1
    picked = [ex for k in labels for ex in rng.sample(groups[k], quota[k])]
    rng.shuffle(picked)
    return picked
