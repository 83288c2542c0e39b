"""`ella`: ELLA-style selective subspace de-correlation (after "ELLA: Efficient Lifelong Learning for
Adapters in Large Language Models", EACL 2026, arXiv:2601.02232) — one adapter trained task after
task like seq, plus one regulariser against a single aggregated matrix of past updates.

With one continuing adapter, the aggregate of every earlier task's update is simply the adapter as
task t begins, W_past = s·B₀A₀ (per module); task t's own update is ΔW = s·(BA − B₀A₀). The penalty

    R = λ · Σ_modules ‖ΔW · W_pastᵀ‖²_F  /  Σ_modules ‖W_past · W_pastᵀ‖²_F

weights ΔW's action on each right singular direction v_k of W_past by σ_k²: along the past update's
high-energy input directions (where earlier tasks' inputs drove it) a change is costly, along its
low-energy ones nearly free — an anisotropic shrinkage (a gradient step shrinks ΔW·v_k by a factor
1 − 2ηλσ_k²/Σ), with O(r²) extra memory per module whatever the sequence length. The denominator
makes λ scale-free: undoing the past update entirely (ΔW = −W_past) costs exactly λ in loss units.

THIS IS A RECONSTRUCTION. The paper's method section and code could not be read from this machine;
what is built follows its abstract (a regulariser on one aggregated update matrix that penalises
alignment with its high-energy directions and leaves low-energy ones free; no replay, no growth).
Which side of W_past is weighted (input directions here, the GPM/InfLoRA argument: earlier inputs
excite them) and the normalisation are our choices, and λ = 1 is ours, not the paper's: at 1, erasing
everything learnt costs as much as the task loss of a half-learnt task (cross-entropy ≈ 1), so the
new task can still move the past directions when that buys it real loss.
"""

from __future__ import annotations

import torch

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.lora import attach, list_adapters, lora_layers

NAME = "ella"


class PastUpdate:
    """W_past of one module, frozen at the start of a task, kept as its factors (no d×d matrix)."""

    def __init__(self, A0: torch.Tensor, B0: torch.Tensor, scaling: float) -> None:
        self.A0, self.B0, self.s = A0.detach().clone(), B0.detach().clone(), scaling
        self.row_gram = self.A0 @ self.A0.T  # A₀A₀ᵀ (r × r)
        self.col_gram = self.B0.T @ self.B0  # B₀ᵀB₀ (r × r)

    def alignment(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """‖ΔW·W_pastᵀ‖²_F with ΔW = s(BA − B₀A₀): s⁴·tr(M G Mᵀ), M = B(AA₀ᵀ) − B₀(A₀A₀ᵀ), G = B₀ᵀB₀."""
        M = B @ (A @ self.A0.T) - self.B0 @ self.row_gram
        return self.s ** 4 * ((M @ self.col_gram) * M).sum()

    def energy(self) -> torch.Tensor:
        """‖W_past·W_pastᵀ‖²_F = s⁴·tr(P G P G), P = A₀A₀ᵀ (Σ σ_k⁴ of W_past)."""
        PG = self.row_gram @ self.col_gram
        return self.s ** 4 * torch.trace(PG @ PG)


class ELLA(Strategy):
    name = "ella"
    # lam: the reconstruction's own default (see the module docstring for why 1.0).
    defaults = {"lam": 1.0}

    @classmethod
    def check_values(cls, params, where):
        if params["lam"] < 0:
            raise ValueError(f"{where} parameter lam must be >= 0, got {params['lam']}")

    def past_updates(self) -> list[tuple[PastUpdate, torch.nn.Parameter, torch.nn.Parameter]]:
        return [(PastUpdate(layer.lora_A[NAME], layer.lora_B[NAME], layer.scaling[NAME]), layer.lora_A[NAME],
                 layer.lora_B[NAME]) for _, layer in lora_layers(self.model) if NAME in layer.lora_A]

    def extra_loss(self):
        """The penalty as a closure over the live factors, or None on the first task (nothing learnt yet)
        or with lam = 0."""
        lam = float(self.params["lam"])
        pairs = self.past_updates()
        total = sum(float(p.energy()) for p, _, _ in pairs)
        if not lam or total == 0.0:
            return None

        def loss() -> torch.Tensor:
            return lam * sum(p.alignment(A, B) for p, A, B in pairs) / total

        return loss

    def learn(self, task, step, history):
        if NAME not in list_adapters(self.model):
            self.new_adapter(NAME, step)
        penalty = self.extra_loss()
        examples, truncated = self.encode(task)
        result = self.train([NAME], [NAME], examples, step, truncated=truncated, dev=[task], extra_loss=penalty,
                            description=f"ella {task.name}")
        info = {}
        if penalty is not None:  # how much of the past's energy the new update ended up aligned with
            with torch.no_grad():
                info["alignment"] = float(penalty()) / float(self.params["lam"])
        return StepResult(task.name, step, self.snapshot(NAME, step, task), result, info=info)

    def restore(self, steps, history):
        attach(self.model, steps[-1].state, name=NAME, activate="add")
