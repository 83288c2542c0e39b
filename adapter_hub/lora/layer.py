"""The LoRA layer: a targeted `nn.Linear` (or GPT-2 `Conv1D`) wrapped so that any number of named
adapters add s·B·A to it. The layer holds tensors and the per-forward choice (which adapters act, or
a per-row routing plan); the model-level bookkeeping is in adapter_hub.lora.model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adapter_hub.core.cache_keys import tensor_key
from adapter_hub.core.factors import delta_weight, fold


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D (weight stored in×out). Detected by shape contract to avoid importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def is_wrappable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def layer_fans(module: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out) of a linear layer: nn.Linear stores (out, in), Conv1D (in, out)."""
    rows, cols = (int(d) for d in module.weight.shape)
    return (rows, cols) if is_conv1d(module) else (cols, rows)


@dataclass
class RowPlan:
    """Stacked factors for one forward routed per row: slot k = adapter k, the last slot = no adapter (zeros)."""

    A_t: torch.Tensor  # (K+1, in, r_max): A_kᵀ zero-padded to the widest rank
    B_t: torch.Tensor  # (K+1, r_max, out): (s_k·B_k)ᵀ, scaling folded in
    index: torch.Tensor  # (N,) slot per batch row


class LoraLayer(nn.Module):
    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = is_conv1d(base_layer)
        self.in_features, self.out_features = layer_fans(base_layer)
        self.lora_A = nn.ParameterDict()  # name -> (r, in)
        self.lora_B = nn.ParameterDict()  # name -> (out, r)
        self.scaling: dict[str, float] = {}
        self.dropout: dict[str, float] = {}
        self.active: tuple[tuple[str, float], ...] = ()  # (name, weight) added in forward, merged excluded
        self.rows: RowPlan | None = None  # set inside lora.route: each batch row through its own adapter
        # Stacked factors per routed adapter set, reused while no factor changes (see stacked()).
        self._stack_cache: dict[tuple[str, ...], tuple[tuple, torch.Tensor, torch.Tensor]] = {}

    def add(self, name: str, A: torch.Tensor, B: torch.Tensor, scaling: float, dropout: float) -> None:
        self.lora_A[name] = nn.Parameter(A)
        self.lora_B[name] = nn.Parameter(B)
        self.scaling[name] = float(scaling)
        self.dropout[name] = float(dropout)

    def remove(self, name: str) -> None:
        del self.lora_A[name], self.lora_B[name], self.scaling[name], self.dropout[name]
        self.active = tuple((n, w) for n, w in self.active if n != name)
        self._stack_cache.clear()

    def stacked(self, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_t, B_t) for routing over `names`, rebuilt only when a factor or scaling has changed.

        The key holds what really changes a factor: its storage (data_ptr), device and dtype — which
        `model.to(...)`/`.double()` replace behind the same Parameter object — and its in-place version
        counter (an optimizer step), so no one has to remember to clear the cache.
        """
        present = [n for n in names if n in self.lora_A]
        differentiable = torch.is_grad_enabled() and any(self.lora_A[n].requires_grad for n in present)
        signature = tuple((n, *tensor_key(self.lora_A[n]), *tensor_key(self.lora_B[n]), self.scaling[n]) for n in present)
        cached = self._stack_cache.get(names)
        if not differentiable and cached is not None and cached[0] == signature:
            return cached[1], cached[2]
        ref = self.lora_A[present[0]] if present else self.base_layer.weight
        dtype = ref.dtype if present else torch.float32
        r_max = max((self.lora_A[n].shape[0] for n in present), default=1)
        A_t = torch.zeros(len(names) + 1, self.in_features, r_max, dtype=dtype, device=ref.device)
        B_t = torch.zeros(len(names) + 1, r_max, self.out_features, dtype=dtype, device=ref.device)
        with torch.set_grad_enabled(differentiable):  # gradients flow into the stack only when training
            for k, n in enumerate(names):
                if n in self.lora_A:
                    r = self.lora_A[n].shape[0]
                    A, sB = fold(self.lora_A[n], self.lora_B[n], self.scaling[n])
                    A_t[k, :, :r] = A.T
                    B_t[k, :r, :] = sB.T
        if differentiable:
            return A_t, B_t  # part of this step's graph: never reused
        self._stack_cache = {names: (signature, A_t, B_t)}  # keep one set: memory stays one adapter-stack
        return A_t, B_t

    def delta_weight(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """s·B·A in the base weight's own layout ((in, out) for Conv1D)."""
        delta = delta_weight(self.lora_A[name], self.lora_B[name], self.scaling[name], dtype)  # (out, in)
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.rows is not None:
            return self._routed(x, result)
        for name, weight in self.active:
            A, B = self.lora_A[name], self.lora_B[name]
            h = x.to(A.dtype)
            p = self.dropout[name]
            if p > 0.0 and self.training:
                h = F.dropout(h, p=p, training=True)
            # s·B·A applied to x in factored order, (..., in) -> (..., r) -> (..., out): the scaling
            # (and the adapter's weight) multiply the small output, never a dense ΔW
            lora_out = F.linear(F.linear(h, A), B)
            result = result + (lora_out * (self.scaling[name] * weight)).to(result.dtype)
        return result

    def _routed(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        plan = self.rows
        assert plan is not None
        n = x.shape[0]
        if plan.index.shape[0] != n:
            raise ValueError(f"routing was set for {plan.index.shape[0]} rows but the batch has {n}")
        h = x.to(plan.A_t.dtype).reshape(n, -1, self.in_features)  # (N, T, in)
        h = torch.bmm(h, plan.A_t[plan.index])  # (N, T, r): each row through its own A
        B_rows = plan.B_t[plan.index]  # (N, r, out)
        flat = result.reshape(n, -1, self.out_features)  # (N, T, out)
        in_place = flat.dtype == h.dtype == B_rows.dtype and not torch.is_autocast_enabled(x.device.type)
        if not torch.is_grad_enabled() and in_place:
            flat.baddbmm_(h, B_rows)  # inference: add into the base output, no extra activation pass
            return result
        return torch.baddbmm(flat.to(h.dtype), h, B_rows).reshape(result.shape).to(result.dtype)
