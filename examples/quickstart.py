"""A tour of the Python API in about a minute on a CPU, with the tiny random model (no downloads).

    python examples/quickstart.py [--registry /tmp/quickstart-registry]

Trains two built-in tasks, registers both adapters, merges them exactly and with TIES, composes a
linear expression over registry references, and scores everything on both tasks in one routed pass.
"""

from __future__ import annotations

import argparse
import tempfile

from adapter_hub import (
    LoraAdapter,
    LoraConfig,
    attach,
    load_base_model,
    load_tokenizer,
    ops,
)
from adapter_hub.data import load_task
from adapter_hub.evaluation import evaluate_states
from adapter_hub.lora import detach
from adapter_hub.training import TrainConfig, train_task
from registry import Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=tempfile.mkdtemp(prefix="quickstart-registry-"))
    args = parser.parse_args()
    reg = Registry.open(args.registry)
    model, tokenizer = load_base_model("tiny-llama"), load_tokenizer("tiny-llama")
    tasks = [load_task("builtin:topic"), load_task("builtin:animal")]

    for task in tasks:  # one adapter per task, each registered as a version of its task
        attach(model, LoraConfig(r=8), name=task.name, seed=0)
        train_task(model, tokenizer, task, TrainConfig(lr=3e-3, steps=250, batch_size=16, progress=False))
        version = reg.register(LoraAdapter.from_model(model, task.name), task=task.name, tags={"source": "quickstart"})
        detach(model, task.name)
        print(f"registered {version.ref} ({version.digest[:19]}...)")

    topic, animal = reg.load("topic"), reg.load("animal")
    exact = ops.linear([topic, animal])                      # exactly ΔW_topic + ΔW_animal (rank 16)
    small = ops.reduce_rank(exact, rank=8)                    # optimal rank-8 approximation
    ties = ops.merge([topic, animal], "ties", density=0.5, rank=8)
    composed = ops.compose("0.5*topic + 0.5*animal", registry=reg)
    print(f"relative error of the rank-8 approximation: {small.provenance['max_relative_error']:.3f}")
    for name, adapter in [("merged-exact", exact), ("merged-ties", ties)]:
        print(f"registered {reg.register(adapter, task=name).ref} (lineage: "
              f"{[e.parent for e in reg.lineage(name)]})")

    states = {"base": None, "topic": topic, "animal": animal, "linear": exact, "rank 8": small, "ties": ties,
              "0.5/0.5": composed}
    scores = evaluate_states(model, tokenizer, tasks, states)  # one routed pass per task for all 7 states
    print(f"\n{'state':10s} " + " ".join(f"{t.name:>8s}" for t in tasks))
    for label in states:
        print(f"{label:10s} " + " ".join(f"{scores[label][t.name].accuracy:8.3f}" for t in tasks))
    print(f"\nregistry: {reg.location}  (try: adapter-hub --registry {reg.location} list)")


if __name__ == "__main__":
    main()
