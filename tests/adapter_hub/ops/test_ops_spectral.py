"""The spectral merges (Iso-C, Iso-CTS, TSV-Merge, KnOTS-TIES) against dense references written here
from the papers' equations: every task's ΔW formed densely, full SVDs, no factor tricks."""

from __future__ import annotations

import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig, ops
from adapter_hub.core.factors import ModuleFactors
from adapter_hub.core.identity import BaseModelIdentity

SHAPES = {"q": (24, 20), "up": (30, 20), "down": (20, 30)}  # module -> (out, in)
IDENTITY = BaseModelIdentity("toy", "sha256:" + "0" * 64, (0.1,))


def adapter(seed: int, r: int) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = {m: ModuleFactors(torch.randn(r, i, generator=g, dtype=torch.float64),
                                torch.randn(o, r, generator=g, dtype=torch.float64) * 0.1)
               for m, (o, i) in SHAPES.items()}
    return LoraAdapter(modules, LoraConfig(r=r, alpha=2.0 * r, target_modules=sorted(SHAPES)), IDENTITY)


@pytest.fixture
def parts():
    return [adapter(0, 3), adapter(1, 4), adapter(2, 2), adapter(3, 3)]


def deltas(adapters, module, weights=None):
    weights = weights or [1.0] * len(adapters)
    return [w * a.delta_weight(module, torch.float64) for a, w in zip(adapters, weights)]


def nonzero_svd(M):
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    k = int((S > S[0] * 1e-9).sum())
    return U[:, :k], S[:k], Vh[:k]


def polar(M):
    P, _, Qh = torch.linalg.svd(M, full_matrices=False)
    return P @ Qh


def ref_iso_c(ds, alpha):
    U, S, Vh = nonzero_svd(sum(ds))
    return alpha * S.mean() * U @ Vh


def ref_iso_cts(ds, alpha, fraction):
    U, S, Vh = nonzero_svd(sum(ds))
    K, T = S.numel(), len(ds)
    per = round((K - int(K * fraction)) / T)
    common = K - per * T
    Uc, Sc, Vhc = U[:, :common], S[:common], Vh[:common]
    us, ss, vhs = [], [], []
    for D in ds:
        u, s, vh = nonzero_svd(D - Uc @ Uc.T @ D)
        us.append(u[:, :per]), ss.append(s[:per]), vhs.append(vh[:per])
    U_all, V_all = polar(torch.cat([*us, Uc], 1)), polar(torch.cat([*vhs, Vhc], 0).T)
    return alpha * torch.cat([*ss, Sc]).mean() * U_all @ V_all.T


def ref_tsv(ds, alpha, per_task=None):
    """TSV-Merge; `per_task` keeps only each task's top singular triplets (the cap when they would not fit)."""
    triplets = [tuple(x[..., :per_task] if i == 0 else x[:per_task] for i, x in enumerate(nonzero_svd(D))) for D in ds]
    U = polar(torch.cat([u for u, _, _ in triplets], 1))
    V = polar(torch.cat([vh for _, _, vh in triplets], 0).T)
    return alpha * U @ torch.diag(torch.cat([s for _, s, _ in triplets])) @ V.T


def ref_ties_rows(reps, density):
    """TIES on (n, ...) tensors: keep each task's top int(density·numel) |entries|, elect the sign of
    the sum of what is kept, average the kept entries that agree with it."""
    kept = []
    for t in reps:
        k = int(density * t.numel())
        keep = torch.zeros(t.numel(), dtype=torch.bool)
        keep[t.abs().flatten().argsort(descending=True)[:k]] = True
        kept.append(t * keep.reshape(t.shape))
    kept = torch.stack(kept)
    sign = torch.where(kept.sum(0) >= 0, 1.0, -1.0).to(kept.dtype)
    agree = (kept.sign() == sign)
    count = agree.sum(0)
    return torch.where(count > 0, (kept * agree).sum(0) / count.clamp(min=1), torch.zeros_like(sign))


def ref_knots_ties(ds, density, lam):
    U, S, Vh = nonzero_svd(torch.cat(ds, 1))  # [ΔW_1 … ΔW_n]: (out, n·in)
    width = ds[0].shape[1]
    reps = torch.stack([S[:, None] * Vh[:, t * width:(t + 1) * width] for t in range(len(ds))])
    return lam * U @ ref_ties_rows(reps, density)


def rel(x, y):
    return float((x - y).norm() / y.norm())


