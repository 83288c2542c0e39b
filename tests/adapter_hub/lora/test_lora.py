"""The LoRA engine against dense math: init, merge/unmerge, multi-adapter weights, routing, detach."""

from __future__ import annotations

import math

import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig, attach
from adapter_hub.core.errors import (
    IncompatibleAdaptersError,
    NonFiniteError,
    TargetModuleError,
)
from adapter_hub.lora import (
    LoraLayer,
    adapters_disabled,
    detach,
    disable_adapters,
    list_adapters,
    lora_layers,
    lora_parameters,
    merge_adapter,
    route,
    set_active,
    unmerge_adapter,
)

MODELS = ["tiny-llama", "tiny-gpt2"]


def _ids(seed=0, rows=4, length=12):
    return torch.randint(0, 256, (rows, length), generator=torch.Generator().manual_seed(seed))


def _randomise_B(model, name, std=0.05, seed=0):
    """Fresh adapters have B = 0 (ΔW = 0); give them a non-trivial ΔW for the tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            if name in layer.lora_B:
                layer.lora_B[name].copy_(torch.randn(layer.lora_B[name].shape, generator=g) * std)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", MODELS)
def test_fresh_adapter_leaves_logits_exactly_unchanged(tiny_model, name):
    model = tiny_model(name)
    x = _ids()
    base = model(x).logits
    attach(model, LoraConfig(r=8), name="a", seed=0)
    assert torch.equal(model(x).logits, base)
    layer = next(layer for _, layer in lora_layers(model))
    assert torch.count_nonzero(layer.lora_B["a"]) == 0
    # A follows nn.Linear's Kaiming-uniform(a=√5): bound = 1/sqrt(fan_in)
    bound = 1 / math.sqrt(layer.in_features)
    assert layer.lora_A["a"].abs().max() <= bound and layer.lora_A["a"].abs().max() > 0.5 * bound


@pytest.mark.parametrize("name", MODELS)
def test_all_linear_targets_every_linear_but_the_head(tiny_model, name):
    model = tiny_model(name)
    attach(model, LoraConfig(r=2), name="a")
    wrapped = [n for n, _ in lora_layers(model)]
    expected = 14 if name == "tiny-llama" else 8  # 7 per Llama layer, 4 Conv1D per GPT-2 block; 2 layers
    assert len(wrapped) == expected
    assert not any("lm_head" in n for n in wrapped)


def test_regex_and_list_targets(tiny_model):
    model = tiny_model()
    attach(model, LoraConfig(r=2, target_modules=r".*\.(q_proj|v_proj)"), name="a")
    assert sorted(n.rsplit(".", 1)[1] for n, _ in lora_layers(model)) == ["q_proj"] * 2 + ["v_proj"] * 2
    attach(model, LoraConfig(r=2, target_modules=["o_proj", "model.layers.0.mlp.down_proj"]), name="b", activate="add")
    b_modules = [n for n, layer in lora_layers(model) if "b" in layer.lora_A]
    assert sorted(b_modules) == ["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.o_proj",
                                 "model.layers.1.self_attn.o_proj"]


@pytest.mark.parametrize("name", MODELS)
def test_delta_matches_dense_math(tiny_model, name):
    """Each wrapped layer computes base(x) + s·x·Aᵀ·Bᵀ, with s = alpha/r or alpha/√r (rsLoRA)."""
    for rslora in (False, True):
        model = tiny_model(name)
        attach(model, LoraConfig(r=4, alpha=12, use_rslora=rslora), name="a", seed=1)
        _randomise_B(model, "a")
        module_name, layer = next(iter(lora_layers(model)))
        s = 12 / (2.0 if rslora else 4.0)
        assert layer.scaling["a"] == pytest.approx(s)
        x = torch.randn(3, 5, layer.in_features)
        W = layer.base_layer.weight.T if layer.fan_in_fan_out else layer.base_layer.weight  # (out, in)
        bias = layer.base_layer.bias if layer.base_layer.bias is not None else 0.0
        dense = x @ (W + s * layer.lora_B["a"] @ layer.lora_A["a"]).T + bias
        torch.testing.assert_close(layer(x), dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_merge_then_unmerge_restores_base_weights(tiny_model, name):
    model = tiny_model(name)
    x = _ids()
    base_logits = model(x).logits
    before = _state(model)
    attach(model, LoraConfig(r=8), name="a", seed=0)
    _randomise_B(model, "a", std=0.02)  # a trained adapter's scale; fp32 rounding grows with |ΔW|
    attached_logits = model(x).logits
    assert (attached_logits - base_logits).abs().max() > 1e-2  # the adapter really changes the output
    merge_adapter(model, "a")
    # fp32 rounding of W + ΔW versus W·x + ΔW·x, relative to the logits' own size (|logits| ~ 4 here):
    # 1e-5 of the largest logit is ~80 float32 steps; a wrong merge moves logits by > 1e-2 (above)
    atol = 1e-5 * max(1.0, float(attached_logits.abs().max()))
    torch.testing.assert_close(model(x).logits, attached_logits, atol=atol, rtol=0)
    unmerge_adapter(model, "a")
    disable_adapters(model)
    detach(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert (after[key] - before[key]).abs().max() <= 1e-5, key
    torch.testing.assert_close(model(x).logits, base_logits, atol=1e-5, rtol=0)


def test_merge_refuses_non_finite_and_changes_nothing(tiny_model):
    model = tiny_model()
    attach(model, LoraConfig(r=4), name="a")
    _, layer = list(lora_layers(model))[-1]
    with torch.no_grad():
        layer.lora_B["a"][0, 0] = float("inf")
    before = _state(model)
    with pytest.raises(NonFiniteError, match="NaN/inf"):
        merge_adapter(model, "a")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_weighted_active_adapters_equal_weighted_merge(tiny_model):
    """Σ_k w_k·s_k·B_k·A_k through the forward equals merging each with its weight (checked in fp64,
    where the only difference left is summation order)."""
    model = tiny_model().double()
    x = _ids(1)
    attach(model, LoraConfig(r=4), name="a", seed=1, dtype=torch.float64)
    attach(model, LoraConfig(r=6, alpha=8), name="b", seed=2, activate="add", dtype=torch.float64)
    _randomise_B(model, "a", seed=1)
    _randomise_B(model, "b", seed=2)
    set_active(model, ["a", "b"], weights=[1.0, -0.5])
    combined = model(x).logits
    merge_adapter(model, "a", weight=1.0)
    merge_adapter(model, "b", weight=-0.5)
    torch.testing.assert_close(model(x).logits, combined, atol=1e-10, rtol=0)


def test_unmerge_removes_what_was_merged_with_its_weight(tiny_model):
    """Merged with weight 0.3, unmerged: the base comes back (an unmerge that ignored the stored weight
    would leave 0.7·ΔW behind); out of merge order too."""
    model = tiny_model().double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attach(model, LoraConfig(r=4), name="a", seed=1, dtype=torch.float64)
    attach(model, LoraConfig(r=4), name="b", seed=2, dtype=torch.float64)
    _randomise_B(model, "a", seed=1, std=0.2)
    _randomise_B(model, "b", seed=2, std=0.2)
    merge_adapter(model, "a", weight=0.3)
    merge_adapter(model, "b", weight=-1.7)
    unmerge_adapter(model, "a")  # not the most recent
    unmerge_adapter(model, "b")
    detach(model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=1e-12, rtol=0)


def test_bf16_merge_then_unmerge_is_bit_identical(tiny_model):
    model = tiny_model().to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attach(model, LoraConfig(r=8), name="a", seed=0)
    _randomise_B(model, "a", std=0.05)
    for weight in (1.0, 0.37):
        originals = [layer.base_layer.weight.clone() for _, layer in lora_layers(model)]
        merge_adapter(model, "a", weight=weight)
        changed = max(float((layer.base_layer.weight.float() - w.float()).abs().max())
                      for (_, layer), w in zip(lora_layers(model), originals))
        assert changed > 1e-3  # the merge really moved bf16 weights
        unmerge_adapter(model, "a")
    detach(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("rows", [
    ["a", "b", None, "c", "a", None, "b"],  # interleaved
    ["b", "b", "a", "a", "a", None, "c"],  # one block per adapter (the evaluator's layout)
])
@pytest.mark.parametrize("grad", [True, False])  # training's out-of-place add, inference's in-place add
def test_routing_matches_each_adapter_alone(tiny_model, name, rows, grad):
    model = tiny_model(name)
    x = _ids(2, rows=7)
    base = model(x).logits
    for i, (adapter, r) in enumerate([("a", 4), ("b", 8), ("c", 2)]):
        attach(model, LoraConfig(r=r, alpha=2 * r), name=adapter, seed=i)
        _randomise_B(model, adapter, seed=i)
    alone = {}
    for adapter in "abc":
        set_active(model, adapter)
        alone[adapter] = model(x).logits
    alone[None] = base
    set_active(model, ["a", "c"])  # routing overrides whatever is active
    with torch.set_grad_enabled(grad), route(model, rows):
        mixed = model(x).logits
    for i, adapter in enumerate(rows):
        torch.testing.assert_close(mixed[i], alone[adapter][i], atol=1e-5, rtol=0)
    assert not any(layer.rows for _, layer in lora_layers(model))  # the block cleans up


def test_routing_cache_follows_the_model_to_another_dtype(tiny_model):
    """model.double() swaps each parameter's storage behind the same Parameter object: a routed forward
    after it must use float64 stacks (a stale float32 cache would fail or silently lose precision)."""
    model = tiny_model()
    x = _ids(3, rows=3)
    for i, adapter in enumerate("ab"):
        attach(model, LoraConfig(r=4, alpha=8), name=adapter, seed=i)
        _randomise_B(model, adapter, seed=i)
    with torch.no_grad(), route(model, ["a", "b", None]):
        model(x)  # fills the cache in float32
    model.double()
    with torch.no_grad(), route(model, ["a", "b", None]):
        routed = model(x).logits
    _, layer = next(iter(lora_layers(model)))
    (_, A_t, B_t), = layer._stack_cache.values()
    assert A_t.dtype == B_t.dtype == torch.float64
    for i, adapter in enumerate(["a", "b"]):
        set_active(model, adapter)
        with torch.no_grad():
            torch.testing.assert_close(routed[i], model(x).logits[i], atol=1e-10, rtol=0)


@pytest.mark.parametrize("rows", [["a", None, "b", "a"], ["b", "a", "a", None]])
def test_routing_under_bf16_autocast(tiny_model, rows):
    """The mixed-precision branch (what CUDA evaluation runs), exercised with CPU autocast: each
    routed row is as close to its adapter's fp32 output as that adapter alone under bf16 is, and
    far from the other adapters' outputs."""
    model = tiny_model()
    x = _ids(4, rows=4)
    for i, adapter in enumerate("ab"):
        attach(model, LoraConfig(r=4, alpha=8), name=adapter, seed=i)
        _randomise_B(model, adapter, std=0.3, seed=i)
    fp32, bf16 = {}, {}
    with torch.no_grad():
        for adapter in (None, "a", "b"):
            set_active(model, [adapter] if adapter else [])
            fp32[adapter] = model(x).logits
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16[adapter] = model(x).logits.float()
        with torch.autocast("cpu", dtype=torch.bfloat16), route(model, rows):
            mixed = model(x).logits.float()
    for i, adapter in enumerate(rows):
        noise = (bf16[adapter][i] - fp32[adapter][i]).abs().max()  # what bf16 alone costs this row
        assert (mixed[i] - fp32[adapter][i]).abs().max() <= 2 * noise + 1e-2
        for other in {None, "a", "b"} - {adapter}:
            assert (mixed[i] - fp32[other][i]).abs().max() > 4 * noise


