"""Continual-learning strategies, selectable by name, all behind one interface (continual.base.Strategy):

  seq       one adapter trained on task after task (the forgetting baseline)
  inc       a new adapter per task; earlier ones frozen and kept active
  olora     inc + O-LoRA's orthogonality loss (Wang et al. 2023)
  nlora     inc + N-LoRA's ℓ1 sparsity on the new update (Yang et al. 2025)
  inflora   inc with A fixed outside earlier tasks' input subspace, B trained (Liang & Li 2024)
  replay    seq + a memory of past examples mixed in
  replay_gen  seq + pseudo-examples of earlier tasks generated and labelled by the model (no stored data)
  ewc       seq + Elastic Weight Consolidation on the adapter's parameters
  per_task  independent adapters, the task id given at test (the no-interference reference)
  mtl       joint training on all tasks so far (the upper bound; R* for intransigence)
  merge     independent adapters merged after each task (TIES + rank reduction by default)
  slao      one adapter: orthonormal re-init of A, asymmetric time-aware merge after each task (SLAO)
  ella      seq + a penalty on aligning with the past update's high-energy directions (ELLA, reconstructed)
"""

from __future__ import annotations

from adapter_hub.continual.base import ContinualConfig, StepResult, Strategy
from adapter_hub.continual.ella import ELLA
from adapter_hub.continual.ewc import EWC
from adapter_hub.continual.inc import Incremental
from adapter_hub.continual.inflora import InfLoRA
from adapter_hub.continual.merge import Merge
from adapter_hub.continual.mtl import MultiTask
from adapter_hub.continual.nlora import NLoRA
from adapter_hub.continual.olora import OLoRA
from adapter_hub.continual.per_task import PerTask
from adapter_hub.continual.replay import Replay
from adapter_hub.continual.replay_gen import GenerativeReplay
from adapter_hub.continual.seq import Sequential
from adapter_hub.continual.slao import SLAO

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Sequential, Incremental, OLoRA, NLoRA, InfLoRA, Replay, GenerativeReplay, EWC,
                              PerTask, MultiTask, Merge, SLAO, ELLA)
}


def make_strategy(name: str, model, tokenizer, config: ContinualConfig, **params) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](model, tokenizer, config, **params)


__all__ = ["STRATEGIES", "ContinualConfig", "StepResult", "Strategy", "make_strategy"]
