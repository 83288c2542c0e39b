"""`per_task`: an independent adapter per task, and at test time each task uses its own (the task id is
given): no interference by construction — the reference for how much a shared adapter forgets."""

from __future__ import annotations

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.lora import attach


def adapter_name(step: int) -> str:
    return f"task{step}"


class PerTask(Strategy):
    name = "per_task"
    per_task_states = True

    def learn(self, task, step, history):
        name = adapter_name(step)
        self.new_adapter(name, step)
        examples, truncated = self.encode(task)
        result = self.train([name], [name], examples, step, truncated=truncated, description=f"per_task {task.name}")
        return StepResult(task.name, step, self.snapshot(name, step, task), result)

    def restore(self, steps, history):
        for i, done in enumerate(steps, start=1):
            attach(self.model, done.state, name=adapter_name(i), activate="none", trainable=False)
