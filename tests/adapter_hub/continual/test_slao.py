"""slao: the orthonormal re-initialisation and the asymmetric, time-aware merge, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig
from adapter_hub.continual import ContinualConfig, make_strategy
from adapter_hub.continual.slao import FINETUNED, orthonormal_basis, time_scale
from adapter_hub.data import load_task
from adapter_hub.training import TrainConfig

CONFIG = ContinualConfig(LoraConfig(r=4), TrainConfig(lr=3e-3, steps=6, batch_size=8, max_length=96, progress=False))
TASKS = ("topic", "animal", "sentiment")


@pytest.fixture
def learnt(tiny_model, tokenizer, record_starts):
    """Three tasks learnt by slao, with the adapter each task's training started from."""
    tasks = [load_task(f"builtin:{n}", max_train=32) for n in TASKS]
    strategy = make_strategy("slao", tiny_model(), tokenizer, CONFIG)
    starts = record_starts(strategy)
    steps = [strategy.learn(t, k, tasks[:k - 1]) for k, t in enumerate(tasks, start=1)]
    return steps, starts


def finetuned(step) -> LoraAdapter:
    return next(c for c in step.components if c.provenance["op"] == FINETUNED)


def test_time_scale_is_one_over_root_i():
    assert [time_scale(i) for i in (1, 4, 9)] == [1.0, 0.5, 1 / 3]
    with pytest.raises(ValueError, match="1-based step"):
        time_scale(0)


def test_each_task_starts_from_an_orthonormal_basis_of_the_previous_A_and_the_previous_B(learnt):
    steps, starts = learnt
    for k in (2, 3):
        before, start = finetuned(steps[k - 2]), starts[k - 1]
        for m, f in before.modules.items():
            A_prev, A0 = f.A.double(), start.modules[m].A.double()
            r = A0.shape[0]
            torch.testing.assert_close(A0 @ A0.T, torch.eye(r, dtype=torch.float64), atol=1e-5, rtol=0)
            # same row space: A_prev is reproduced from the new basis, and A_prev·A0ᵀ = Rᵀ is lower
            # triangular with a positive diagonal (the QR with its signs fixed)
            coeff = A_prev @ A0.T
            torch.testing.assert_close(coeff @ A0, A_prev, atol=1e-5 * float(A_prev.abs().max()), rtol=0)
            assert float(torch.triu(coeff, 1).abs().max()) <= 1e-5 * float(coeff.abs().max())
            assert bool((torch.diagonal(coeff) > 0).all())
            assert torch.equal(start.modules[m].B, f.B)  # B starts exactly where the last task's B ended


def test_the_state_is_the_asymmetric_time_aware_merge(learnt):
    steps, _ = learnt
    ft = [finetuned(s) for s in steps]
    for m in steps[0].state.modules:
        merged = ft[0].modules[m].B.double()
        assert torch.equal(steps[0].state.modules[m].B, ft[0].modules[m].B)  # λ(1) = 1: the first task whole
        for i in (2, 3):  # B_merge,i = B_merge,i−1 + (1/√i)(B_ft,i − B_merge,i−1), by hand in float64
            merged = merged + (ft[i - 1].modules[m].B.double() - merged) / math.sqrt(i)
            state = steps[i - 1].state.modules[m]
            torch.testing.assert_close(state.B.double(), merged, atol=1e-6 * float(merged.abs().max()), rtol=0)
            assert torch.equal(state.A, ft[i - 1].modules[m].A)  # A_merge = A_ft
    assert [s.info["time_scale"] for s in steps] == [1.0, 1 / math.sqrt(2), 1 / math.sqrt(3)]
    # the merge really differs from the fine-tuned B (it keeps part of the earlier tasks)
    assert any(not torch.equal(steps[2].state.modules[m].B, ft[2].modules[m].B) for m in ft[2].modules)


def test_orthonormal_basis_of_a_rank_deficient_A_still_has_orthonormal_rows():
    """A zero row (a direction training never moved) still gets a unit row orthogonal to the rest."""
    A = torch.zeros(3, 10)
    A[0, 0], A[1, 1] = 2.0, -1.0
    basis = orthonormal_basis(A)
    torch.testing.assert_close(basis @ basis.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis[0], torch.eye(10)[0])  # diag(R) > 0: each row points along its A row
    torch.testing.assert_close(basis[1], -torch.eye(10)[1])
