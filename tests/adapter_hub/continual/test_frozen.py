"""The frozen components of inc-family strategies run as one summed branch: the same forward and
gradients as running them one by one (against that path, computed on the same model), the model
left as it was, and no fusion where the sum would compute something else."""

from __future__ import annotations

import contextlib

import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig, attach
from adapter_hub.continual import ContinualConfig, base
from adapter_hub.continual.frozen import FROZEN_SUM, frozen_as_one, fusable
from adapter_hub.continual.runner import run_sequence
from adapter_hub.data import load_task
from adapter_hub.lora import list_adapters, lora_layers, lora_parameters, merge_adapter, set_active
from adapter_hub.lora.model import attached
from adapter_hub.training import TrainConfig


def with_components(model, n_frozen: int, dropout: float = 0.0):
    """`n_frozen` frozen adapters with non-zero B (so each one changes the output) and a trainable one,
    all active at weight 1, as inc leaves the model while it trains task n_frozen + 1."""
    for i in range(n_frozen):
        attach(model, LoraConfig(r=4, dropout=dropout), name=f"c{i}", seed=i, activate="add", trainable=False)
        with torch.no_grad():
            for _, layer in lora_layers(model):
                layer.lora_B[f"c{i}"].normal_(0, 0.05, generator=torch.Generator().manual_seed(100 + i))
    attach(model, LoraConfig(r=4), name="new", seed=9, activate="add")
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["new"].normal_(0, 0.05, generator=torch.Generator().manual_seed(99))
    return model


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids).logits
    loss = out.float().pow(2).mean()
    loss.backward()
    return out.detach(), [p.grad.clone() for p in lora_parameters(model, ["new"])]


def test_summed_branch_gives_the_same_forward_and_gradients(tiny_model):
    model = with_components(tiny_model(), 3).double()  # float64: rounding far below the tolerances
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    separate_out, separate_grads = loss_and_grads(model, ids)
    before = list(attached(model).active)
    with frozen_as_one(model, ["new"]) as fused:
        assert fused and [n for n, _ in attached(model).active] == [FROZEN_SUM, "new"]
        fused_out, fused_grads = loss_and_grads(model, ids)
    # the sum is the same function: only the order of float additions differs
    torch.testing.assert_close(fused_out, separate_out, rtol=1e-10, atol=1e-12)
    for a, b in zip(fused_grads, separate_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-14)
    # left as it was: the sum is gone, the active set restored, the output bit-identical to before
    assert FROZEN_SUM not in list_adapters(model) and attached(model).active == before
    assert torch.equal(model(input_ids=ids).logits.detach(), separate_out)


def test_the_components_each_matter_so_the_sum_is_checked(tiny_model):
    """Guard for the test above: dropping one component moves the output well beyond its tolerance."""
    model = with_components(tiny_model(), 3)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    full = model(input_ids=ids).logits.detach()
    set_active(model, ["c0", "c1", "new"])
    assert (model(input_ids=ids).logits.detach() - full).abs().max() > 1e-3


@pytest.mark.parametrize("case", ["one frozen", "dropout", "weight", "merged"])
def test_no_fusion_where_the_sum_would_compute_something_else(tiny_model, case):
    model = with_components(tiny_model(), 1 if case == "one frozen" else 2, dropout=0.1 if case == "dropout" else 0.0)
    if case == "weight":
        set_active(model, ["c0", "c1", "new"], [0.5, 1.0, 1.0])
    if case == "merged":
        merge_adapter(model, "c0")  # into the base weights: summing it again would count it twice
    before = list(attached(model).active)
    assert not fusable(model, ["new"])
    with frozen_as_one(model, ["new"]) as fused:
        assert not fused and FROZEN_SUM not in list_adapters(model)
    assert attached(model).active == before


def test_the_active_set_is_restored_when_training_fails(tiny_model):
    model = with_components(tiny_model(), 2)
    before = list(attached(model).active)
    with pytest.raises(RuntimeError, match="boom"), frozen_as_one(model, ["new"]):
        raise RuntimeError("boom")
    assert FROZEN_SUM not in list_adapters(model) and attached(model).active == before


@pytest.mark.parametrize("strategy", ["inc", "olora", "inflora"])
def test_a_sequence_trained_with_the_sum_matches_one_trained_without(tiny_model, tokenizer, monkeypatch, strategy):
    """Three tasks, so the third trains beside two frozen components: the same states, to rounding."""
    tasks = [load_task("builtin:sentiment", max_train=64), load_task("builtin:topic", max_train=64),
             load_task("builtin:animal", max_train=64)]
    cfg = ContinualConfig(LoraConfig(r=4), TrainConfig(lr=3e-3, steps=10, batch_size=16, progress=False, seed=0))
    fused_per_task, real = [], base.frozen_as_one

    @contextlib.contextmanager
    def spy(model, trained):
        with real(model, trained) as fused:
            fused_per_task.append(fused)
            yield fused

    monkeypatch.setattr(base, "frozen_as_one", spy)
    summed = run_sequence(strategy, tiny_model(), tokenizer, tasks, cfg).steps[-1].state
    assert fused_per_task == [False, False, True]  # the third task trains beside two components

    @contextlib.contextmanager
    def one_by_one(model, trained):
        yield False

    monkeypatch.setattr(base, "frozen_as_one", one_by_one)
    separate = run_sequence(strategy, tiny_model(), tokenizer, tasks, cfg).steps[-1].state
    assert isinstance(summed, LoraAdapter) and summed.modules.keys() == separate.modules.keys()
    for m in summed.modules:  # Adam turns rounding into small per-entry moves; a wrong sum moves whole factors
        for a, b in ((summed.modules[m].A, separate.modules[m].A), (summed.modules[m].B, separate.modules[m].B)):
            assert (a - b).norm() <= 1e-3 * b.norm(), m
