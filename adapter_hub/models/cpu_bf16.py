"""A bf16 base model on a CPU without native bf16 (AVX2 only): its linear layers multiply in fp32.

Hardware bf16 matmuls (AMX, AVX512-BF16, GPU tensor cores) take bf16 operands, accumulate in fp32 and
round the result to bf16. On a CPU without them torch computes that same product through a slow
emulated path: for SmolLM2's shapes on an AVX2 AMD EPYC, 6.5x the fp32 time forward and 64x for the
input gradient, so a training step took 97 s against 5.3 s in fp32. Upcasting the bf16 operands,
multiplying in fp32 and rounding the product to bf16 is the same computation up to summation order
(its outputs and the emulated kernel's are both bit-equal to the exactly rounded product for 99.99%
of elements) at fp32 speed. The weights stay bf16 parameters, so whatever reads, merges or saves them
is unchanged; only the class of each `nn.Linear` changes, and on any other device or dtype its forward
is nn.Linear's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adapter_hub.core.cache_keys import tensor_key


class Fp32MatmulLinear(nn.Linear):
    """nn.Linear whose bf16 product on a CPU is computed in fp32 from the bf16 operands, then rounded.

    A frozen weight's fp32 copy is kept and reused until the weight changes (in-place edits bump its
    version; `.to()` replaces its storage): converting every weight on every call cost more than the
    matmuls themselves when generating one token at a time. The price is 4 bytes per frozen weight
    (0.5 GB for SmolLM2-135M). A trainable weight is upcast per call, inside the graph, so its gradient
    flows. Edits through `weight.data` escape the version counter: change weights in place under
    no_grad (as merge_adapter does) or by assignment."""

    _fp32_weight: torch.Tensor | None = None
    _fp32_key: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self.weight.dtype != torch.bfloat16:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), self.fp32_weight(), bias).to(x.dtype)  # (..., out), rounded as hardware rounds

    def fp32_weight(self) -> torch.Tensor:
        weight = self.weight
        if weight.requires_grad and torch.is_grad_enabled():
            return weight.float()
        key = tensor_key(weight)
        if self._fp32_key != key or self._fp32_weight is None:
            # an ordinary tensor even when first asked for under inference_mode, so a later training
            # step may save it for its backward pass
            with torch.inference_mode(False), torch.no_grad():
                self._fp32_weight = weight.detach().float()
            self._fp32_key = key
        return self._fp32_weight


def multiply_bf16_in_fp32(model: nn.Module) -> int:
    """Give every plain nn.Linear in `model` the fp32 product (in place); returns how many changed.
    Subclasses of nn.Linear are left alone: their forward may do more than the product."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = Fp32MatmulLinear
            changed += 1
    return changed
