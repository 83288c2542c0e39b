"""One module's LoRA factors and the two formulas everything else uses: ΔW = s·B·A, and the folded
pair (A, s·B) that carries the scaling inside B. The adapter file (core.adapter), the live layer
(lora.layer), adapter arithmetic (ops) and the strategies all apply the scaling through these, so
there is one definition of what an adapter computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModuleFactors:
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


def delta_weight(A: torch.Tensor, B: torch.Tensor, scaling: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ΔW = s·B·A, (out, in), computed in `dtype`."""
    return scaling * (B.to(dtype) @ A.to(dtype))


def fold(A: torch.Tensor, B: torch.Tensor, scaling: float, dtype: torch.dtype | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, s·B): the same ΔW with no scaling left to apply (or to apply twice)."""
    if dtype is not None:
        A, B = A.to(dtype), B.to(dtype)
    return A, B * scaling


def tensor_bytes(t: torch.Tensor) -> bytes:
    """A tensor's raw bytes as stored (dtype and layout as they are, on the host): what content
    digests hash, so two adapters share a digest only when their factors are bit-identical."""
    return t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
