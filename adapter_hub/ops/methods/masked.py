"""Element-wise merges as one generalized task arithmetic: sparsify, (optionally) elect a sign, combine.
Everything is per module: each module's task vectors are trimmed, elected and merged on their own.

    sparse_i = sparsify(τ_i)            magnitude: keep the k = int(density·numel) largest |τ_i| entries
                                        (as PEFT's prune); random (DARE): keep each entry with
                                        probability density, then divide by density
    sign     = sign(Σ_i sparse_i)       "total" election by mass of the trimmed, UNweighted vectors (TIES
                                        paper, PEFT's ties); a zero sum elects +. elect="weighted" elects
                                        on Σ_i w_i·sparse_i instead (mergekit's order)
    agree_i  = [sign(sparse_i) = sign]  zeros never agree
    merged   = Σ_i w_i·sparse_i                             (no election)
             = Σ_i agree_i·w_i·sparse_i / divisor           (disjoint mean, with election)

divisor: "count" (default; TIES paper and PEFT) = number of agreeing inputs per entry, or "weights"
(mergekit's normalize) = the signed sum Σ w_i over agreeing inputs (|sum| < 1e-8 counts as 1, as
mergekit); entries nobody agrees on stay 0. λ (default 1) scales the result. Random masks come from a
generator seeded per module, so a merge is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from adapter_hub.ops.methods.catalogue import (
    DENSITY,
    DIVISOR,
    ELECT,
    LAMBDA,
    merge_method,
)

CHUNK = 1 << 20  # entries per tensor per chunk: temporaries stay cache-sized, not n x the module


def magnitude_mask(t: torch.Tensor, density: float) -> torch.Tensor:
    """True on exactly k = int(density·numel) largest-magnitude entries (ties at the threshold: first by index)."""
    k = int(density * t.numel())
    flat = t.abs().reshape(-1)
    if k <= 0:
        return torch.zeros_like(t, dtype=torch.bool)
    if t.device.type != "cpu":
        mask = torch.zeros(flat.numel(), dtype=torch.bool, device=t.device)
        mask[torch.topk(flat, k=k, largest=True, sorted=False).indices] = True
        return mask.reshape(t.shape)
    # CPU: numpy's introselect finds the k-th largest in O(n), several times faster than torch.topk
    values = flat.float().numpy() if flat.dtype == torch.bfloat16 else flat.numpy()
    threshold = torch.as_tensor(np.partition(values, values.size - k)[values.size - k]).to(flat.dtype)
    mask = flat > threshold
    missing = k - int(mask.sum())
    if missing > 0:
        mask[torch.nonzero(flat == threshold).reshape(-1)[:missing]] = True
    return mask.reshape(t.shape)


def keep_mask(t: torch.Tensor, density: float, how: str, generator: torch.Generator | None) -> torch.Tensor | None:
    """Which entries survive sparsification (None: all of them)."""
    if density >= 1.0:
        return None
    if how == "magnitude":
        return magnitude_mask(t, density)
    return torch.rand(t.shape, generator=generator, device=t.device, dtype=torch.float32) < density  # DARE


def generalized(tensors: torch.Tensor, weights: torch.Tensor, *, density: float, how: str, elect: bool,
                divisor: str = "count", lam: float = 1.0, generator: torch.Generator | None = None,
                election: str = "unweighted") -> torch.Tensor:
    """tensors: (n, ...) task tensors; weights: (n,). Returns the merged (...) tensor.

    Masks are drawn per tensor (in order, from `generator` for DARE); the weighting, sign election and
    disjoint mean then run over row chunks, so no (n, ...)-sized temporary is ever built.
    """
    if divisor not in ("count", "weights"):
        raise ValueError(f"divisor must be 'count' or 'weights', got {divisor!r}")
    if election not in ("unweighted", "weighted"):
        raise ValueError(f"election must be 'unweighted' or 'weighted', got {election!r}")
    n = tensors.shape[0]
    flat = tensors.reshape(n, tensors.shape[1] if tensors.dim() > 1 else 1, -1)  # (n, rows, cols)
    masks = [keep_mask(t, density, how, generator) for t in tensors]
    masks = [None if m is None else m.reshape(flat.shape[1:]) for m in masks]
    rescale = 1.0 / density if how == "random" and density < 1.0 else 1.0
    w = weights.to(flat.dtype).reshape(n, 1, 1)
    out = torch.empty(flat.shape[1:], dtype=flat.dtype, device=flat.device)
    rows = max(1, CHUNK // max(1, flat.shape[2]))
    for a in range(0, flat.shape[1], rows):
        sparse = flat[:, a:a + rows] * rescale  # (n, r, cols), unweighted
        for i, m in enumerate(masks):
            if m is not None:
                sparse[i] *= m[a:a + rows]
        x = sparse * w  # weighted
        if not elect:
            out[a:a + rows] = x.sum(0)
            continue
        voters = sparse if election == "unweighted" else x
        sign = torch.where(voters.sum(0) >= 0, 1.0, -1.0).to(x.dtype)
        agree = voters.sign() == sign  # zeros never agree
        total = (x * agree).sum(0)
        if divisor == "count":
            denom = agree.sum(0).to(x.dtype)
            out[a:a + rows] = torch.where(denom > 0, total / denom.clamp(min=1.0), torch.zeros_like(total))
        else:  # mergekit: the signed weight sum of the agreeing inputs; ~0 counts as 1
            denom = (w * agree).sum(0)
            out[a:a + rows] = total / torch.where(denom.abs() < 1e-8, torch.ones_like(denom), denom)
    return (lam * out).reshape(tensors.shape[1:])


@merge_method("ties", kind="masked", params=(DENSITY, LAMBDA, DIVISOR, ELECT),
              title="TIES: trim, elect sign, disjoint merge",
              reference="Yadav et al. 2023, TIES-Merging, https://arxiv.org/abs/2306.01708")
def ties(tensors, weights, params, generator):
    return generalized(tensors, weights, density=params["density"], how="magnitude", elect=True,
                       divisor=params["divisor"], lam=params["lambda"], election=params["elect"])


@merge_method("dare_linear", kind="masked", params=(DENSITY, LAMBDA), random=True,
              title="DARE: drop and rescale, then weighted sum",
              reference="Yu et al. 2023, Language models are Super Mario (DARE), https://arxiv.org/abs/2311.03099")
def dare_linear(tensors, weights, params, generator):
    return generalized(tensors, weights, density=params["density"], how="random", elect=False,
                       lam=params["lambda"], generator=generator)


@merge_method("dare_ties", kind="masked", params=(DENSITY, LAMBDA, DIVISOR, ELECT), random=True,
              title="DARE sparsification + TIES sign election and disjoint merge",
              reference="Yu et al. 2023, https://arxiv.org/abs/2311.03099 with Yadav et al. 2023")
def dare_ties(tensors, weights, params, generator):
    return generalized(tensors, weights, density=params["density"], how="random", elect=True,
                       divisor=params["divisor"], lam=params["lambda"], generator=generator, election=params["elect"])


@merge_method("magnitude_prune", kind="masked", params=(DENSITY, LAMBDA),
              title="Magnitude pruning, then weighted sum",
              reference="PEFT add_weighted_adapter(combination_type='magnitude_prune')")
def magnitude_prune(tensors, weights, params, generator):
    return generalized(tensors, weights, density=params["density"], how="magnitude", elect=False,
                       lam=params["lambda"])
