"""When a copy derived from a tensor is stale: one key, shared by every cache of derived tensors."""

from __future__ import annotations

import torch


def tensor_key(t: torch.Tensor) -> tuple:
    """What must be equal for a cached copy of `t` to still be right: its storage (data_ptr), device and
    dtype, which `.to(...)` replaces behind the same Parameter object, its in-place version counter (an
    optimizer step, a merge under no_grad), and its shape."""
    return (t.data_ptr(), t.device, t.dtype, t._version, tuple(t.shape))
