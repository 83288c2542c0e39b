"""`seq`: one adapter trained on task after task — the forgetting baseline (sequential fine-tuning)."""

from __future__ import annotations

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.lora import attach, list_adapters

NAME = "seq"


class Sequential(Strategy):
    name = "seq"

    def learn(self, task, step, history):
        if NAME not in list_adapters(self.model):
            self.new_adapter(NAME, step)
        examples, truncated = self.encode(task)
        result = self.train([NAME], [NAME], examples, step, truncated=truncated, dev=[task],
                            description=f"seq {task.name}")
        return StepResult(task.name, step, self.snapshot(NAME, step, task), result)

    def restore(self, steps, history):
        attach(self.model, steps[-1].state, name=NAME, activate="add")
