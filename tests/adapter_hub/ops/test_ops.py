"""Adapter arithmetic against dense math: exact ops, factored SVD, mask-based methods vs plain dense
references written here, logits on a tiny model, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter_hub import LoraAdapter, LoraConfig, attach, ops
from adapter_hub.core.errors import IncompatibleAdaptersError
from adapter_hub.core.factors import ModuleFactors
from adapter_hub.core.identity import BaseModelIdentity
from adapter_hub.lora import lora_layers
from adapter_hub.ops.merge import core_bases
from adapter_hub.ops.methods.masked import generalized

SHAPES = {"layer.q": (12, 10), "layer.up": (16, 10), "layer.down": (10, 16)}  # module -> (out, in)
IDENTITY = BaseModelIdentity("toy", "sha256:" + "0" * 64, (0.1,))


def random_adapter(seed: int, r: int = 4, alpha: float = 8.0, rslora: bool = False, shapes=SHAPES,
                   identity=IDENTITY, dtype=torch.float32) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = {m: ModuleFactors(torch.randn(r, i, generator=g, dtype=dtype), torch.randn(o, r, generator=g, dtype=dtype))
               for m, (o, i) in shapes.items()}
    config = LoraConfig(r=r, alpha=alpha, use_rslora=rslora, target_modules=sorted(shapes))
    return LoraAdapter(modules, config, identity)


def dense(adapter: LoraAdapter, module: str) -> torch.Tensor:
    return adapter.delta_weight(module, torch.float64)


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).norm() / max(float(y.norm()), 1e-30))


adapter_spec = st.tuples(st.integers(1, 6), st.floats(0.5, 64.0), st.booleans(), st.floats(-3.0, 3.0))


# ---- exact ops ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(adapter_spec, min_size=1, max_size=4), st.integers(0, 10_000))
def test_linear_equals_dense_weighted_sum(specs, seed):
    adapters = [random_adapter(seed + i, r, a, rs) for i, (r, a, rs, _) in enumerate(specs)]
    weights = [w for *_, w in specs]
    merged = ops.linear(adapters, weights)
    for m in SHAPES:
        expected = sum(w * dense(a, m) for a, w in zip(adapters, weights))
        assert torch.allclose(dense(merged, m), expected, rtol=0, atol=1e-5 * max(1.0, float(expected.abs().max())))
        assert merged.ranks[m] == sum(r for r, *_ in specs)
        assert merged.scaling(m) == 1.0


@settings(max_examples=40, deadline=None)
@given(adapter_spec, adapter_spec, st.integers(0, 10_000))
def test_add_subtract_scale_negate(spec_a, spec_b, seed):
    a = random_adapter(seed, *spec_a[:3])
    b = random_adapter(seed + 1, *spec_b[:3])
    factor = spec_a[3]
    for m in SHAPES:
        da, db = dense(a, m), dense(b, m)
        scale_ = max(1.0, float(da.abs().max()), float(db.abs().max()))
        assert torch.allclose(dense(ops.add(a, b), m), da + db, atol=1e-5 * scale_, rtol=0)
        assert torch.allclose(dense(ops.subtract(a, b), m), da - db, atol=1e-5 * scale_, rtol=0)
        assert torch.allclose(dense(ops.scale(a, factor), m), factor * da, atol=1e-5 * scale_ * max(1, abs(factor)), rtol=0)
        assert torch.allclose(dense(ops.negate(a), m), -da, atol=1e-5 * scale_, rtol=0)
        assert float(dense(ops.add(a, ops.negate(a)), m).abs().max()) <= 1e-5 * scale_


def test_task_arithmetic_scales_by_lambda():
    a, b = random_adapter(0), random_adapter(1, r=2, alpha=3)
    merged = ops.task_arithmetic([a, b], [1.0, 0.5], lam=0.4)
    for m in SHAPES:
        assert rel(dense(merged, m), 0.4 * (dense(a, m) + 0.5 * dense(b, m))) < 1e-6


# ---- factored SVD ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(adapter_spec, min_size=1, max_size=4), st.integers(0, 10_000), st.integers(1, 8))
def test_reduce_rank_matches_dense_svd(specs, seed, k):
    adapters = [random_adapter(seed + i, r, a, rs) for i, (r, a, rs, _) in enumerate(specs)]
    merged = ops.linear(adapters, [w for *_, w in specs])
    total = sum(r for r, *_ in specs)
    full = ops.reduce_rank(merged, rank=min(total, 10))  # 10 = the smallest layer dimension
    k = min(k, total, 10)
    reduced = ops.reduce_rank(merged, rank=k)
    for m in SHAPES:
        target = dense(merged, m)
        U, S, Vh = torch.linalg.svd(target)
        if total <= 10:  # full rank: exact
            assert rel(dense(full, m), target) < 1e-5
        best = (U[:, :k] * S[:k]) @ Vh[:k]
        ours = dense(reduced, m)
        assert rel(torch.linalg.svdvals(ours)[:k], S[:k]) < 1e-4
        next_s = float(S[k]) if k < S.numel() else 0.0
        if float(S[k - 1]) - next_s > 1e-6 * float(S[0]):  # a unique best approximation exists
            assert rel(ours, best) < 1e-4
        power = float((S**2).sum())
        expected_error = 0.0 if power == 0 else float((S[k:] ** 2).sum() / power) ** 0.5
        assert reduced.provenance["relative_error"][m] == pytest.approx(expected_error, abs=1e-6)


def test_reduce_rank_by_energy_and_budget():
    a = ops.linear([random_adapter(0, r=4), random_adapter(1, r=4)])
    by_energy = ops.reduce_rank(a, energy=0.9)
    for m in SHAPES:
        S = torch.linalg.svdvals(dense(a, m))
        kept = (S**2).cumsum(0) / (S**2).sum()
        k = by_energy.ranks[m]
        assert kept[k - 1] >= 0.9 - 1e-9 and (k == 1 or kept[k - 2] < 0.9)
    budget = sum(o + i for o, i in SHAPES.values()) * 3
    by_budget = ops.reduce_rank(a, budget=budget)
    used = sum(f.A.numel() + f.B.numel() for f in by_budget.modules.values())
    assert used <= budget and all(r >= 1 for r in by_budget.ranks.values())
    assert used > budget - max(o + i for o, i in SHAPES.values())  # greedy fills the budget


def test_reduce_rank_works_for_bf16_storage():
    a = random_adapter(0, r=4).to(dtype=torch.bfloat16)
    out = ops.reduce_rank(a, rank=2)
    assert next(iter(out.modules.values())).A.dtype == torch.bfloat16


# ---- mask-based methods vs plain dense references -------------------------------------------------


def ref_topk(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the k = int(density·numel) largest-magnitude entries (ties broken by sort order)."""
    flat = t.flatten()
    k = int(density * flat.numel())
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().argsort(descending=True)[:k]] = True
    return (flat * keep).reshape(t.shape)


