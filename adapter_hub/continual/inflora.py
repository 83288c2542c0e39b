"""`inflora`: InfLoRA (Liang & Li, "InfLoRA: Interference-Free Low-Rank Adaptation for Continual
Learning", CVPR 2024, arXiv:2404.00228) — a new adapter per task whose down-projection A is fixed
before training, inside the subspace that leaves earlier tasks' inputs untouched; only B is trained.

Per adapted layer, with H_t the layer's inputs on task t's training tokens and M the stored basis
(in × k, orthonormal columns) of earlier tasks' input subspace:

  1. before training task t: P = I − M Mᵀ; A_t's rows = the top-r eigenvectors of P H_t H_tᵀ P
     (the new task's principal input directions with the old subspace removed), scaled by 1/√3 as
     in the authors' code, then projected by P once more (exactly orthogonal to M);
  2. train B_t only (A_t frozen, earlier components frozen and active);
  3. after training, grow M as in GPM (Saha et al. 2021): with E = ‖H_t‖²_F and the energy M already
     holds, add eigenvectors of P H_t H_tᵀ P by decreasing eigenvalue until the held share reaches
     `threshold`.

Every x in span(M) then meets B_t A_t x = 0: learning task t cannot move an earlier task's stored
input directions. The basis is registered with each state as a component adapter whose A holds Mᵀ
and whose B is zero (it changes nothing when applied), so a resumed run restores it exactly.
`threshold` 0.95 is InfLoRA's starting value (`lamb`); the authors raise it linearly to `lame` = 1.0
over a number of tasks known in advance, which a stream does not have, so here it stays fixed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from adapter_hub.continual.base import StepResult
from adapter_hub.continual.inc import Incremental, component_name
from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.data.prompts import Encoded
from adapter_hub.lora import lora_layers, set_active
from adapter_hub.ops.align import from_factors
from adapter_hub.training.batches import collate

COVARIANCE_BATCH = 16  # examples per forward when collecting layer inputs (no gradients)


def input_covariances(model, examples: Sequence[Encoded], pad_id: int, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """{module: Σ x xᵀ} (float64, in × in) over the non-padding tokens that reach each LoRA layer."""
    layers = dict(lora_layers(model))
    device = next(model.parameters()).device
    sums = {m: torch.zeros(layers[m].in_features, layers[m].in_features, dtype=torch.float64, device=device)
            for m in modules}
    keep: list[torch.Tensor] = []

    def hook(name):
        def collect(_module, args):
            x = args[0].reshape(-1, args[0].shape[-1])[keep[0]].float()
            sums[name].add_((x.T @ x).to(torch.float64))  # fp32 product per batch, fp64 running sum
        return collect

    handles = [layers[m].register_forward_pre_hook(hook(m)) for m in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(examples), COVARIANCE_BATCH):
                batch = collate(examples[start:start + COVARIANCE_BATCH], pad_id, device)
                keep[:] = [batch["attention_mask"].reshape(-1).bool()]
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sums


def projector(basis: torch.Tensor | None, dim: int) -> torch.Tensor:
    """I − M Mᵀ (float64)."""
    eye = torch.eye(dim, dtype=torch.float64, device=basis.device if basis is not None else None)
    return eye if basis is None else eye - basis.to(torch.float64) @ basis.to(torch.float64).T


def principal_directions(cov: torch.Tensor, basis: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of P C P, P = I − M Mᵀ.

    P C P = C − M(MᵀC) − (CM)Mᵀ + M(MᵀCM)Mᵀ costs O(in²·k) instead of two in³ products; the
    eigendecomposition runs in fp32 (the directions are re-orthogonalised against M by the caller)."""
    C = cov
    if basis is not None:
        M = basis.to(torch.float64).to(cov.device)
        CM = C @ M
        C = C - M @ CM.T - CM @ M.T + M @ (M.T @ CM) @ M.T
    values, vectors = torch.linalg.eigh(((C + C.T) / 2).float())
    return values.double().flip(0).clamp(min=0), vectors.double().flip(1)


def down_projection(cov: torch.Tensor, basis: torch.Tensor | None, r: int) -> torch.Tensor:
    """A (r × in): the top-r projected input directions / √3, exactly orthogonal to the basis."""
    _, vectors = principal_directions(cov, basis)
    A = vectors[:, :r].T / math.sqrt(3)
    if basis is not None:
        A = A @ projector(basis, cov.shape[0]).to(A.device)
    return A