def test_routing_with_adapters_on_different_modules(tiny_model):
    model = tiny_model()
    x = _ids(3, rows=3)
    attach(model, LoraConfig(r=4, target_modules=["q_proj"]), name="q", seed=1)
    attach(model, LoraConfig(r=4, target_modules=["down_proj"]), name="d", seed=2)
    _randomise_B(model, "q", seed=1)
    _randomise_B(model, "d", seed=2)
    expected = []
    for adapter in ("q", "d"):
        set_active(model, adapter)
        expected.append(model(x).logits)
    with route(model, ["q", "d", "q"]):
        mixed = model(x).logits
    torch.testing.assert_close(mixed[0], expected[0][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1], expected[1][1], atol=1e-5, rtol=0)


def test_routing_errors(tiny_model):
    model = tiny_model()
    attach(model, LoraConfig(r=2), name="a")
    with pytest.raises(KeyError, match="zzz"):
        with route(model, ["a", "zzz"]):
            pass
    with route(model, ["a", None]):
        with pytest.raises(ValueError, match="2 rows but the batch has 3"):
            model(_ids(rows=3))
    merge_adapter(model, "a")
    with pytest.raises(RuntimeError, match="merged"):
        with route(model, ["a"]):
            pass


def test_disabled_context_and_detach_restore_the_original_model(tiny_model):
    model = tiny_model()
    x = _ids()
    base = model(x).logits
    original_types = {n: type(m) for n, m in model.named_modules()}
    attach(model, LoraConfig(r=4), name="a")
    attach(model, LoraConfig(r=4), name="b", activate="add")
    _randomise_B(model, "a")
    with adapters_disabled(model):
        assert torch.equal(model(x).logits, base)
    assert not torch.equal(model(x).logits, base)
    detach(model, "a")
    assert list_adapters(model) == ["b"]
    detach(model)
    assert list_adapters(model) == []
    assert {n: type(m) for n, m in model.named_modules()} == original_types
    assert all(not isinstance(m, LoraLayer) for m in model.modules())
    assert torch.equal(model(x).logits, base)