def ref_ties(tensors, weights, density, divisor="count", election="unweighted"):
    """TIES-Merging (Yadav et al. 2023) written entry by entry: the sign is elected on the trimmed task
    vectors (the paper's step 2), then the agreeing ones are weighted and averaged; election="weighted"
    elects on the weighted vectors (mergekit); divisor="weights" divides by the agreeing weights' signed
    sum (mergekit's normalize, ~0 counting as 1)."""
    trimmed = [ref_topk(t, density) for t in tensors]
    out = torch.zeros_like(tensors[0])
    for idx in range(out.numel()):
        values = [float(x.flatten()[idx]) for x in trimmed]
        voters = values if election == "unweighted" else [v * w for v, w in zip(values, weights)]
        elected = 1.0 if sum(voters) >= 0 else -1.0
        agree = [(v * w, w) for v, vote, w in zip(values, voters, weights) if vote != 0 and math.copysign(1, vote) == elected]
        if agree:
            denom = len(agree) if divisor == "count" else sum(w for _, w in agree)
            out.view(-1)[idx] = sum(x for x, _ in agree) / (1.0 if abs(denom) < 1e-8 else denom)
    return out


def ref_dare(tensors, weights, density, generator, elect):
    """DARE (Yu et al. 2023): Bernoulli(density) keep mask, rescale 1/density; optional TIES step."""
    dropped = []
    for t in tensors:
        keep = torch.rand(t.shape, generator=generator) < density
        dropped.append(torch.where(keep, t / density, torch.zeros_like(t)))
    if not elect:
        return sum(w * d for d, w in zip(dropped, weights))
    sign = torch.where(sum(dropped) >= 0, 1.0, -1.0)  # elected on the unweighted, rescaled vectors
    agree = [(d.sign() == sign) for d in dropped]
    count = sum(a.double() for a in agree)
    weighted = sum(w * d * a for d, w, a in zip(dropped, weights, agree))
    return torch.where(count > 0, weighted / count.clamp(min=1), torch.zeros_like(weighted))


