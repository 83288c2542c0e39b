"""`nlora`: N-LoRA (Yang et al., "Is Parameter Collision Hindering Continual Learning in LLMs?",
COLING 2025, arXiv:2410.10179) — inc (one new adapter per task, earlier ones frozen and active) plus
an ℓ1 sparsity penalty on the new task's update, so that task updates occupy few, different
parameters ("non-collision") instead of only orthogonal subspaces:

    L = L_task + λ · Σ_modules ‖B_new · A_new‖₁      (entry-wise ℓ1 of the unscaled ΔW = B·A)

Earlier components are frozen, so the penalty only ever shapes the task being learnt; no data from
earlier tasks is kept. λ default 1e-4 is NOT checked against the paper (its code was not readable
from this machine). Why this size: the penalty's gradient on an entry of B is λ·Σ_in |A| ≈ λ·√in
for the default A init, ≈ 2e-3 at SmolLM2's width 576 — the order of the task loss's gradients,
so sparsity competes with the task instead of pinning B at zero (λ = 0.01 would). The step info
reports the update's sparsity and its collision with earlier components.
"""

from __future__ import annotations

import torch

from adapter_hub.continual.inc import Incremental
from adapter_hub.lora import lora_layers


def l1_of_update(pairs) -> torch.Tensor:
    """Σ over modules of ‖B·A‖₁ for [(A, B), ...] (differentiable)."""
    return sum((B @ A).abs().sum() for A, B in pairs)


NEGLIGIBLE = 1e-2  # an entry below 1% of its update's largest |entry| counts as unchanged


def _changed(layer, name: str, tolerance: float) -> torch.Tensor:
    """Entries of the adapter's ΔW = B·A above `tolerance` × its largest |entry| in this layer."""
    d = (layer.lora_B[name] @ layer.lora_A[name]).abs()
    return d > tolerance * float(d.max().clamp(min=1e-30))


def collision(model, previous: list[str], new: str, tolerance: float = NEGLIGIBLE) -> float:
    """Fraction of the new update's non-negligible entries that an earlier component also changes
    (both |ΔW| above `tolerance` × that update's largest entry)."""
    hit = total = 0
    with torch.no_grad():
        for _, layer in lora_layers(model):
            if new not in layer.lora_A:
                continue
            mine = _changed(layer, new, tolerance)
            others = torch.zeros_like(mine)
            for n in previous:
                if n in layer.lora_A:
                    others |= _changed(layer, n, tolerance)
            hit += int((mine & others).sum())
            total += int(mine.sum())
    return hit / total if total else 0.0


class NLoRA(Incremental):
    name = "nlora"
    defaults = {"lam": 1e-4}

    @classmethod
    def check_values(cls, params, where):
        if params["lam"] < 0:
            raise ValueError(f"{where} parameter lam must be >= 0, got {params['lam']}")

    def extra_loss(self, new: str):
        lam = float(self.params["lam"])
        if not lam:
            return None
        pairs = [(layer.lora_A[new], layer.lora_B[new]) for _, layer in lora_layers(self.model) if new in layer.lora_A]
        return lambda: lam * l1_of_update(pairs)

    def learn(self, task, step, history):
        result = super().learn(task, step, history)
        previous, new = self.components[:-1], self.components[-1]
        result.info["collision"] = collision(self.model, previous, new) if previous else 0.0
        result.info["sparsity"] = sparsity(self.model, new)
        return result


def sparsity(model, name: str, tolerance: float = NEGLIGIBLE) -> float:
    """Fraction of the adapter's ΔW entries below `tolerance` × its largest |entry|, over all modules."""
    small = total = 0
    with torch.no_grad():
        for _, layer in lora_layers(model):
            if name in layer.lora_A:
                changed = _changed(layer, name, tolerance)
                small += int((~changed).sum())
                total += changed.numel()
    return small / total if total else 0.0
