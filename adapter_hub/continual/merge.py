"""`merge`: an independent adapter per task, merged after each task into one adapter with an arithmetic
method (default TIES at density 0.5, reduced to the LoRA rank): model merging as continual learning.
Weights are 1 per part for TIES/DARE/task arithmetic (their published form); `linear` averages the
parts (weights 1/n, the model-soup average) so the state does not grow with the number of tasks.
The independent adapters are registered as components (the merge is lossy, so they are what a resumed
run needs); the merged state's lineage points at them (merged_from)."""

from __future__ import annotations

from adapter_hub import ops
from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.lora import detach


class Merge(Strategy):
    name = "merge"
    # TIES with half the entries kept is a robust default for few adapters; rank None = the LoRA rank.
    defaults = {"method": "ties", "density": 0.5, "rank": None, "space": "dense"}

    @classmethod
    def check_values(cls, params, where):
        if params["method"] not in ops.METHODS:
            raise ValueError(f"{where} parameter method must be one of {sorted(ops.METHODS)}, got {params['method']!r}")
        try:
            ops.method_params(params["method"], **cls.merge_options(params))  # the values, checked once here
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if params["rank"] is not None and (not isinstance(params["rank"], int) or isinstance(params["rank"], bool)
                                           or params["rank"] < 1):
            raise ValueError(f"{where} parameter rank must be an integer >= 1, got {params['rank']!r}")
        if params["space"] not in ("dense", "core"):
            raise ValueError(f"{where} parameter space must be 'dense' or 'core', got {params['space']!r}")

    @staticmethod
    def merge_options(params) -> dict:
        """The options of ops.merge this method takes (density only where the method has one)."""
        takes = {p.name for p in ops.METHODS[params["method"]].params}
        return {"density": params["density"]} if "density" in takes else {}

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.parts = []

    def learn(self, task, step, history):
        name = f"part{step}"
        self.new_adapter(name, step)
        examples, truncated = self.encode(task)
        result = self.train([name], [name], examples, step, truncated=truncated, dev=[task],
                            description=f"merge {task.name}")
        part = self.snapshot(name, step, task, role="component")
        detach(self.model, name)  # the part lives on as a tensor copy; the model keeps no adapter
        self.parts.append(part)
        return StepResult(task.name, step, self.merged(step, task), result, components=[part],
                          state_inputs=list(self.parts))

    def merged(self, step, task):
        if len(self.parts) == 1:
            state = self.parts[0]
            state = ops.scale(state, 1.0)  # a copy with folded scaling, like every merged state
        else:
            method = self.params["method"]
            weights = [1.0 / len(self.parts)] * len(self.parts) if method == "linear" else None
            state = ops.merge(self.parts, method, weights, rank=self.params["rank"] or self.config.lora.r,
                              space=self.params["space"], seed=self.config.seed, **self.merge_options(self.params))
        state.provenance = {**state.provenance, "strategy": self.name, "step": step, "task": task.name}
        return state

    def restore(self, steps, history):
        self.parts = [done.components[0] for done in steps]