def test_only_the_new_adapter_trains(tiny_model):
    model = tiny_model()
    attach(model, LoraConfig(r=4), name="old")
    attach(model, LoraConfig(r=4), name="new", trainable=True, activate="add")
    # attaching freezes the base model only: the first adapter is still trainable
    assert all(p.requires_grad for p in lora_parameters(model, ["old"]))
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    from adapter_hub.lora import set_trainable

    set_trainable(model, ["new"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".new" in n for n in trainable)
    loss = model(_ids()).logits.sum()
    loss.backward()
    assert all(p.grad is not None for p in lora_parameters(model, ["new"]))
    assert all(p.grad is None for p in lora_parameters(model, ["old"]))


@pytest.mark.parametrize("bad, error, message", [
    (dict(r=0), ValueError, "positive integer"),
    (dict(r=-3), ValueError, "positive integer"),
    (dict(alpha=float("nan")), ValueError, "finite"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(target_modules="(unclosed"), ValueError, "not a valid regex"),
    (dict(target_modules=[]), ValueError, "non-empty"),
])
def test_bad_config_is_rejected(bad, error, message):
    with pytest.raises(error, match=message):
        LoraConfig(**bad)


@pytest.mark.parametrize("targets, message", [
    (["nonexistent_proj"], "'nonexistent_proj' not found"),
    (r".*\.nothing_here", "matched no module"),
    (["model.layers.0.input_layernorm"], "LlamaRMSNorm; LoRA wraps only"),
])
def test_unknown_target_module_changes_nothing(tiny_model, targets, message):
    model = tiny_model()
    before = _state(model)
    with pytest.raises(TargetModuleError, match=message):
        attach(model, LoraConfig(r=2, target_modules=targets), name="a")
    assert not any(isinstance(m, LoraLayer) for m in model.modules())
    assert list_adapters(model) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bad_adapter_names(tiny_model):
    model = tiny_model()
    attach(model, LoraConfig(r=2), name="a")
    with pytest.raises(ValueError, match="already attached"):
        attach(model, LoraConfig(r=2), name="a")
    with pytest.raises(ValueError, match="without '.'"):
        attach(model, LoraConfig(r=2), name="a.b")
    for reserved in ("eval", "train", "forward", "to"):
        with pytest.raises(ValueError, match="is reserved"):
            attach(model, LoraConfig(r=2), name=reserved)


def test_adapter_for_another_base_model_is_refused_before_any_change(tiny_model):
    llama, gpt2 = tiny_model("tiny-llama"), tiny_model("tiny-gpt2")
    attach(gpt2, LoraConfig(r=2), name="g")
    adapter = LoraAdapter.from_model(gpt2, "g")
    before = _state(llama)
    with pytest.raises(IncompatibleAdaptersError, match="architecture differs"):
        attach(llama, adapter, name="g")
    assert list_adapters(llama) == [] and all(torch.equal(v, before[k]) for k, v in llama.state_dict().items())

    # same architecture, different weights (another seed): caught by the weight probe
    other = tiny_model("tiny-llama")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    attach(tiny_model("tiny-llama"), LoraConfig(r=2), name="x")
    trained_on_original = LoraAdapter.from_model(attach(tiny_model("tiny-llama"), LoraConfig(r=2), name="x"), "x")
    with pytest.raises(IncompatibleAdaptersError, match="different weights"):
        attach(other, trained_on_original, name="x")
    assert list_adapters(other) == []


def test_identity_tells_a_fine_tuned_checkpoint_from_the_same_one_in_another_dtype(tiny_model, tokenizer):
    """A realistic second checkpoint: the base fine-tuned in full for 10 AdamW steps at lr 1e-4 (its
    weights move ~0.4% — the old 2e-2 relative tolerance called it the same model). The same
    checkpoint in bf16 or fp16 must still match."""
    from adapter_hub.core.identity import compute_identity
    from adapter_hub.data import load_task
    from adapter_hub.training import TrainConfig, train_task

    original = tiny_model()
    tuned = tiny_model()
    train_task(tuned, tokenizer, load_task("builtin:topic"), TrainConfig(lr=1e-4, steps=10, batch_size=8,
                                                                          warmup_ratio=0.0, progress=False))
    moved = max(float(((p - q).abs() / q.abs().clamp(min=1e-3)).median())
                for p, q in zip(tuned.parameters(), original.parameters()))
    assert 1e-3 < moved < 2e-2  # small, as a fine-tune's change is: inside the old tolerance
    ref = compute_identity(original)
    assert ref.mismatch(compute_identity(tuned)) == f"same architecture but different weights ({ref.name!r} vs {ref.name!r})"
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        assert ref.mismatch(compute_identity(tiny_model().to(dtype))) is None, dtype
        assert compute_identity(tiny_model().to(dtype)).mismatch(ref) is None, dtype


def test_adapter_with_wrong_shapes_is_refused(tiny_model):
    model = tiny_model()
    attach(model, LoraConfig(r=2), name="a")
    adapter = LoraAdapter.from_model(model, "a")
    first = sorted(adapter.modules)[0]
    adapter.modules[first].A = torch.zeros(2, 7)  # in_features 7 instead of 64
    adapter.base_model = None  # a PEFT-style adapter with no fingerprint: shapes are the only guard
    fresh = tiny_model()
    with pytest.raises(IncompatibleAdaptersError, match=r"adapter maps 7->"):
        attach(fresh, adapter, name="a")
    assert list_adapters(fresh) == []


def test_bf16_base_model_with_fp32_adapter(tiny_model):
    model = tiny_model().to(torch.bfloat16)
    attach(model, LoraConfig(r=4), name="a")
    _randomise_B(model, "a")
    out = model(_ids()).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert lora_parameters(model)[0].dtype == torch.float32


def test_routing_sees_factor_updates_and_supports_autograd(tiny_model):
    """Stacked factors are cached between route() blocks; an in-place update (an optimizer step)
    must invalidate them. The grad-enabled path must give the same numbers and real gradients."""
    model = tiny_model()
    x = _ids(4, rows=2)
    attach(model, LoraConfig(r=4), name="a", seed=0)
    attach(model, LoraConfig(r=4), name="b", seed=1)
    _randomise_B(model, "a", seed=0)
    with torch.no_grad(), route(model, ["a", "b"]):
        model(x)
    _randomise_B(model, "a", seed=9)  # in place, like optimizer.step()
    set_active(model, "a")
    expected = model(x).logits[0]
    with torch.no_grad(), route(model, ["a", "b"]):
        torch.testing.assert_close(model(x).logits[0], expected, atol=1e-5, rtol=0)
    _randomise_B(model, "b", seed=5)  # b's B is non-zero too: a leak of row 0's loss into b would show
    with route(model, ["a", "b"]):
        out = model(x).logits
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=0)
    out[0].sum().backward()
    routed_grads = [p.grad.clone() for p in lora_parameters(model, ["a"])]
    # row 0 is routed to "a": b's factors (A and B) get exactly no gradient from it
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in lora_parameters(model, ["b"]))
    # ...and a's gradients are those of row 0 through "a" alone, without routing (A's included: B ≠ 0)
    for p in lora_parameters(model):
        p.grad = None
    set_active(model, "a")
    model(x[:1]).logits[0].sum().backward()
    for g, ref in zip(routed_grads, [p.grad for p in lora_parameters(model, ["a"])]):
        assert ref.abs().sum() > 0
        torch.testing.assert_close(g, ref, atol=1e-3 * float(ref.abs().max()), rtol=1e-3)  # fp32, other batch shape
