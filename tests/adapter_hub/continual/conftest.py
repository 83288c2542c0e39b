"""Shared by the strategy tests: what each training call started from."""

from __future__ import annotations

import pytest

from adapter_hub import LoraAdapter


@pytest.fixture
def record_starts():
    """record_starts(strategy) -> a list that gets, at each training call, the adapter being trained as
    it stands before the first step (the strategy's own train() is wrapped, nothing else changes)."""
    def wrap(strategy) -> list[LoraAdapter]:
        starts: list[LoraAdapter] = []
        real = strategy.train

        def spy(names_trained, *args, **kwargs):
            starts.append(LoraAdapter.from_model(strategy.model, names_trained[0]))
            return real(names_trained, *args, **kwargs)

        strategy.train = spy
        return starts
    return wrap
