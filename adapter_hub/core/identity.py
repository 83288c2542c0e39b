"""Who a base model is: a name, a fingerprint of its architecture and a probe of its weights.

An adapter trained on one base model is meaningless on another, even one with the same shapes.
The fingerprint (sha256 of every parameter name and shape) catches a different architecture; the probe
(a few weight values at fixed positions) catches a different checkpoint of the same architecture.

Probe values are compared at bf16 resolution: both are rounded to bf16 and may differ by at most one
bf16 step (2^-8 of the value), so the same checkpoint held in fp32, bf16 or fp16 (whose double
rounding can land one step away) matches, while a fine-tuned checkpoint whose weights moved by more
than that — as a few hundred optimizer steps move them — does not. (A relative tolerance of 2e-2,
the first version, let a fine-tune whose weights moved ~1.5% pass as the same model.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

PROBE_TENSORS = 4  # tensors sampled, spread across the model
PROBE_VALUES = 8  # values sampled per tensor
BF16_MANTISSA_BITS = 7  # a bf16 step at x is 2^(floor(log2|x|) - 7)


@dataclass(frozen=True)
class BaseModelIdentity:
    name: str | None
    fingerprint: str
    probe: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "probe": list(self.probe)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaseModelIdentity":
        return cls(data.get("name"), str(data["fingerprint"]), tuple(float(v) for v in data.get("probe", ())))

    def mismatch(self, other: "BaseModelIdentity") -> str | None:
        """Why `other` is not the same base model, or None when it is."""
        if self.fingerprint != other.fingerprint:
            return (
                f"architecture differs (fingerprint {self.fingerprint[:12]} for {self.name!r} vs "
                f"{other.fingerprint[:12]} for {other.name!r})"
            )
        if self.probe and other.probe:
            if len(self.probe) != len(other.probe) or not probes_match(self.probe, other.probe):
                return f"same architecture but different weights ({self.name!r} vs {other.name!r})"
        return None


def probes_match(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal at bf16 resolution: rounded to bf16, no pair more than one bf16 step apart."""
    ra = torch.tensor(a, dtype=torch.float64).to(torch.bfloat16).double()
    rb = torch.tensor(b, dtype=torch.float64).to(torch.bfloat16).double()
    scale = torch.maximum(ra.abs(), rb.abs())
    step = torch.where(scale > 0, 2.0 ** (torch.floor(torch.log2(scale.clamp(min=1e-300))) - BF16_MANTISSA_BITS),
                       torch.zeros_like(scale))
    return bool(((ra - rb).abs() <= step).all())


def base_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the base model's own parameters, under their pre-LoRA names, sorted."""
    items = []
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        items.append((name.replace(".base_layer.", "."), param))
    return sorted(items, key=lambda item: item[0])


def compute_identity(model: nn.Module, name: str | None = None) -> BaseModelIdentity:
    params = base_parameters(model)
    digest = hashlib.sha256()
    for pname, param in params:
        digest.update(f"{pname}:{tuple(param.shape)}\n".encode())
    picks = [params[round(i * (len(params) - 1) / max(PROBE_TENSORS - 1, 1))] for i in range(PROBE_TENSORS)]
    probe: list[float] = []
    with torch.no_grad():
        for _, param in picks:
            flat = param.detach().reshape(-1)
            n = flat.numel()
            idx = torch.tensor([i * (n - 1) // max(PROBE_VALUES - 1, 1) for i in range(PROBE_VALUES)])
            probe.extend(float(v) for v in flat[idx.to(flat.device)].float().cpu())
    if name is None:
        name = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    return BaseModelIdentity(name, "sha256:" + digest.hexdigest(), tuple(probe))
