"""`olora`: O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual
Learning", arXiv:2310.14152) — inc plus a loss keeping each new adapter's subspace orthogonal to the
earlier ones:

    L = L_task + λ1 · Σ_modules Σ_{j,k} |(A_prev · A_newᵀ)_{jk}| + λ2 · Σ_{A,B of new} ‖·‖₂

with A_prev the earlier tasks' A matrices stacked (frozen). As in the authors' code, the orthogonality
term is an L1 sum of the entries and the λ2 term is the (unsquared) Frobenius norm of the new factors.
Defaults λ1 = 0.5, λ2 = 0, the paper's.
"""

from __future__ import annotations

import torch

from adapter_hub.continual.inc import Incremental
from adapter_hub.lora import lora_layers


class OLoRA(Incremental):
    name = "olora"
    defaults = {"lambda1": 0.5, "lambda2": 0.0}

    @classmethod
    def check_values(cls, params, where):
        for key in ("lambda1", "lambda2"):
            if params[key] < 0:
                raise ValueError(f"{where} parameter {key} must be >= 0, got {params[key]}")

    def _pairs(self, new: str) -> list[tuple[torch.Tensor, torch.nn.Parameter, torch.nn.Parameter]]:
        """(stacked previous A's, new A, new B) per layer that has both."""
        pairs = []
        for _, layer in lora_layers(self.model):
            if new in layer.lora_A:
                prev = [layer.lora_A[n].detach() for n in self.components if n in layer.lora_A]
                stacked = torch.cat(prev, 0) if prev else None  # (R_prev, in), frozen
                pairs.append((stacked, layer.lora_A[new], layer.lora_B[new]))
        return pairs

    def extra_loss(self, new: str):
        pairs = self._pairs(new)
        lam1, lam2 = float(self.params["lambda1"]), float(self.params["lambda2"])

        def loss() -> torch.Tensor:
            total = pairs[0][1].new_zeros(())
            if lam1:
                total = total + lam1 * sum((prev @ A.T).abs().sum() for prev, A, _ in pairs if prev is not None)
            if lam2:
                total = total + lam2 * sum(A.norm() + B.norm() for _, A, B in pairs)
            return total

        return loss if (lam1 and any(p is not None for p, _, _ in pairs)) or lam2 else None
