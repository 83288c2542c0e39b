"""`ewc`: seq plus Elastic Weight Consolidation (Kirkpatrick et al. 2017, arXiv:1612.00796) on the
adapter's parameters:

    L = L_task + (λ/2) · Σ_{past tasks t} Σ_i F_t,i · (θ_i − θ*_t,i)²

θ*_t = the adapter's parameters after task t; F_t = the diagonal empirical Fisher on task t,
F_i = mean over n examples of (∂ℓ_n/∂θ_i)², ℓ_n = example n's answer loss (mean over its answer
tokens), from per-example gradients (the mean of squares, not the square of a mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.data.prompts import Encoded
from adapter_hub.lora import attach, detach, list_adapters, lora_parameters
from adapter_hub.training.batches import collate
from adapter_hub.training.loss import answer_loss

NAME = "ewc"


def fisher_diagonal(model: nn.Module, params: Sequence[nn.Parameter], examples: Sequence[Encoded],
                    pad_id: int) -> list[torch.Tensor]:
    """Diagonal empirical Fisher of `params` over `examples`, one backward per example."""
    device = params[0].device
    fisher = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it will be used
    try:
        for ex in examples:
            loss, _ = answer_loss(model, collate([ex], pad_id, device))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for f, g in zip(fisher, grads):
                if g is not None:
                    f += g.detach() ** 2
    finally:
        model.train(was_training)
    return [f / len(examples) for f in fisher]


def ewc_penalty(params: Sequence[torch.Tensor], anchors: Sequence[tuple[list[torch.Tensor], list[torch.Tensor]]],
                lam: float) -> torch.Tensor:
    """(λ/2) Σ_t Σ_i F_t,i (θ_i − θ*_t,i)² for anchors [(F_t, θ*_t), ...]."""
    total = params[0].new_zeros(())
    for fisher, star in anchors:
        for p, f, s in zip(params, fisher, star):
            total = total + (f * (p - s) ** 2).sum()
    return 0.5 * lam * total


class EWC(Strategy):
    name = "ewc"
    # λ: the Fisher of a LoRA's answer loss is small per parameter; 1e3 makes the penalty comparable to
    # the task loss on the built-in tasks. fisher_samples: 64 per-example backwards per task.
    defaults = {"lam": 1000.0, "fisher_samples": 64}

    @classmethod
    def check_values(cls, params, where):
        if params["lam"] < 0:
            raise ValueError(f"{where} parameter lam must be >= 0, got {params['lam']}")
        if params["fisher_samples"] < 1:
            raise ValueError(f"{where} parameter fisher_samples must be >= 1, got {params['fisher_samples']}")

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.anchors: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []

    def learn(self, task, step, history):
        if NAME not in list_adapters(self.model):
            self.new_adapter(NAME, step)
        params = lora_parameters(self.model, [NAME])
        lam = float(self.params["lam"])
        anchors = list(self.anchors)
        extra = (lambda: ewc_penalty(params, anchors, lam)) if anchors else None
        examples, truncated = self.encode(task)
        result = self.train([NAME], [NAME], examples, step, truncated=truncated, dev=[task], extra_loss=extra,
                            description=f"ewc {task.name}")
        self.consolidate(task, examples, step)
        return StepResult(task.name, step, self.snapshot(NAME, step, task), result,
                          info={"penalty_last": result.extra_losses[-1] if result.extra_losses else 0.0})

    def consolidate(self, task, examples, step) -> None:
        """Record (F_t, θ*_t) for the task just learned."""
        import random

        n = min(int(self.params["fisher_samples"]), len(examples))
        sample = random.Random(f"{self.config.seed}:fisher:{step}").sample(examples, n)
        params = lora_parameters(self.model, [NAME])
        fisher = fisher_diagonal(self.model, params, sample, self.tokenizer.pad_token_id)
        self.anchors.append((fisher, [p.detach().clone() for p in params]))

    def restore(self, steps, history):
        """Recompute each past task's anchor from its registered state (deterministic), then continue."""
        for i, (done, task) in enumerate(zip(steps, history), start=1):
            if NAME in list_adapters(self.model):
                detach(self.model, NAME)
            attach(self.model, done.state, name=NAME, activate="only")
            self.consolidate(task, self.encode(task)[0], i)
