"""Training step with the head only at the answer positions vs the full-vocabulary head everywhere.

Both paths: one forward + backward of the answer loss on the same batch, LoRA r=16 on all linear layers.
"full" computes logits (B, T, V) at every position and upcasts them (the previous path); "answer" runs the
decoder, then the head on the answer positions only (adapter_hub.train.answer_loss). Interleaved,
medians; the two losses must agree to 1e-5.

    python benchmarks/bench_train_head.py --model smollm2-135m --batch 4 --seq 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from adapter_hub import LoraConfig, attach, load_base_model, load_tokenizer
from adapter_hub.data import load_task
from adapter_hub.prompts import encode_examples
from adapter_hub.train import IGNORE, answer_loss, collate


def full_logits_loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64, help="tokens per example (inputs cut from the left)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = attach(load_base_model(args.model, device=device), LoraConfig(r=16, alpha=32), name="a", seed=0).train()
    tokenizer = load_tokenizer(args.model)
    task = load_task("builtin:topic", max_train=args.batch)
    examples, _ = encode_examples(tokenizer, task, task.train, args.seq)
    batch = collate(examples, tokenizer.pad_token_id, device)
    paths = {"full": full_logits_loss, "answer": lambda m, b: answer_loss(m, b)[0]}
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
    print(f"{args.model}, batch {args.batch} x <= {args.seq} tokens ({tokens} real, "
          f"{int(batch['answer_targets'].numel())} answer), {args.device}, threads {torch.get_num_threads()}")
    for name in paths:
        print(f"  {name:6s} step {med[name] * 1000:8.1f} ms   loss {losses[name]:.6f}")
    ratio = med["full"] / med["answer"]
    print(f"  answer-only head: {ratio:.2f}x the full-head step's speed; |loss difference| "
          f"{abs(losses['full'] - losses['answer']):.2e} (must be <= 1e-5)")
    assert abs(losses["full"] - losses["answer"]) <= 1e-5
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "batch": args.batch, "seq": args.seq, "median_s": med, "ratio": ratio,
                       "losses": losses}, fh, indent=2)


if __name__ == "__main__":
    main()