@pytest.mark.parametrize("alpha", [1.0, 1.7])
def test_iso_c_equals_dense_reference(parts, alpha):
    merged = ops.merge(parts, "iso_c", options={"alpha": alpha})
    for m in SHAPES:
        ours = merged.delta_weight(m, torch.float64)
        assert rel(ours, ref_iso_c(deltas(parts, m), alpha)) < 1e-6
        S = torch.linalg.svdvals(ours)
        flat = S[S > S[0] * 1e-9]
        assert flat.numel() == 12 and torch.allclose(flat, flat[0].expand_as(flat))  # isotropic, full rank Σr


@pytest.mark.parametrize("fraction", [0.8, 0.5])
def test_iso_cts_equals_dense_reference(parts, fraction):
    merged = ops.merge(parts, "iso_cts", options={"alpha": 1.3, "common_fraction": fraction})
    for m in SHAPES:
        assert rel(merged.delta_weight(m, torch.float64), ref_iso_cts(deltas(parts, m), 1.3, fraction)) < 1e-6


def test_tsv_equals_dense_reference_with_weights(parts):
    weights = [1.0, 0.5, -0.7, 2.0]
    merged = ops.merge(parts, "tsv", weights, options={"alpha": 0.9})
    for m in SHAPES:
        assert rel(merged.delta_weight(m, torch.float64), ref_tsv(deltas(parts, m, weights), 0.9)) < 1e-6


@pytest.mark.parametrize("density", [0.2, 0.6, 1.0])
def test_knots_ties_equals_dense_reference(parts, density):
    merged = ops.merge(parts, "knots_ties", density=density, lam=0.6)
    for m in SHAPES:
        assert rel(merged.delta_weight(m, torch.float64), ref_knots_ties(deltas(parts, m), density, 0.6)) < 1e-6


def test_knots_ties_at_full_density_of_one_adapter_is_that_adapter(parts):
    """Alone, KnOTS's coordinates are just the adapter's own: TIES keeps them all, the merge is exact."""
    alone = ops.merge(parts[:1], "knots_ties", density=1.0)
    for m in SHAPES:
        assert rel(alone.delta_weight(m, torch.float64), parts[0].delta_weight(m, torch.float64)) < 1e-9


def test_spectral_results_stay_factored_at_the_inputs_rank(parts):
    """No method returns more rank than Σ r_i: the result is stored as factors, never as dense ΔW."""
    for method in ("iso_c", "iso_cts", "tsv", "knots_ties"):
        merged = ops.merge(parts, method)
        assert all(f.A.shape[0] <= 12 for f in merged.modules.values()), method
        assert merged.provenance["method"] == method


def test_tsv_caps_each_task_so_the_tasks_fit_the_layer():
    """Five rank-6 tasks in a 20-wide layer: 30 directions cannot be orthonormal in 20 dims, so each
    task keeps ⌊20/5⌋ = 4 (and `keep` cuts further)."""
    many = [adapter(10 + i, 6) for i in range(5)]
    merged = ops.merge(many, "tsv")
    kept = ops.merge(many, "tsv", options={"keep": 0.5})
    assert all(f.A.shape[0] == 20 for f in merged.modules.values())
    assert all(f.A.shape[0] == 15 for f in kept.modules.values())
    for m, (out_f, in_f) in SHAPES.items():  # the values too: each task's own top directions, the dense way
        per = min(out_f, in_f) // len(many)
        assert rel(merged.delta_weight(m, torch.float64), ref_tsv(deltas(many, m), 1.0, per_task=per)) < 1e-6
        assert rel(kept.delta_weight(m, torch.float64), ref_tsv(deltas(many, m), 1.0, per_task=min(per, 3))) < 1e-6


@pytest.mark.parametrize("method, kwargs, message", [
    ("iso_c", {"options": {"alpha": -1.0}}, r"alpha must be > 0"),
    ("iso_c", {"density": 0.5}, "'iso_c' does not take density; it takes alpha"),
    ("iso_cts", {"options": {"common_fraction": 1.5}}, r"common_fraction must be in \(0, 1\]"),
    ("iso_cts", {"options": {"common_fraction": "most"}}, "common_fraction must be a finite number"),
    ("tsv", {"options": {"keep": 0.0}}, r"keep must be in \(0, 1\]"),
    ("tsv", {"options": {"ratio": 2}}, "'tsv' does not take ratio; it takes alpha, keep"),
    ("knots_ties", {"density": 0.0}, r"density must be in \(0, 1\]"),
    ("knots_ties", {"lam": 0.5, "options": {"lambda": 0.5}}, "lambda given twice"),
])
def test_bad_parameters_are_refused(parts, method, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.merge(parts, method, **kwargs)
