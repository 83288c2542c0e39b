"""`per_task`: an independent adapter per task — no interference by construction, the reference for
how much a shared adapter forgets.

How a test input finds its adapter is the `router` parameter:
  "oracle"     the task id is given at test time (each task scored with its own adapter);
  "prototype"  task-free: the input goes to the task whose prototype (mean frozen-base feature of its
               training inputs, adapter_hub.routing) is nearest by centred cosine. Each step records
               its task's prototype (one vector, no examples) in the state's info.
"""

from __future__ import annotations

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.evaluation.router import ROUTERS, prototype
from adapter_hub.lora import attach


def adapter_name(step: int) -> str:
    return f"task{step}"


class PerTask(Strategy):
    name = "per_task"
    per_task_states = True
    defaults = {"router": "oracle"}  # the task id given: what the per_task reference has always meant

    @classmethod
    def check_values(cls, params, where):
        if params["router"] not in ROUTERS:
            raise ValueError(f"{where} parameter router must be one of {', '.join(ROUTERS)}, got {params['router']!r}")

    def learn(self, task, step, history):
        info = {}
        if self.params["router"] == "prototype":  # the frozen base model's view, before any training
            info["prototype"] = prototype(self.model, self.tokenizer, task.name, [ex.text for ex in task.train],
                                          max_length=self.config.train.max_length).to_dict()
        name = adapter_name(step)
        self.new_adapter(name, step)
        examples, truncated = self.encode(task)
        result = self.train([name], [name], examples, step, truncated=truncated, dev=[task],
                            description=f"per_task {task.name}")
        return StepResult(task.name, step, self.snapshot(name, step, task), result, info=info)

    def restore(self, steps, history):
        for i, done in enumerate(steps, start=1):
            attach(self.model, done.state, name=adapter_name(i), activate="none", trainable=False)