def grow_basis(cov: torch.Tensor, basis: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """GPM: add projected principal directions until the basis holds `threshold` of the inputs' energy."""
    total = float(torch.trace(cov))
    values, vectors = principal_directions(cov, basis)
    held = (total - float(values.sum())) / total if total > 0 else 1.0  # what M already explains
    k = 0
    while held < threshold and k < values.shape[0] and (basis is None or basis.shape[1] + k < cov.shape[0]):
        held += float(values[k]) / total
        k += 1
    new = vectors[:, :k]
    grown = new if basis is None else torch.cat([basis.to(torch.float64), new], 1)
    return grown.to(torch.float32)


class InfLoRA(Incremental):
    name = "inflora"
    # subspace_examples: InfLoRA estimates the input subspace on the whole training set; a seeded
    # sample of 64 examples (~6k tokens for a 576-wide input) keeps that at a fraction of an epoch's
    # cost on CPU. None: every training example.
    defaults = {"threshold": 0.95, "subspace_examples": 64}

    @classmethod
    def check_values(cls, params, where):
        if not 0 < params["threshold"] <= 1:
            raise ValueError(f"{where} parameter threshold must be in (0, 1], got {params['threshold']}")
        n = params["subspace_examples"]
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{where} parameter subspace_examples must be an integer >= 1 (or unset), got {n!r}")

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.basis: dict[str, torch.Tensor] = {}  # module -> M (in × k), float32, orthonormal columns

    def learn(self, task, step, history):
        new = component_name(step)
        self.new_adapter(new, step)
        modules = [m for m, layer in lora_layers(self.model) if new in layer.lora_A]
        examples, truncated = self.encode(task)
        pad = self.tokenizer.pad_token_id
        sample = self._subspace_sample(examples, step)
        set_active(self.model, list(self.components))  # the model as it stands before task t
        before = input_covariances(self.model, sample, pad, modules)
        layers = dict(lora_layers(self.model))
        with torch.no_grad():
            for m in modules:
                A = down_projection(before[m], self.basis.get(m), layers[m].lora_A[new].shape[0])
                layers[m].lora_A[new].copy_(A.to(layers[m].lora_A[new].dtype))
        result = self.train([new], [*self.components, new], examples, step, truncated=truncated, dev=[task],
                            description=f"{self.name} {task.name}", frozen_A=True)
        after = input_covariances(self.model, sample, pad, modules)
        for m in modules:
            self.basis[m] = grow_basis(after[m], self.basis.get(m), float(self.params["threshold"]))
        self.components.append(new)
        state = self.summed_state(step, task)
        dims = [int(b.shape[1]) for b in self.basis.values()]
        info = {"subspace_dims": {"mean": sum(dims) / len(dims), "min": min(dims), "max": max(dims)}}
        return StepResult(task.name, step, state, result, components=[self.basis_adapter(state)], info=info)

    def _subspace_sample(self, examples: list[Encoded], step: int) -> list[Encoded]:
        n = self.params["subspace_examples"]
        if n is None or n >= len(examples):
            return examples
        keep = sorted(random.Random(f"{self.config.seed}:inflora:{step}").sample(range(len(examples)), n))
        return [examples[i] for i in keep]

    def basis_adapter(self, like: LoraAdapter) -> LoraAdapter:
        """The stored subspace as an adapter: A = Mᵀ, B = 0 (no effect if attached)."""
        factors = {}
        for m, M in self.basis.items():
            out = like.modules[m].B.shape[0]
            factors[m] = (M.T.contiguous(), torch.zeros(out, M.shape[1], dtype=M.dtype, device=M.device))
        adapter = from_factors(factors, like, {"op": "subspace", "strategy": self.name}, dtype=torch.float32)
        return adapter

    def restore(self, steps, history):
        super().restore(steps, history)  # the frozen components
        stored = next(c for c in steps[-1].components if c.provenance.get("op") == "subspace")
        device = next(self.model.parameters()).device
        self.basis = {m: f.A.T.contiguous().to(device=device, dtype=torch.float32) for m, f in stored.modules.items()}
