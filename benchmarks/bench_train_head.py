"""A training step's two savings: the head only at the answer positions, the shared instruction once.

Every path: one forward + backward of the answer loss on the same batch, LoRA r=16 on all linear layers.
  full      logits (B, T, V) at every position, upcast, then the loss (the path before both savings)
  answer    the decoder on every token, the head on the answer positions only
  shared    as answer, and the instruction all rows start with through the decoder once, as a one-row
            cache every row continues from (adapter_hub.training.loss.answer_loss, the default)
Interleaved, medians; all losses must agree to 1e-5.

    python benchmarks/bench_train_head.py --model smollm2-135m --batch 4 --seq 64
    python benchmarks/bench_train_head.py --model smollm2-135m --batch 8 --seq 128 --task ../shared/data/cl_benchmark/dbpedia
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from adapter_hub import LoraConfig, attach, load_base_model, load_tokenizer
from adapter_hub.data import load_task
from adapter_hub.data.prompts import encode_examples
from adapter_hub.training.batches import IGNORE, collate
from adapter_hub.training.loss import answer_loss


def full_logits_loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64, help="tokens per example (inputs cut from the left)")
    parser.add_argument("--task", default="builtin:topic", help="a built-in task or a data folder")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = attach(load_base_model(args.model, device=device), LoraConfig(r=16, alpha=32), name="a", seed=0).train()
    tokenizer = load_tokenizer(args.model)
    task = load_task(args.task, max_train=args.batch)
    examples, _ = encode_examples(tokenizer, task, task.train, args.seq)
    batch = collate(examples, tokenizer.pad_token_id, device)
    unshared = {**batch, "common_prefix": 0}
    paths = {"full": full_logits_loss, "answer": lambda m, b: answer_loss(m, unshared)[0],
             "shared": lambda m, b: answer_loss(m, b)[0]}
    losses = {name: float(fn(model, batch)) for name, fn in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():  # interleaved: drift hits both alike
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(model, batch).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    tokens = int(batch["attention_mask"].sum())
    print(f"{args.model}, {args.task}, batch {args.batch} x <= {args.seq} tokens ({tokens} real, "
          f"{int(batch['answer_targets'].numel())} answer, instruction {batch['common_prefix']} shared), "
          f"{args.device}, threads {torch.get_num_threads()}")
    for name in paths:
        print(f"  {name:6s} step {med[name] * 1000:8.1f} ms   loss {losses[name]:.6f}")
    ratios = {"head": med["full"] / med["answer"], "prefix": med["answer"] / med["shared"],
              "both": med["full"] / med["shared"]}
    worst = max(abs(losses[name] - losses["full"]) for name in paths)
    print(f"  answer-only head {ratios['head']:.2f}x, shared instruction {ratios['prefix']:.2f}x on top, both "
          f"{ratios['both']:.2f}x the full path's speed; |loss difference| {worst:.2e} (must be <= 1e-5)")
    assert worst <= 1e-5
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "task": args.task, "batch": args.batch, "seq": args.seq,
                       "tokens": tokens, "shared_prefix": batch["common_prefix"], "median_s": med,
                       "ratios": ratios, "losses": losses}, fh, indent=2)


if __name__ == "__main__":
    main()
