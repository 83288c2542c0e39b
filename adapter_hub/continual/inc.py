"""`inc`: a new adapter per task; earlier ones stay frozen and active (their outputs add up).

The state after step i is the exact sum of components 1..i (ops.add concatenates their ranks), so it
is one adapter like any other; `components` in its provenance records each component's rank so a
resumed run can split the sum back into the frozen pieces.
"""

from __future__ import annotations

import torch

from adapter_hub import ops
from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.lora import attach, lora_layers
from adapter_hub.ops.align import from_factors


def component_name(step: int) -> str:
    return f"inc{step}"


class Incremental(Strategy):
    name = "inc"

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.components: list[str] = []

    def extra_loss(self, new: str):
        """None for plain inc; O-LoRA adds its orthogonality term here."""
        return None

    def learn(self, task, step, history):
        new = component_name(step)
        self.new_adapter(new, step)
        examples, truncated = self.encode(task)
        active = [*self.components, new]
        result = self.train([new], active, examples, step, truncated=truncated, dev=[task], extra_loss=self.extra_loss(new),
                            description=f"{self.name} {task.name}")
        info = {"orthogonality": orthogonality(self.model, self.components, new)} if self.components else {}
        self.components.append(new)
        return StepResult(task.name, step, self.summed_state(step, task), result, info=info)

    def summed_state(self, step: int, task) -> LoraAdapter:
        """The exact sum of every component so far, recording each one's ranks for restore()."""
        parts = [LoraAdapter.from_model(self.model, n) for n in self.components]
        state = ops.add(*parts) if len(parts) > 1 else parts[0]
        state.provenance = self.train_provenance(step, task, components=[p.ranks for p in parts])
        return state

    def restore(self, steps, history):
        state = steps[-1].state
        for i, ranks in enumerate(state.provenance["components"], start=1):
            attach(self.model, split_component(state, ranks, i, state.provenance["components"]),
                   name=component_name(i), activate="add", trainable=False)
            self.components.append(component_name(i))


def orthogonality(model, previous: list[str], new: str) -> float:
    """Mean |entry| of A_prev·A_newᵀ over the modules (0 = the new subspace is orthogonal to the old)."""
    values = []
    with torch.no_grad():
        for _, layer in lora_layers(model):
            if new in layer.lora_A:
                prev = [layer.lora_A[n] for n in previous if n in layer.lora_A]
                if prev:
                    values.append((torch.cat(prev, 0) @ layer.lora_A[new].T).abs().mean().item())
    return sum(values) / len(values)


def split_component(state: LoraAdapter, ranks: dict[str, int], index: int, all_ranks: list[dict[str, int]]) -> LoraAdapter:
    """Component `index` (1-based) of a summed state: its rows of A and columns of B (scaling folded)."""
    factors = {}
    for m, r in ranks.items():
        start = sum(prev[m] for prev in all_ranks[:index - 1] if m in prev)
        A, sB = state.folded(m, state.modules[m].A.dtype)
        factors[m] = (A[start:start + r].clone(), sB[:, start:start + r])
    return from_factors(factors, state, {})
