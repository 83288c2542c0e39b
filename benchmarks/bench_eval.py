"""Evaluating many adapter states on many tasks: routed vs one adapter at a time vs PEFT's set_adapter loop.

Setting (issue: forgetting evaluation): a tiny model, 4 adapters (+ the bare base model) × 4 built-in
tasks, label ranking by log-likelihood. Three ways to fill the same 5×4 table:

  routed     evaluate_states: each task in ONE pass, every row routed to its own adapter
  loop       evaluate_states_loop: attach, score, detach — one (adapter, task) at a time, same scorer
  peft       a PeftModel holding the 4 adapters, set_adapter() per adapter, each label scored with its
             own full forward of prompt + label (no shared-prompt cache), as one writes it with PEFT

All three must agree on every accuracy (checked here). Prints times and ratios; --device cuda runs it
on a GPU (scripts/gpu_check.sh). Run:  python benchmarks/bench_eval.py [--batch-size 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import emit  # benchmarks/ is on sys.path when a script runs

from adapter_hub import LoraAdapter, LoraConfig, attach, load_base_model, load_tokenizer
from adapter_hub.data import load_task
from adapter_hub.data.prompts import encode_prompt, encode_target
from adapter_hub.evaluation import EvalConfig, evaluate_states
from adapter_hub.evaluation.states import evaluate_states_loop
from adapter_hub.evaluation.text import normalise
from adapter_hub.lora import detach, lora_layers

TASKS = ["sentiment", "topic", "animal", "sentiment_flip"]


def make_adapters(model, n: int) -> dict[str, LoraAdapter]:
    out = {}
    for i in range(n):
        attach(model, LoraConfig(r=8, alpha=16), name="x", seed=i)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for _, layer in lora_layers(model):
                layer.lora_B["x"].copy_(torch.randn(layer.lora_B["x"].shape, generator=g).to(layer.lora_B["x"]) * 0.05)
        out[f"a{i}"] = LoraAdapter.from_model(model, "x")
        detach(model, "x")
    return out


def peft_loop(base, tokenizer, tasks, adapters, folder, batch_size: int, device) -> dict[str, dict[str, float]]:
    """PEFT: load each adapter folder, set_adapter, score every label with its own forward."""
    import peft

    names = list(adapters)
    model = peft.PeftModel.from_pretrained(base, f"{folder}/{names[0]}", adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(f"{folder}/{n}", adapter_name=n)
    model.eval()
    results: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for n in names:
            model.set_adapter(n)
            results[n] = {}
            for task in tasks:
                reserve = max(len(encode_target(tokenizer, label, eos=False)) for label in task.labels)
                correct = 0
                for start in range(0, len(task.test), batch_size):
                    batch = task.test[start:start + batch_size]
                    prompts = [encode_prompt(tokenizer, task, ex.text, 256, reserve)[0] for ex in batch]
                    scores = torch.stack([_label_logprob(model, tokenizer, prompts, label, device) for label in task.labels], 1)
                    preds = [task.labels[k] for k in scores.argmax(1).tolist()]
                    correct += sum(normalise(p) == normalise(ex.target) for p, ex in zip(preds, batch))
                results[n][task.name] = correct / len(task.test)
    return results


def _label_logprob(model, tokenizer, prompts, label, device) -> torch.Tensor:
    cand = encode_target(tokenizer, label, eos=False)
    seqs = [p + cand for p in prompts]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
    total = torch.zeros(len(seqs), device=device)
    for i, p in enumerate(prompts):
        positions = torch.arange(len(p) - 1, len(p) - 1 + len(cand), device=device)
        total[i] = logp[i, positions, torch.tensor(cand, device=device)].mean()
    return total.cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="examples per forward (all three paths)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-peft", action="store_true")
    parser.add_argument("--no-shared-prefix", action="store_true",
                        help="encode every prompt whole (the scorer before the shared-instruction cache)")
    parser.add_argument("--json")
    args = parser.parse_args()
    import tempfile

    device = torch.device(args.device)
    model = load_base_model(args.model, device=device)
    tokenizer = load_tokenizer(args.model)
    tasks = [load_task(f"builtin:{t}") for t in TASKS]
    adapters = make_adapters(model, args.adapters)
    states = {**adapters, "base": None}
    cfg = EvalConfig(batch_size=args.batch_size, shared_prefix=not args.no_shared_prefix)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn):
        times, out = [], None
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    evaluate_states(model, tokenizer, tasks[:1], states, cfg)  # warm-up
    t_routed, routed = timed(lambda: evaluate_states(model, tokenizer, tasks, states, cfg))
    t_loop, loop = timed(lambda: evaluate_states_loop(model, tokenizer, tasks, states, cfg))
    agree = all(routed[s][t.name].accuracy == loop[s][t.name].accuracy for s in states for t in tasks)
    results = {"model": args.model, "device": str(device), "states": len(states), "tasks": len(tasks),
               "examples_per_task": len(tasks[0].test), "batch_size": args.batch_size,
               "shared_prefix": cfg.shared_prefix,
               "routed_s": t_routed, "loop_s": t_loop, "speedup_vs_loop": t_loop / t_routed,
               "routed_equals_loop": agree}
    if not args.skip_peft:
        with tempfile.TemporaryDirectory() as folder:
            for name, adapter in adapters.items():
                adapter.save(f"{folder}/{name}")
            base = load_base_model(args.model, device=device)
            t_peft, peft_acc = timed(lambda: peft_loop(base, tokenizer, tasks, adapters, folder, args.batch_size, device))
        results.update(peft_s=t_peft, speedup_vs_peft=t_peft / t_routed,
                       peft_equals_routed=all(abs(peft_acc[s][t.name] - routed[s][t.name].accuracy) < 1e-9
                                              for s in adapters for t in tasks))
    emit(results, args.json, width=22, spec=".4g")


if __name__ == "__main__":
    main()
