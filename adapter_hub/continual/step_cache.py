"""Never train the same step twice in a registry.

Many strategies start with the same computation: on the first task, seq, replay (empty memory),
replay_gen (nothing to generate yet), mtl (the union of one task), per_task, inc and merge's first
part all train one freshly initialised adapter on the same examples with the same seed. A benchmark
run used to train that step once per strategy. Here every training call without a strategy-specific
loss term gets a content key — a hash of everything that determines its result:

  the base model's identity, the weights (and LoRA config) of every adapter in the forward pass and
  which of them train (A frozen or not), the encoded examples in order, the training config for the
  step (seed included; under until = "plateau" the stopping rule's version and, when more than one
  task's dev split judges the stop, their sizes), the model's dtype and
  device type, and the torch / adapter-hub versions.

A registered state whose factors are exactly the trained adapter's is tagged `step_key=<key>`; a
later call with the same key loads those factors instead of training (and records which version it
reused). Nothing is shared on a guess: two steps share only when every input is the same, and the
result is bit-identical to training again (the tests check it).

The one input checked on reuse rather than hashed: a plateau run's `max_steps`. Up to the step where
training stopped, the cap changes nothing (the warmup is a share of the patience window, the schedule
is constant after it, the batches do not depend on it), so a state that stopped on its own at a
scheduled check, at or before a new cap, is that cap's result too; one that ran into its cap is
reused only under the same cap (`serves`). Raising a regime's cap then retrains only the steps that
reached the old one. Keys made before this rule hashed the cap; they are still looked up, under each
cap the registry's plateau states were trained with (`legacy_caps`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

import adapter_hub
from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.core.factors import tensor_bytes
from adapter_hub.data.prompts import Encoded
from adapter_hub.lora import base_identity, lora_layers
from adapter_hub.training import plateau
from adapter_hub.training.config import TrainConfig

TAG = "step_key"


def step_key(model: nn.Module, names_trained: Sequence[str], names_active: Sequence[str], lora_config: dict,
             examples: Sequence[Encoded], train: TrainConfig, pad_id: int, frozen_A: bool,
             dev_split_sizes: Sequence[int] = (), legacy_max_steps: int | None = None,
             frozen_summed: bool = False) -> str:
    """`examples`: the training examples, then the dev examples (all tasks' in order); `dev_split_sizes`:
    how many dev examples each task has, when the plateau judges more than one task (the mean of
    per-task accuracies depends on that grouping, not only on the examples). `legacy_max_steps`: the
    key as it was made before a plateau's cap left the hash, for a state trained under that cap.
    `frozen_summed`: the frozen adapters ran as one summed branch (continual/frozen.py), which rounds
    differently from running them one by one, so the two never share a step."""
    h = hashlib.sha256()
    # progress: display only. dev_min: it only moves examples between the training and dev splits, which
    # the examples hashed below carry; out of the settings, a split it leaves as it was keeps its key.
    settings = {k: v for k, v in train.to_dict().items() if k not in ("progress", "dev_min")}
    if train.plateau:
        settings["plateau_rule"] = plateau.RULE
        if len(dev_split_sizes) > 1:  # one task: its mean is its accuracy, and older keys stay valid
            settings["dev_split_sizes"] = list(dev_split_sizes)
        if legacy_max_steps is None:
            settings["max_steps"] = "checked on reuse"  # see `serves`
        else:
            settings["max_steps"] = legacy_max_steps
    head = {"base": base_identity(model).to_dict(), "lora": lora_config, "train": settings, "pad": pad_id,
            "trained": len(names_trained), "active": len(names_active), "frozen_A": frozen_A,  # names are labels
            "dtype": str(next(model.parameters()).dtype), "device": next(model.parameters()).device.type,
            "torch": torch.__version__, "adapter_hub": adapter_hub.__version__}
    if frozen_summed:  # absent otherwise: keys made before the summed branch existed stay valid
        head["frozen_summed"] = True
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for module, layer in lora_layers(model):  # every adapter in the forward pass, by role, not by name
        for role, names in (("trained", names_trained), ("active", names_active)):
            for n in names:
                if n in layer.lora_A:
                    h.update(f"{module}\0{role}\0{layer.scaling[n]!r}\0".encode())
                    h.update(tensor_bytes(layer.lora_A[n]))
                    h.update(tensor_bytes(layer.lora_B[n]))
    for e in examples:
        h.update(json.dumps([e.prompt, e.target]).encode())
    return h.hexdigest()


def same_factors(a: LoraAdapter, b: LoraAdapter) -> bool:
    """Bit-identical adapters: the same modules, factors and scaling."""
    if sorted(a.modules) != sorted(b.modules):
        return False
    return all(torch.equal(a.modules[m].A, b.modules[m].A) and torch.equal(a.modules[m].B, b.modules[m].B)
               and a.scaling(m) == b.scaling(m) for m in a.modules)


def load_into(model: nn.Module, name: str, adapter: LoraAdapter) -> None:
    """Copy `adapter`'s factors into the model's attached adapter `name` (same modules and ranks)."""
    with torch.no_grad():
        for module, layer in lora_layers(model):
            if name in layer.lora_A:
                factors = adapter.modules[module]
                layer.lora_A[name].copy_(factors.A)
                layer.lora_B[name].copy_(factors.B)


def serves(stop: dict[str, Any] | None, train: TrainConfig) -> bool:
    """Whether a registered step that stopped as `stop` says (its loss summary's "stop") is what training
    under `train` would give. Only a plateau's cap is left to this check; every other input is in the key.
    Stopped by the plateau at a scheduled check no later than the cap: the same checks see the same
    states, so the same stop. Stopped by the cap: the same only under that cap."""
    if not train.plateau:
        return True
    if not stop:
        return False
    steps = int(stop.get("steps_run", -1))
    if stop.get("reason") == "plateau":
        return steps % train.eval_every == 0 and 0 < steps <= train.max_steps
    return stop.get("reason") == "max_steps" and steps == train.max_steps


class RegistryStepCache:
    """Trained steps looked up by content key among a registry's tagged versions."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self._legacy_caps: list[int] | None = None

    def get(self, keys: Iterable[str], train: TrainConfig) -> tuple[LoraAdapter, dict[str, Any]] | None:
        """The first registered state under any of `keys` (tried in order; an iterator is consumed only
        as far as needed) that `serves` this training config."""
        for key in keys:
            for info in self.registry.search(tag={TAG: key}):
                loss = info.metadata.get("loss") or {}
                if serves(loss.get("stop"), train):
                    return self.registry.load(info.ref), {"ref": info.ref, "loss": info.metadata.get("loss"),
                                                          "seconds": info.metadata.get("seconds")}
        return None

    def legacy_caps(self) -> list[int]:
        """The caps (`max_steps`) of the registry's reusable plateau states, for keys that hashed them.
        Read once: the states this cache's owner registers later carry keys without the cap."""
        if self._legacy_caps is None:
            caps = {int(info.metadata["train"]["max_steps"]) for info in self.registry.search()
                    if TAG in info.tags and (info.metadata.get("train") or {}).get("until") == "plateau"}
            self._legacy_caps = sorted(caps)
        return self._legacy_caps
