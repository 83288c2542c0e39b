"""`slao`: SLAO ("Merge before Forget: A Single LoRA Continual Learning via Continual
Merging", ICLR 2026, arXiv:2512.23017) — one LoRA for the whole sequence, constant memory, no data
kept. For task i > 1:

  init     A starts as an orthonormal basis of the previous fine-tuned A's row space,
           Q_iR_i = QR(A_ft,i−1ᵀ) (signs fixed so diag(R) > 0), A_init = Q_iᵀ; B starts as B_ft,i−1;
  train    on task i as seq does → (A_ft,i, B_ft,i);
  merge    asymmetrically: A_merge,i = A_ft,i, B_merge,i = B_merge,i−1 + λ(i)·(B_ft,i − B_merge,i−1)
           with the time-aware scale λ(i) = 1/√i (λ(1) = 1: the first task is taken whole).

The state after step i (what is evaluated) is (A_merge,i, B_merge,i). The fine-tuned (A_ft,i, B_ft,i),
which task i+1 starts from, is registered with it as a component, so a resume needs nothing else.

Where the formulas come from: the paper's method section could not be read from this machine; the
init, the asymmetric merge and λ(i) = 1/√i are as a public re-implementation quotes the paper
(backpropagate's slao module) and as the paper's summaries describe. Its other settings (rank, lr)
are the run's, like every strategy's.
"""

from __future__ import annotations

import math

import torch

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.lora import attach, list_adapters, lora_layers

NAME = "slao"
FINETUNED = "slao_finetuned"  # the component's provenance op


def time_scale(step: int) -> float:
    """λ(i) = 1/√i: task vectors of different tasks are near-orthogonal, so the merge's norm grows like
    √i when each new one is added at weight 1/√i (the paper's argument for this choice)."""
    if step < 1:
        raise ValueError(f"the time-aware scale needs a 1-based step, got {step}")
    return 1.0 / math.sqrt(step)


def orthonormal_basis(A: torch.Tensor) -> torch.Tensor:
    """(r, in) → (r, in) with orthonormal rows spanning A's row space: Qᵀ of A's reduced QR (signs fixed
    so diag(R) > 0, which makes the basis unique for a full-rank A). Computed in float64."""
    Q, R = torch.linalg.qr(A.double().T)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    return (Q * signs).T.to(A.dtype)


class SLAO(Strategy):
    name = "slao"

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.finetuned: LoraAdapter | None = None  # (A_ft, B_ft) of the last task: the next one starts here
        self.merged_B: dict[str, torch.Tensor] = {}  # module -> B_merge (unscaled, as the layer holds it)

    def learn(self, task, step, history):
        first = NAME not in list_adapters(self.model)
        if first:
            self.new_adapter(NAME, step)
        else:
            self._start_from_previous()
        examples, truncated = self.encode(task)
        result = self.train([NAME], [NAME], examples, step, truncated=truncated, dev=[task],
                            description=f"slao {task.name}")
        self.finetuned = LoraAdapter.from_model(self.model, NAME)
        self.finetuned.provenance = {"op": FINETUNED, "step": step}
        scale = time_scale(step)
        with torch.no_grad():
            for module, layer in lora_layers(self.model):
                if NAME not in layer.lora_B:
                    continue
                B_ft = layer.lora_B[NAME]
                merged = B_ft.detach().clone() if first else self.merged_B[module] + scale * (B_ft - self.merged_B[module])
                self.merged_B[module] = merged
                B_ft.copy_(merged)  # the layer now holds the merged state (A_merge = A_ft)
        state = self.snapshot(NAME, step, task, time_scale=scale)
        return StepResult(task.name, step, state, result, components=[self.finetuned], info={"time_scale": scale})

    def _start_from_previous(self) -> None:
        """A ← orthonormal basis of A_ft,i−1; B ← B_ft,i−1 (both into the live adapter)."""
        with torch.no_grad():
            for module, layer in lora_layers(self.model):
                if NAME in layer.lora_A:
                    previous = self.finetuned.modules[module]
                    layer.lora_A[NAME].copy_(orthonormal_basis(previous.A))
                    layer.lora_B[NAME].copy_(previous.B)

    def restore(self, steps, history):
        last = steps[-1]
        attach(self.model, last.state, name=NAME, activate="add")
        self.merged_B = {m: f.B.clone() for m, f in last.state.modules.items()}
        self.finetuned = next(c for c in last.components if c.provenance.get("op") == FINETUNED)