@pytest.fixture
def task_tensors():
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 6, 5, generator=g, dtype=torch.float64), [1.0, 0.5, -0.8]


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("divisor", ["count", "weights"])
@pytest.mark.parametrize("election", ["unweighted", "weighted"])
def test_ties_equals_reference(task_tensors, density, divisor, election):
    tensors, weights = task_tensors
    ours = generalized(tensors, torch.tensor(weights), density=density, how="magnitude", elect=True, divisor=divisor,
                       election=election)
    torch.testing.assert_close(ours, ref_ties(list(tensors), weights, density, divisor, election))


@pytest.mark.parametrize("weights", [[1.0, 0.5, 0.2], [1.0, 0.5, -0.8], [0.3, 0.3, 0.3]])
@pytest.mark.parametrize("density", [0.3, 0.7, 1.0])
def test_ties_default_equals_peft(weights, density):
    """Our default TIES (elect on the trimmed vectors, then weight, divide by the agreeing count) is
    PEFT's merge_utils.ties on the same dense tensors; the weighted election is a different method."""
    from peft.utils.merge_utils import ties as peft_ties

    tensors = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    theirs = peft_ties(list(tensors), torch.tensor(weights, dtype=torch.float64), density)
    ours = generalized(tensors, torch.tensor(weights), density=density, how="magnitude", elect=True)
    torch.testing.assert_close(ours, theirs)
    weighted = generalized(tensors, torch.tensor(weights), density=density, how="magnitude", elect=True,
                           election="weighted")
    if weights == [1.0, 0.5, 0.2]:  # unequal weights: the two election orders disagree somewhere
        assert (weighted != theirs).any()


@pytest.mark.parametrize("elect", [False, True])
def test_dare_equals_reference(task_tensors, elect):
    tensors, weights = task_tensors
    ours = generalized(tensors, torch.tensor(weights), density=0.4, how="random", elect=elect,
                       generator=torch.Generator().manual_seed(3))
    expected = ref_dare(list(tensors), weights, 0.4, torch.Generator().manual_seed(3), elect)
    torch.testing.assert_close(ours, expected)


def test_magnitude_prune_equals_reference(task_tensors):
    tensors, weights = task_tensors
    ours = generalized(tensors, torch.tensor(weights), density=0.3, how="magnitude", elect=False)
    torch.testing.assert_close(ours, sum(w * ref_topk(t, 0.3) for t, w in zip(tensors, weights)))


def test_dense_merge_of_whole_adapters_matches_references():
    """merge() on adapters = the reference applied to each module's dense ΔW (full rank: exact factoring)."""
    a, b, c = random_adapter(0, r=3), random_adapter(1, r=5, alpha=2, rslora=True), random_adapter(2, r=2)
    weights = [1.0, -0.5, 2.0]
    ties = ops.merge([a, b, c], "ties", weights, density=0.3, rank=10)
    mp = ops.merge([a, b, c], "magnitude_prune", weights, density=0.5, rank=10)
    for m in SHAPES:
        deltas = [dense(x, m) for x in (a, b, c)]
        assert rel(dense(ties, m), ref_ties(deltas, weights, 0.3)) < 1e-5
        assert rel(dense(mp, m), sum(w * ref_topk(d, 0.5) for d, w in zip(deltas, weights))) < 1e-5
    dare1 = ops.merge([a, b, c], "dare_ties", weights, density=0.5, seed=11, rank=10)
    dare2 = ops.merge([a, b, c], "dare_ties", weights, density=0.5, seed=11, rank=10)
    dare3 = ops.merge([a, b, c], "dare_ties", weights, density=0.5, seed=12, rank=10)
    m = "layer.up"
    assert torch.equal(dense(dare1, m), dense(dare2, m)) and not torch.allclose(dense(dare1, m), dense(dare3, m))


