"""The task router: send each input to the adapter of the task it most likely comes from (task-free
inference).

`per_task` keeps one adapter per task and, evaluated with the task id (the "oracle" router), cannot
forget. Real inputs come without a task id. The prototype router picks the adapter from the input
alone, with nothing stored but one mean vector per task:

  feature(x)   the frozen base model's last hidden state, mean-pooled over the tokens of the example's
               text ONLY: the task's instruction is left out, since it would name the task.
  prototype_t  the mean feature over task t's training inputs (kept with the task's count).
  nearest_prototype(x)  argmax_t cos(feature(x) − μ, prototype_t − μ), μ the count-weighted mean of all prototypes.

Centring before the cosine ("CL2N" in SimpleShot, Wang et al. 2019) removes the direction every
pooled LLM state shares, which otherwise dominates the cosine and makes all prototypes look alike.
With one task learnt, every input goes to its adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from adapter_hub.lora import adapters_disabled
from adapter_hub.models.decoder import decoder_and_head

FEATURE_BATCH = 32  # inputs per forward when extracting features (inference only: memory is small)


def features(model: nn.Module, tokenizer, texts: Sequence[str], *, max_length: int = 256,
             batch_size: int = FEATURE_BATCH) -> torch.Tensor:
    """(N, H) float32: the base model's (all adapters off) mean-pooled last hidden states of `texts`."""
    decoder, _ = decoder_and_head(model)
    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), adapters_disabled(model):
            for start in range(0, len(texts), batch_size):
                rows = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] or
                        [tokenizer.eos_token_id] for t in texts[start:start + batch_size]]
                width = max(map(len, rows))
                ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):  # right padding: positions start at 0 for every row
                    ids[i, :len(r)] = torch.tensor(r)
                    mask[i, :len(r)] = 1
                ids, mask = ids.to(device), mask.to(device)
                hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                weights = mask[..., None].to(hidden.dtype)
                out.append(((hidden * weights).sum(1) / weights.sum(1)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class Prototype:
    """One task's mean feature and how many inputs it averages (for the centring mean μ)."""

    task: str
    mean: list[float]
    count: int

    def to_dict(self) -> dict:
        return {"task": self.task, "mean": self.mean, "count": self.count}

    @classmethod
    def from_dict(cls, raw: dict) -> "Prototype":
        return cls(raw["task"], [float(v) for v in raw["mean"]], int(raw["count"]))


def prototype(model: nn.Module, tokenizer, task_name: str, texts: Sequence[str], *, max_length: int = 256) -> Prototype:
    if not texts:
        raise ValueError(f"task {task_name}: no training inputs to build a prototype from")
    feats = features(model, tokenizer, texts, max_length=max_length)
    return Prototype(task_name, feats.mean(0).tolist(), len(texts))


def nearest_prototype(feats: torch.Tensor, prototypes: Sequence[Prototype]) -> list[int]:
    """Index into `prototypes` of the chosen task for every row of `feats` (N, H)."""
    if not prototypes:
        raise ValueError("routing needs at least one task's prototype")
    if len(prototypes) == 1:
        return [0] * feats.shape[0]
    P = torch.tensor([p.mean for p in prototypes], dtype=torch.float64)
    counts = torch.tensor([p.count for p in prototypes], dtype=torch.float64)
    centre = (P * counts[:, None]).sum(0) / counts.sum()
    P = nn.functional.normalize(P - centre, dim=1)
    X = nn.functional.normalize(feats.to(torch.float64) - centre, dim=1)
    return (X @ P.T).argmax(1).tolist()


def router_accuracy(learnt: Sequence, routes: dict[str, list[int]]) -> float:
    """Fraction of the learnt tasks' test examples sent to their own task's adapter (routes[task][e]:
    the position of the task chosen for example e)."""
    hits = sum(sum(c == j for c in routes[task.name]) for j, task in enumerate(learnt))
    return hits / sum(len(routes[task.name]) for task in learnt)


ROUTERS = ("oracle", "prototype", "analytic")
