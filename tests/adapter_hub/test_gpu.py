"""CUDA checks (marked gpu: skipped on CPU machines with the reason printed; run by scripts/gpu_check.sh).

This file imports only the tensor side of the package, so it runs on a GPU image that has torch,
transformers and peft but not the registry's database packages."""

from __future__ import annotations

import math

import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig, attach, ops
from adapter_hub.data import load_task
from adapter_hub.evaluation import CURRENT, EvalConfig, score
from adapter_hub.lora import (
    detach,
    lora_layers,
    merge_adapter,
    route,
    set_active,
    unmerge_adapter,
)
from adapter_hub.training import TrainConfig, train_task

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _randomise(model, name, seed, std=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            if name in layer.lora_B:
                layer.lora_B[name].copy_(torch.randn(layer.lora_B[name].shape, generator=g).to(layer.lora_B[name]) * std)


@pytest.mark.parametrize("rows", [["a", "b", "c", "a", "b"],  # interleaved
                                  ["b", "b", "a", "a", "c"]])  # one block per adapter (the evaluator's layout)
def test_routing_on_cuda_matches_each_adapter_alone(tiny_model, rows):
    model = tiny_model().to(CUDA)
    x = torch.randint(0, 256, (5, 16), device=CUDA)
    for i, name in enumerate("abc"):
        attach(model, LoraConfig(r=4 + i), name=name, seed=i)
        _randomise(model, name, i)
    alone = {}
    for name in "abc":
        set_active(model, name)
        alone[name] = model(x).logits
    with torch.no_grad(), route(model, rows):
        mixed = model(x).logits
    for i, name in enumerate(rows):
        torch.testing.assert_close(mixed[i], alone[name][i], atol=1e-4, rtol=1e-4)


def test_merge_and_unmerge_on_cuda(tiny_model):
    model = tiny_model().to(CUDA)
    x = torch.randint(0, 256, (2, 12), device=CUDA)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attach(model, LoraConfig(r=8), name="a", seed=0)
    _randomise(model, "a", 0, std=0.02)
    attached = model(x).logits
    merge_adapter(model, "a")
    torch.testing.assert_close(model(x).logits, attached, atol=1e-4, rtol=1e-4)
    unmerge_adapter(model, "a")
    detach(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all((after[k] - v).abs().max() <= 1e-5 for k, v in before.items())


def test_training_on_cuda_uses_bf16_autocast_and_learns(tiny_model, tokenizer):
    from adapter_hub.lora import lora_layers

    model = attach(tiny_model().to(CUDA), LoraConfig(r=16), name="a", seed=0)
    task = load_task("builtin:sentiment")
    seen = set()  # dtypes the frozen base layers compute in during training: bf16 under autocast
    hooks = [layer.base_layer.register_forward_hook(lambda m, i, o: seen.add(o.dtype)) for _, layer in lora_layers(model)]
    result = train_task(model, tokenizer, task, TrainConfig(lr=3e-3, steps=250, batch_size=16, progress=False))
    for h in hooks:
        h.remove()
    assert seen == {torch.bfloat16}, seen
    assert all(p.dtype == torch.float32 for _, layer in lora_layers(model) for p in layer.lora_A.values())
    assert result.summary()["last"] < result.summary()["first"] / 3
    assert score(model, tokenizer, task)[CURRENT].accuracy >= 0.85


def test_cuda_bf16_evaluation_agrees_with_cpu_fp32(tiny_model, tokenizer):
    task = load_task("builtin:topic")
    cpu = attach(tiny_model(), LoraConfig(r=16), name="a", seed=0)
    train_task(cpu, tokenizer, task, TrainConfig(lr=3e-3, steps=250, batch_size=16, progress=False))
    adapter = LoraAdapter.from_model(cpu, "a")
    on_cpu = score(cpu, tokenizer, task, config=EvalConfig())[CURRENT]
    gpu = attach(tiny_model().to(CUDA), adapter, name="a")
    on_gpu = score(gpu, tokenizer, task, config=EvalConfig())[CURRENT]
    same = sum(a == b for a, b in zip(on_cpu.predictions, on_gpu.predictions)) / len(on_cpu.predictions)
    assert abs(on_cpu.accuracy - on_gpu.accuracy) <= 0.03 and same >= 0.95


def test_arithmetic_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    from adapter_hub.core.factors import ModuleFactors

    def adapter(r):
        modules = {"m": ModuleFactors(torch.randn(r, 64, generator=g), torch.randn(48, r, generator=g))}
        return LoraAdapter(modules, LoraConfig(r=r, alpha=2.0 * r, target_modules=["m"]))

    a, b = adapter(4), adapter(6)
    for make in (lambda x, y: ops.reduce_rank(ops.linear([x, y], [0.7, -0.3]), rank=5),
                 lambda x, y: ops.merge([x, y], "ties", density=0.3, rank=8)):
        on_cpu = make(a, b).delta_weight("m")
        on_gpu = make(a.to(CUDA), b.to(CUDA)).delta_weight("m").cpu()
        torch.testing.assert_close(on_gpu, on_cpu, atol=1e-4, rtol=1e-4)
    first = ops.merge([a.to(CUDA), b.to(CUDA)], "dare_ties", density=0.5, seed=3).delta_weight("m")
    again = ops.merge([a.to(CUDA), b.to(CUDA)], "dare_ties", density=0.5, seed=3).delta_weight("m")
    assert torch.equal(first, again)


def test_routed_bf16_evaluation_agrees_with_the_loop_on_cuda(tiny_model, tokenizer):
    """The evaluator's CUDA path (bf16 autocast, routing, shared-prefix cache, packed candidates) against the
    one-adapter-at-a-time loop; bf16 rounding may flip a near-tie, so agreement, not identity."""
    from adapter_hub.evaluation import evaluate_states
    from adapter_hub.evaluation.states import evaluate_states_loop

    model = tiny_model().to(CUDA)
    adapters = {}
    for i in range(3):
        attach(model, LoraConfig(r=8), name="x", seed=i)
        _randomise(model, "x", i, std=0.1)
        adapters[f"a{i}"] = LoraAdapter.from_model(model, "x")
        detach(model, "x")
    tasks = [load_task(f"builtin:{n}", max_test=64) for n in ("sentiment", "topic")]
    states = {**adapters, "base": None}
    routed = evaluate_states(model, tokenizer, tasks, states, EvalConfig(batch_size=16))
    loop = evaluate_states_loop(model, tokenizer, tasks, states, EvalConfig(batch_size=16))
    pairs = [(a, b) for s in states for t in tasks
             for a, b in zip(routed[s][t.name].predictions, loop[s][t.name].predictions)]
    assert sum(a == b for a, b in pairs) / len(pairs) >= 0.97


def test_bf16_base_end_to_end_on_cuda(tiny_model, tokenizer):
    """A base held in bf16 (dtype auto on CUDA): LoRA factors stay fp32, training learns, merging and
    scoring work, and the bf16 merge round-trip is bit-identical."""
    from adapter_hub.models.devices import resolve_dtype

    dtype = resolve_dtype("auto", CUDA)
    assert dtype == torch.bfloat16, "this GPU has no bf16: the auto setting keeps fp32"
    model = attach(tiny_model().to(CUDA, dtype), LoraConfig(r=16), name="a", seed=0)
    assert all(p.dtype == torch.float32 for _, layer in lora_layers(model) for p in layer.lora_A.values())
    task = load_task("builtin:sentiment")
    result = train_task(model, tokenizer, task, TrainConfig(lr=3e-3, steps=200, batch_size=16, progress=False))
    assert result.summary()["last"] < result.summary()["first"] / 3
    assert score(model, tokenizer, task)[CURRENT].accuracy >= 0.8
    originals = [layer.base_layer.weight.clone() for _, layer in lora_layers(model)]
    merge_adapter(model, "a")
    merged_acc = score(model, tokenizer, task)[CURRENT].accuracy  # the adapter is in the weights now
    unmerge_adapter(model, "a")
    assert merged_acc >= 0.75
    assert all(torch.equal(layer.base_layer.weight, w) for (_, layer), w in zip(lora_layers(model), originals))


def test_generate_scorer_on_cuda_agrees_with_cpu(tiny_model, tokenizer):
    task = load_task("builtin:topic", max_test=48)
    cpu = attach(tiny_model(), LoraConfig(r=16), name="a", seed=0)
    train_task(cpu, tokenizer, task, TrainConfig(lr=3e-3, steps=200, batch_size=16, progress=False))
    adapter = LoraAdapter.from_model(cpu, "a")
    config = EvalConfig(scorer="generate", batch_size=16)
    on_cpu = score(cpu, tokenizer, task, config=config)[CURRENT]
    on_gpu = score(attach(tiny_model().to(CUDA), adapter, name="a"), tokenizer, task, config=config)[CURRENT]
    same = sum(a == b for a, b in zip(on_cpu.predictions, on_gpu.predictions)) / len(on_cpu.predictions)
    assert same >= 0.9 and abs(on_cpu.accuracy - on_gpu.accuracy) <= 0.05


def test_moving_a_model_with_adapters_between_devices(tiny_model):
    """model.to(cuda) after attach, routed forward, back to CPU, routed again: no stale cache anywhere."""
    model = tiny_model()
    for i, name in enumerate("ab"):
        attach(model, LoraConfig(r=4), name=name, seed=i)
        _randomise(model, name, i)
    x = torch.randint(0, 256, (2, 10))
    with torch.no_grad(), route(model, ["a", "b"]):
        on_cpu = model(x).logits
    model.to(CUDA)
    with torch.no_grad(), route(model, ["a", "b"]):
        on_gpu = model(x.to(CUDA)).logits
    model.to("cpu")
    with torch.no_grad(), route(model, ["a", "b"]):
        back = model(x).logits
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(back, on_cpu, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("strategy", ["ewc", "olora"])
def test_regularised_strategies_on_cuda(tiny_model, tokenizer, strategy):
    from adapter_hub.continual import ContinualConfig
    from adapter_hub.continual.runner import run_sequence

    tasks = [load_task("builtin:sentiment", max_train=128), load_task("builtin:topic", max_train=128)]
    config = ContinualConfig(LoraConfig(r=8), TrainConfig(lr=3e-3, steps=60, batch_size=16, progress=False))
    result = run_sequence(strategy, tiny_model().to(CUDA), tokenizer, tasks, config)
    second = result.steps[1].train
    assert second.extra_losses and all(math.isfinite(v) for v in second.extra_losses)  # the term ran, finite
    assert second.summary()["last"] < second.summary()["first"]