def test_core_space_is_lossless_for_linear_and_cheap_for_masks():
    a, b = random_adapter(0, r=3), random_adapter(1, r=2, alpha=5)
    for m in SHAPES:  # each input is reconstructed exactly from its core
        pairs = [((x.modules[m].A.double(), x.modules[m].B.double() * x.scaling(m)), 1.0) for x in (a, b)]
        U_B, V_A = core_bases(pairs)
        for (A, B), _ in pairs:
            core = U_B.T @ B @ A @ V_A
            assert rel(U_B @ core @ V_A.T, B @ A) < 1e-10
    core_lin = ops.merge([a, b], "linear", [0.3, 0.7], space="core")
    dense_lin = ops.merge([a, b], "linear", [0.3, 0.7])
    core_ties = ops.merge([a, b], "ties", density=0.5, space="core")
    for m in SHAPES:
        assert rel(dense(core_lin, m), dense(dense_lin, m)) < 1e-6
        assert core_ties.ranks[m] == 5 and torch.isfinite(dense(core_ties, m)).all()


# ---- on a model: logits move as the arithmetic predicts -------------------------------------------


def _trained_like(model, name, seed):
    attach(model, LoraConfig(r=4, alpha=8), name=name, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B[name].copy_(torch.randn(layer.lora_B[name].shape, generator=g) * 0.03)
    return LoraAdapter.from_model(model, name)


def test_merged_adapters_change_logits_as_predicted(tiny_model):
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    source = tiny_model()
    a = _trained_like(source, "a", 1)
    base = tiny_model()(x).logits
    zero = attach(tiny_model(), ops.subtract(a, a), name="z")
    torch.testing.assert_close(zero(x).logits, base, atol=1e-5, rtol=0)
    doubled = attach(tiny_model(), ops.scale(a, 2.0), name="d")(x).logits
    a2 = LoraAdapter(a.modules, LoraConfig(r=4, alpha=16, target_modules=a.config.target_modules), a.base_model)
    alpha_doubled = attach(tiny_model(), a2, name="a2")(x).logits
    torch.testing.assert_close(doubled, alpha_doubled, atol=1e-5, rtol=0)
    assert (doubled - base).abs().max() > 1e-2


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, message", [
    (lambda a, b: ops.merge([], "linear"), ValueError, "at least one adapter"),
    (lambda a, b: ops.merge([a, b], "linear", [1.0]), ValueError, "2 adapters but 1 weights"),
    (lambda a, b: ops.merge([a, b], "linear", [1.0, float("nan")]), ValueError, "finite"),
    (lambda a, b: ops.merge([a, b], "ties"), ValueError, "needs density"),
    (lambda a, b: ops.merge([a, b], "ties", density=0.0), ValueError, r"density must be in \(0, 1\]"),
    (lambda a, b: ops.merge([a, b], "ties", density=1.5), ValueError, r"density must be in \(0, 1\]"),
    (lambda a, b: ops.merge([a, b], "nope"), ValueError, "unknown merge method 'nope'"),
    (lambda a, b: ops.merge([a, b], "linear", rank=0), ValueError, "rank must be an integer >= 1"),
    (lambda a, b: ops.reduce_rank(a, rank=99), ValueError, "rank 99 is more than the 4 available"),
    (lambda a, b: ops.reduce_rank(a, energy=1.5), ValueError, "energy"),
    (lambda a, b: ops.reduce_rank(a), ValueError, "exactly one of"),
    (lambda a, b: ops.reduce_rank(a, budget=10), ValueError, "below the"),
    (lambda a, b: ops.scale(a, float("inf")), ValueError, "finite"),
    (lambda a, b: ops.merge([a, b], "linear", space="astral"), ValueError, "space must be"),
    (lambda a, b: ops.merge([a, b], "linear", lam=0.5), ValueError,
     "merge method 'linear' does not take lambda; it takes no parameters"),
    (lambda a, b: ops.merge([a, b], "linear", density=0.5), ValueError, "'linear' does not take density"),
    (lambda a, b: ops.merge([a, b], "dare_linear", density=0.5, divisor="count"), ValueError,
     "'dare_linear' does not take divisor; it takes density, lambda"),
    (lambda a, b: ops.merge([a, b], "task_arithmetic", density=0.5), ValueError, "it takes lambda"),
    (lambda a, b: ops.merge([a, b], "ties", density=0.5, divisor="mean"), ValueError, "divisor must be one of"),
    (lambda a, b: ops.merge([a, b], "ties", density=0.5, elect="loudest"), ValueError, "elect must be one of"),
])
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(random_adapter(0), random_adapter(1))


