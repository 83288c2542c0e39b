"""ella: the penalty against dense float64 math, zero on the first task, and what it does to training."""

from __future__ import annotations

import pytest
import torch

from adapter_hub import LoraConfig
from adapter_hub.continual import ContinualConfig, make_strategy
from adapter_hub.continual.ella import NAME
from adapter_hub.data import load_task
from adapter_hub.lora import lora_layers
from adapter_hub.training import TrainConfig

CONFIG = ContinualConfig(LoraConfig(r=4), TrainConfig(lr=3e-3, steps=8, batch_size=8, max_length=96, progress=False))


def dense_penalty(past: dict, live: dict, lam: float) -> float:
    """λ Σ‖ΔW W_pastᵀ‖²_F / Σ‖W_past W_pastᵀ‖²_F with every ΔW formed densely in float64."""
    num = den = 0.0
    for m, (A0, B0, s) in past.items():
        A, B = live[m]
        W_past = s * B0.double() @ A0.double()
        delta = s * B.double() @ A.double() - W_past
        num += float(((delta @ W_past.T) ** 2).sum())
        den += float(((W_past @ W_past.T) ** 2).sum())
    return lam * num / den


def factors(model) -> dict:
    return {m: (layer.lora_A[NAME].detach().clone(), layer.lora_B[NAME].detach().clone(), layer.scaling[NAME])
            for m, layer in lora_layers(model) if NAME in layer.lora_A}


def test_penalty_is_zero_on_the_first_task_and_matches_dense_math_after(tiny_model, tokenizer):
    tasks = [load_task(f"builtin:{n}", max_train=32) for n in ("topic", "animal")]
    strategy = make_strategy("ella", tiny_model(), tokenizer, CONFIG, lam=2.5)
    seen = []
    real = strategy.train

    def spy(*args, extra_loss=None, **kwargs):
        seen.append(extra_loss)
        return real(*args, extra_loss=extra_loss, **kwargs)

    strategy.train = spy
    first = strategy.learn(tasks[0], 1, [])
    assert seen == [None] and "alignment" not in first.info  # nothing learnt before: no penalty at all
    past = factors(strategy.model)
    loss = strategy.extra_loss()

    def penalty() -> torch.Tensor:
        return loss().detach()

    assert float(penalty()) == 0.0  # at the task's start ΔW = 0
    with torch.no_grad():  # move the live factors somewhere arbitrary, as training would
        g = torch.Generator().manual_seed(0)
        for _, layer in lora_layers(strategy.model):
            if NAME in layer.lora_A:
                layer.lora_A[NAME].add_(0.05 * torch.randn(layer.lora_A[NAME].shape, generator=g))
                layer.lora_B[NAME].add_(0.05 * torch.randn(layer.lora_B[NAME].shape, generator=g))
    live = {m: (A, B) for m, (A, B, _) in factors(strategy.model).items()}
    expected = dense_penalty(past, live, 2.5)
    assert expected > 0
    assert abs(float(penalty()) - expected) <= 1e-4 * expected
    # undoing the past update entirely costs exactly λ (the normalisation's promise)
    with torch.no_grad():
        for m, layer in lora_layers(strategy.model):
            if NAME in layer.lora_B:
                layer.lora_B[NAME].zero_()
    assert float(penalty()) == pytest.approx(2.5, rel=1e-4)


def test_the_penalty_keeps_the_new_update_off_the_past_directions(tiny_model, tokenizer):
    """Same data and seed, λ = 0 (plain seq with this code) against a strong λ: the second task's update
    is far less aligned with the first task's high-energy directions."""
    tasks = [load_task(f"builtin:{n}", max_train=48) for n in ("topic", "sentiment")]
    aligned = {}
    for lam in (0.0, 50.0):
        strategy = make_strategy("ella", tiny_model(), tokenizer, CONFIG, lam=lam)
        strategy.learn(tasks[0], 1, [])
        past = factors(strategy.model)
        strategy.learn(tasks[1], 2, tasks[:1])
        live = {m: (A, B) for m, (A, B, _) in factors(strategy.model).items()}
        aligned[lam] = dense_penalty(past, live, 1.0)
    assert aligned[50.0] < 0.5 * aligned[0.0], aligned


def test_bad_lambda_is_refused_by_name(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="parameter lam must be >= 0"):
        make_strategy("ella", tiny_model(), tokenizer, CONFIG, lam=-1.0)
    with pytest.raises(ValueError, match="has no parameter"):
        make_strategy("ella", tiny_model(), tokenizer, CONFIG, lambda1=1.0)
