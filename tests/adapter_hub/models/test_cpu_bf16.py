"""A bf16 base on a CPU without native bf16: its linear layers multiply in fp32 from the bf16 operands
and round to bf16, which is the product hardware bf16 computes (checked against fp64 dense math), and
load_base_model does this exactly where the CPU lacks native bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import adapter_hub.models.loading as loading
from adapter_hub.models.cpu_bf16 import Fp32MatmulLinear, multiply_bf16_in_fp32


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _layer(fan_in: int = 256, fan_out: int = 96, bias: bool = True) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same weights in every run
        layer = nn.Linear(fan_in, fan_out, bias=bias).to(torch.bfloat16).requires_grad_(False)
    multiply_bf16_in_fp32(layer)
    return layer


def _bf16_step(t: torch.Tensor) -> torch.Tensor:
    """bf16's spacing at each value of t (8 significant bits)."""
    return torch.ldexp(torch.ones_like(t), torch.frexp(t.abs().clamp_min(1e-30)).exponent - 8)


def _rounded_product(value: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether `value` is a @ b (+ bias) as fp32 summation then one rounding to bf16 computes it: within
    one bf16 step of the exact fp64 product, plus the fp32 sum's error bound K·2⁻²⁴·Σ|aᵢbᵢ|, which
    matters only where the terms cancel. Also true of torch's own bf16 kernel."""
    exact = a.double() @ b.double() + (0 if bias is None else bias.double())
    magnitude = a.double().abs() @ b.double().abs() + (0 if bias is None else bias.double().abs())
    allowed = torch.maximum(_bf16_step(exact), _bf16_step(value.double())) + a.shape[-1] * 2.0**-24 * magnitude
    return bool(((value.double() - exact).abs() <= allowed).all())


class MatmulDtypes(TorchDispatchMode):
    """The operand dtypes of every matmul torch runs underneath."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.dtype, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            self.seen.append(tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))
        return func(*args, **(kwargs or {}))


def test_the_product_is_the_exactly_rounded_bf16_product_computed_in_fp32():
    layer = _layer()
    x = _bf16(4, 7, 256, seed=1)
    with MatmulDtypes() as matmuls:
        y = layer(x)
    assert matmuls.seen and all(d == torch.float32 for dtypes in matmuls.seen for d in dtypes)  # not bf16's kernel
    assert y.dtype == torch.bfloat16 and y.shape == (4, 7, 96)
    assert _rounded_product(y, x, layer.weight.T, layer.bias)
    exact = x.double() @ layer.weight.double().T + layer.bias.double()  # fp64: no rounding until the end
    assert (y == exact.to(torch.bfloat16)).float().mean() > 0.99  # mostly the exactly rounded number itself
    native = nn.functional.linear(x, layer.weight, layer.bias)  # torch's own bf16 kernel, for comparison
    assert _rounded_product(native, x, layer.weight.T, layer.bias)


def test_the_input_gradient_is_the_rounded_product_too_and_a_trainable_weight_gets_its_gradient():
    layer = _layer(bias=False)
    x = _bf16(5, 256, seed=2).requires_grad_(True)
    upstream = _bf16(5, 96, seed=3)
    layer(x).backward(upstream)
    assert x.grad.dtype == torch.bfloat16 and _rounded_product(x.grad, upstream, layer.weight)

    layer.weight.requires_grad_(True)  # a full fine-tune: the upcast is part of the graph
    layer(x.detach()).backward(upstream)
    assert layer.weight.grad.dtype == torch.bfloat16 and _rounded_product(layer.weight.grad, upstream.T, x.detach())


def test_the_fp32_copy_is_reused_until_the_weight_changes_in_place():
    layer = _layer()
    x = _bf16(3, 256, seed=4)
    layer(x)
    first = layer.fp32_weight()
    assert layer.fp32_weight() is first  # reused: no conversion per call
    with torch.no_grad():
        layer.weight.add_(1.0)  # as merge_adapter does
    after = layer(x)
    assert layer.fp32_weight() is not first and _rounded_product(after, x, layer.weight.T, layer.bias)


def test_a_copy_made_under_inference_mode_can_serve_a_training_step_later():
    layer = _layer()
    x = _bf16(3, 256, seed=5)
    with torch.inference_mode():
        layer(x)  # scoring first, as a run does before training
    h = x.clone().requires_grad_(True)
    layer(h).sum().backward()  # would raise "inference tensors cannot be saved for backward"
    assert h.grad is not None and torch.isfinite(h.grad.float()).all()


def test_only_plain_linears_change_and_other_dtypes_compute_as_nn_linear():
    class Scaled(nn.Linear):  # a subclass may do more than the product: left alone
        pass

    model = nn.Sequential(nn.Linear(8, 8), Scaled(8, 8), nn.Embedding(4, 8))
    assert multiply_bf16_in_fp32(model) == 1
    assert type(model[0]) is Fp32MatmulLinear and type(model[1]) is Scaled
    x = torch.randn(2, 8)  # the model is still fp32: the layer is nn.Linear's own forward
    torch.testing.assert_close(model[0](x), nn.functional.linear(x, model[0].weight, model[0].bias), atol=0, rtol=0)


@pytest.mark.parametrize("native, changed", [(False, True), (True, False), (None, False)])
def test_load_base_model_multiplies_in_fp32_exactly_where_the_cpu_lacks_native_bf16(monkeypatch, native, changed):
    monkeypatch.setattr(loading, "cpu_bf16_native", lambda: native)
    bf16 = loading.load_base_model("tiny-llama", dtype="bf16")
    fp32 = loading.load_base_model("tiny-llama", dtype="fp32")
    linears = [m for m in bf16.modules() if isinstance(m, nn.Linear)]
    assert linears and all((type(m) is Fp32MatmulLinear) == changed for m in linears)
    assert not any(type(m) is Fp32MatmulLinear for m in fp32.modules())  # fp32 has nothing to gain
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}  # the weights stay bf16


def test_a_bf16_model_trains_alike_either_way(monkeypatch, tokenizer):
    from adapter_hub import LoraConfig, attach
    from adapter_hub.data import load_task
    from adapter_hub.data.prompts import encode_examples
    from adapter_hub.training import TrainConfig, train_on

    task = load_task("builtin:topic", max_train=16)
    examples, _ = encode_examples(tokenizer, task, task.train, 128)
    losses = {}
    for native in (True, False):
        monkeypatch.setattr(loading, "cpu_bf16_native", lambda native=native: native)
        model = attach(loading.load_base_model("tiny-llama", dtype="bf16"), LoraConfig(r=4, alpha=8), name="a", seed=0)
        config = TrainConfig(lr=1e-2, steps=6, batch_size=4, progress=False)
        losses[native] = train_on(model, examples, config, pad_id=tokenizer.pad_token_id).losses
    assert losses[False] == pytest.approx(losses[True], rel=2e-2)  # bf16 rounding apart, not another model
    assert losses[False][-1] < losses[False][0]  # and it learns
