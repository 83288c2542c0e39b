"""`per_task`: an adapter per task — no interference by construction, the reference for how much a
shared adapter forgets — and, with a router, a task-free system built from them.

`init` is where each task's adapter starts:
  "fresh"      a new adapter (PEFT's init: B = 0), independent of every other task;
  "previous"   task k's adapter starts as task k−1's final one, bit for bit, and is trained from there:
               seq's forward transfer, while every earlier version stays untouched in the registry, so
               an input routed to its task's version meets exactly what was learnt for it.

How a test input finds its adapter is the `router` parameter:
  "oracle"     the task id is given at test time (each task scored with its own adapter);
  "prototype"  task-free: the input goes to the task whose prototype (mean frozen-base feature of its
               training inputs, evaluation.router) is nearest by centred cosine. Each step records
               its task's prototype (one vector, no examples) in the state's info;
  "analytic"   task-free: Any-SSR's ridge classifier over random features of the frozen base model's
               states (evaluation.analytic_router), updated with each task's inputs once; its
               statistics are registered with each state as a component (no example is kept).
"""

from __future__ import annotations

import torch

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.continual.step_cache import load_into
from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.evaluation.analytic_router import DIMENSIONS, RIDGE, AnalyticRouter
from adapter_hub.evaluation.router import ROUTERS, features, prototype
from adapter_hub.lora import attach
from adapter_hub.ops.align import from_factors

INITS = ("fresh", "previous")


def adapter_name(step: int) -> str:
    return f"task{step}"


class PerTask(Strategy):
    name = "per_task"
    per_task_states = True
    # router: the task id given, what the per_task reference has always meant. init: independent
    # adapters, the no-interference reference. router_dimensions / router_ridge: the analytic router's
    # own defaults (their reasons live with them, in evaluation.analytic_router).
    defaults = {"router": "oracle", "init": "fresh", "router_dimensions": DIMENSIONS, "router_ridge": RIDGE}

    @classmethod
    def check_values(cls, params, where):
        if params["router"] not in ROUTERS:
            raise ValueError(f"{where} parameter router must be one of {', '.join(ROUTERS)}, got {params['router']!r}")
        if params["init"] not in INITS:
            raise ValueError(f"{where} parameter init must be one of {', '.join(INITS)}, got {params['init']!r}")
        if params["router_dimensions"] < 1:
            raise ValueError(f"{where} parameter router_dimensions must be >= 1, got {params['router_dimensions']}")
        if not params["router_ridge"] > 0:
            raise ValueError(f"{where} parameter router_ridge must be > 0, got {params['router_ridge']}")

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.router = AnalyticRouter(int(self.params["router_dimensions"]), float(self.params["router_ridge"]),
                                     seed=config.seed)

    @property
    def warm_start(self) -> bool:
        return self.params["init"] == "previous"  # fresh adapters stand alone

    def learn(self, task, step, history):
        info, components = {}, []
        inputs = [ex.text for ex in task.train]  # the frozen base model's view of this task, before training
        if self.params["router"] == "prototype":
            info["prototype"] = prototype(self.model, self.tokenizer, task.name, inputs,
                                          max_length=self.config.train.max_length).to_dict()
        elif self.params["router"] == "analytic":
            feats = features(self.model, self.tokenizer, inputs, max_length=self.config.train.max_length)
            self.router.add_task(task.name, feats.double().numpy())
            info["router"] = {**self.router.state(), "stored_numbers": self.router.stored_numbers()}
        name = adapter_name(step)
        self.new_adapter(name, step)
        if self.warm_start and step > 1:  # start exactly where the previous task's adapter ended
            info["initial"] = adapter_name(step - 1)
            load_into(self.model, name, LoraAdapter.from_model(self.model, adapter_name(step - 1)))
        examples, truncated = self.encode(task)
        result = self.train([name], [name], examples, step, truncated=truncated, dev=[task],
                            description=f"per_task {task.name}")
        state = self.snapshot(name, step, task)
        if self.params["router"] == "analytic":
            components.append(router_component(self.router, state))
        return StepResult(task.name, step, state, result, components=components, info=info)

    def restore(self, steps, history):
        for i, done in enumerate(steps, start=1):
            attach(self.model, done.state, name=adapter_name(i), activate="none", trainable=False)
        if self.params["router"] == "analytic":
            self.router = restore_router(steps[-1])


def router_component(router: AnalyticRouter, like: LoraAdapter) -> LoraAdapter:
    """The router's statistics in the registry's one container, an adapter that is never attached:
    module "router.gram" holds G as its A (D × D), "router.cross" holds Cᵀ (T × D); B is zero."""
    arrays = router.arrays()
    factors = {"router.gram": (torch.from_numpy(arrays["gram"]), torch.zeros(1, router.dimensions, dtype=torch.float64)),
               "router.cross": (torch.from_numpy(arrays["cross"].T.copy()),
                                torch.zeros(1, len(router.tasks), dtype=torch.float64))}
    return from_factors(factors, like, {"op": "router", "strategy": "per_task", "router": router.state()},
                        dtype=torch.float64)


def restore_router(step: StepResult) -> AnalyticRouter:
    """The analytic router as it stood after `step`, from the component registered with it."""
    stored = next(c for c in step.components if c.provenance.get("op") == "router")
    arrays = {"gram": stored.modules["router.gram"].A.double().numpy(),
              "cross": stored.modules["router.cross"].A.double().numpy().T}
    return AnalyticRouter.restore(stored.provenance["router"], arrays)
