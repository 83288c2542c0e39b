"""Task-free routing: features, the centred-cosine prototype rule, and per_task evaluated without task ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapter_hub.bench.config import BenchConfig
from adapter_hub.bench.driver import run_bench
from adapter_hub.data import load_task
from adapter_hub.evaluation.router import (
    Prototype,
    features,
    nearest_prototype,
    prototype,
)
from adapter_hub.models.decoder import decoder_and_head
from registry import Registry


def test_features_are_mean_pooled_text_states_unaffected_by_padding_or_adapters(tiny_model, tokenizer):
    from adapter_hub import LoraConfig, attach
    from adapter_hub.lora import lora_layers

    model = tiny_model()
    texts = ["a", "the dog by the river", "news about the goal and the team today"]
    attach(model, LoraConfig(r=4), name="x", seed=0)
    with torch.no_grad():  # a non-zero adapter, which features must ignore (the base model's view)
        for _, layer in lora_layers(model):
            layer.lora_B["x"].normal_(0, 0.5)
    got = features(model, tokenizer, texts, batch_size=2)
    decoder, _ = decoder_and_head(model)
    from adapter_hub.lora import adapters_disabled

    with torch.no_grad(), adapters_disabled(model):
        for row, text in zip(got, texts):  # one unpadded forward per text
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            expected = decoder(input_ids=ids).last_hidden_state[0].mean(0)
            torch.testing.assert_close(row, expected, rtol=1e-4, atol=1e-5)


def test_route_is_argmax_of_centred_cosine_by_hand():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(3, 5)) + 4.0  # a shared offset: what centring removes
    counts = np.array([10, 30, 20])
    X = rng.normal(size=(50, 5)) + 4.0
    centre = (P * counts[:, None]).sum(0) / counts.sum()
    Pc = (P - centre) / np.linalg.norm(P - centre, axis=1, keepdims=True)
    Xc = (X - centre) / np.linalg.norm(X - centre, axis=1, keepdims=True)
    expected = (Xc @ Pc.T).argmax(1).tolist()
    prototypes = [Prototype(f"t{k}", P[k].tolist(), int(counts[k])) for k in range(3)]
    assert nearest_prototype(torch.tensor(X), prototypes) == expected
    assert len(set(expected)) > 1
    assert nearest_prototype(torch.tensor(X), prototypes[:1]) == [0] * 50  # one task learnt: everything goes to it
    with pytest.raises(ValueError, match="at least one"):
        nearest_prototype(torch.tensor(X), [])


def test_per_task_with_the_prototype_router_on_builtin_tasks(tmp_path, tiny_model, tokenizer):
    """Router accuracy and the end accuracy with the router against the oracle (task id given); the
    stored router accuracy recomputed from the stored prototypes and fresh features."""
    raw = {"name": "routed", "base_model": "tiny-llama", "tasks": ["builtin:topic", "builtin:animal", "builtin:sentiment"],
           "max_train": 128, "max_test": 48, "lora": {"r": 4},
           "train": {"steps": 120, "lr": 3e-3, "batch_size": 16, "max_length": 96, "progress": False},
           "eval": {"batch_size": 16}, "strategies": [{"name": "per_task", "router": "prototype"}]}
    reg = Registry.open(tmp_path / "r")
    run = run_bench(BenchConfig.from_dict(raw), reg, echo=lambda m: None)
    cell = run.results["strategies"]["per_task"]["cells"]["per_task"]
    router = cell["router"]
    assert router["accuracy"][0] == 1.0  # one task: nothing to confuse
    assert router["accuracy"][-1] >= 0.85, router  # three tasks with different inputs
    acc = sum(cell["matrix"][-1]) / 3
    assert router["acc_over_oracle"] == pytest.approx(acc / router["oracle_acc"])
    assert router["acc_over_oracle"] >= 0.85
    # the routed system really applies the adapters: on every task it beats the bare base model by far
    # (a router that applied no adapter would score exactly the base model)
    for j, task in enumerate(run.results["tasks"]):
        assert cell["matrix"][-1][j] >= run.results["base"][j] + 0.3, (task, cell["matrix"][-1], run.results["base"])
    # recompute: prototypes from the registered states' info, test features from the base model
    model = tiny_model()
    infos = [reg.get(ref) for ref in cell["states"]]
    prototypes = [Prototype.from_dict(i.metadata["info"]["prototype"]) for i in infos]
    tasks = [load_task(spec, max_train=128, max_test=48) for spec in raw["tasks"]]
    own = prototype(model, tokenizer, "topic", [ex.text for ex in tasks[0].train], max_length=96)
    np.testing.assert_allclose(own.mean, prototypes[0].mean, rtol=1e-5, atol=1e-6)
    hits = sum(sum(c == j for c in nearest_prototype(features(model, tokenizer, [ex.text for ex in t.test], max_length=96),
                                         prototypes)) for j, t in enumerate(tasks))
    assert router["accuracy"][-1] == pytest.approx(hits / (3 * 48))


def test_unknown_router_is_refused():
    with pytest.raises(ValueError, match="parameter router must be one of oracle, prototype"):
        BenchConfig.from_dict({"tasks": ["builtin:topic"], "strategies": [{"name": "per_task", "router": "knn"}]})