def test_incompatible_adapters():
    a = random_adapter(0)
    other_base = random_adapter(1, identity=BaseModelIdentity("other", "sha256:" + "1" * 64, (0.1,)))
    with pytest.raises(IncompatibleAdaptersError, match="different base models"):
        ops.merge([a, other_base])
    other_shape = random_adapter(2, shapes={**SHAPES, "layer.q": (12, 11)})
    with pytest.raises(IncompatibleAdaptersError, match="layer.q has different shapes"):
        ops.linear([a, other_shape])
    partial = random_adapter(3, shapes={"layer.q": SHAPES["layer.q"]})
    with pytest.raises(IncompatibleAdaptersError, match="target different modules.*allow_partial"):
        ops.add(a, partial)
    merged = ops.add(a, partial, allow_partial=True)  # missing modules count as zero
    assert rel(dense(merged, "layer.up"), dense(a, "layer.up")) < 1e-6
    assert rel(dense(merged, "layer.q"), dense(a, "layer.q") + dense(partial, "layer.q")) < 1e-6


# ---- compose --------------------------------------------------------------------------------------


@pytest.mark.parametrize("expression, expected", [
    ("0.5*agnews:3 + 0.5*yelp@best - 0.2*toxic", {"agnews:3": 0.5, "yelp@best": 0.5, "toxic": -0.2}),
    ("a", {"a": 1.0}),
    ("-a", {"a": -1.0}),
    ("2*(a - b)/4 + -c", {"a": 0.5, "b": -0.5, "c": -1.0}),
    ("a + a - 0.5 * a", {"a": 1.5}),
    ("a-b", {"a-b": 1.0}),  # one task named "a-b"
    ("1e-1*sha256:0123abcd", {"sha256:0123abcd": 0.1}),
    ("(a + b) * 3", {"a": 3.0, "b": 3.0}),
])
def test_compose_parses_linear_expressions(expression, expected):
    assert ops.parse(expression) == pytest.approx(expected)


@pytest.mark.parametrize("expression, column, message", [
    ("0.5*", 5, "expected a reference, a number or '\\(', found the end"),
    ("a * b", 3, "cannot multiply two adapters"),
    ("a + 1", 3, "cannot add a number to an adapter"),
    ("(a + b", 7, "expected '\\)'"),
    ("a $ b", 3, "unexpected character '\\$'"),
    ("", 1, "empty expression"),
    ("a / b", 3, "cannot divide by an adapter"),
    ("a / 0", 3, "division by zero"),
    ("2 * 3", 1, "bare number"),
    ("a b", 3, "expected an operator or the end"),
    ("(" * 10_000 + "a" + ")" * 10_000, 101, "nested more than 100 levels deep"),
    ("-" * 10_000 + "a", 101, "nested more than 100 levels deep"),
])
def test_compose_syntax_errors_show_the_column(expression, column, message):
    with pytest.raises(ops.ComposeSyntaxError, match=message) as info:
        ops.parse(expression)
    assert info.value.column == column and f"column {column}:" in str(info.value)


def test_compose_evaluates_exactly_and_hints_at_minus():
    store = {"a": random_adapter(0), "b": random_adapter(1, r=2)}
    result = ops.compose("0.5*a - 2*b", resolve=store.__getitem__)
    for m in SHAPES:
        assert rel(dense(result, m), 0.5 * dense(store["a"], m) - 2 * dense(store["b"], m)) < 1e-6
    with pytest.raises(KeyError, match="put spaces around the minus"):
        ops.compose("a-b", resolve=store.__getitem__)


def test_magnitude_mask_keeps_exactly_k_even_with_ties():
    from adapter_hub.ops.methods.masked import magnitude_mask

    t = torch.tensor([0.5, -2.0, 0.5, 3.0, 0.5, 0.0, -0.5, 1.0])
    mask = magnitude_mask(t, 0.5)  # k = 4: 3.0, -2.0, 1.0 and one of the four |0.5|
    assert int(mask.sum()) == 4 and mask[[1, 3, 7]].all() and int(mask[[0, 2, 4, 6]].sum()) == 1
    assert int(magnitude_mask(torch.zeros(10), 0.3).sum()) == 3
    big = torch.randn(1000, 300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(magnitude_mask(big, 0.3), ref_topk(big, 0.3) != 0)


TRIM_PROBE = """
import ctypes, ctypes.util, importlib, json, os, torch
torch.set_num_threads(1)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallopt(-3, 256 * 2**20)  # M_MMAP_THRESHOLD: blocks under 256 MB come from the heap, as a merge's fp64 work did
libc.mallopt(-1, 2**30)        # M_TRIM_THRESHOLD: free() alone never gives the heap back
merge = importlib.import_module("adapter_hub.ops.merge")
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
keep, work = [], []
for _ in range(64):  # 2 MB temporaries with small long-lived results between them, as in a merge
    work.append(torch.ones(2**19))
    keep.append(torch.ones(256))
del work  # 128 MB freed, still resident
before = resident_mb()
merge._release_freed_memory(torch.device("cpu"))
print(json.dumps({"before": before, "after": resident_mb()}))
"""


def test_the_trim_a_merge_calls_gives_freed_heap_memory_back():
    """The real call, measured: 128 MB of freed temporaries held between live tensors stay resident
    until the trim that ops.merge runs every TRIM_EVERY modules; after it, the process's resident
    memory is at least 100 MB lower (glibc only: elsewhere there is no malloc_trim to call)."""
    import importlib
    import json
    import subprocess
    import sys

    if importlib.import_module("adapter_hub.ops.merge")._malloc_trim() is None:
        pytest.skip("not glibc: ops.merge has no heap trim to call here")
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout)
    assert measured["before"] - measured["after"] >= 100, measured


def test_a_long_merge_trims_the_heap_every_few_modules(monkeypatch):
    """ops.merge calls the trim every TRIM_EVERY modules (glibc kept a 7B merge's freed fp64 work
    resident; the test above shows what the call gives back); the result is the same as without it."""
    import importlib

    merge_module = importlib.import_module("adapter_hub.ops.merge")
    g = torch.Generator().manual_seed(0)

    def adapter():
        modules = {f"layer{i}.proj": ModuleFactors(torch.randn(2, 6, generator=g), torch.randn(5, 2, generator=g))
                   for i in range(20)}
        return LoraAdapter(modules, LoraConfig(r=2, alpha=4, target_modules=sorted(modules)))

    adapters = [adapter(), adapter()]
    calls = []
    monkeypatch.setattr(merge_module, "_release_freed_memory", lambda device: calls.append(device.type))
    trimmed = ops.merge(adapters, "iso_c")
    assert calls == ["cpu"] * (20 // merge_module.TRIM_EVERY)
    monkeypatch.setattr(merge_module, "TRIM_EVERY", 10**9)
    untrimmed = ops.merge(adapters, "iso_c")
    for m, f in trimmed.modules.items():
        assert torch.equal(f.A, untrimmed.modules[m].A) and torch.equal(f.B, untrimmed.modules[m].B)
    if merge_module._malloc_trim() is not None:  # glibc: the real call runs
        merge_module._release_freed_memory(torch.device("cpu"))
