"""LoRA engine speed: ours vs PEFT on the same model, config and inputs, measured in one run.

  1. a training step (forward + backward + AdamW) and an inference forward, one adapter, r=16;
  2. a mixed batch over 4 adapters: our routed forward vs PEFT's `adapter_names` forward;
  3. the routed forward's overhead over the bare base model's forward.

Timings interleave ours and PEFT's repetitions (ABAB...) so drift on a shared CPU hits both alike;
each number is a median. Run:  python benchmarks/bench_lora.py [--model smollm2-135m-shape] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _results import emit  # benchmarks/ is on sys.path when a script runs

from adapter_hub import LoraConfig, attach
from adapter_hub.lora import lora_layers, route


def build_model(name: str, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    from adapter_hub.models.loading import load_base_model

    if name == "smollm2-135m-shape":  # SmolLM2-135M's exact architecture, random init (no files needed)
        config = AutoConfig.for_model(
            "llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config).to(device).eval()
    return load_base_model(name, device=device)


def randomise(model, names, std=0.02):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            for n in names:
                if n in layer.lora_B:
                    layer.lora_B[n].copy_(torch.randn(layer.lora_B[n].shape, generator=g) * std)


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleaved(fns: dict, repeats: int, warmup: int, sync) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            samples[k].append(timed(fn, sync))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-shape")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    import peft

    device = args.device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base = build_model(args.model, device)
    vocab = base.config.vocab_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(device)
    results: dict[str, float | str] = {"model": args.model, "device": device, "batch": f"{args.batch}x{args.seq}",
                                       "rank": args.rank, "torch": torch.__version__, "peft": peft.__version__}

    # ---- 1. one adapter: training step and forward ------------------------------------------------
    ours = attach(copy.deepcopy(base), LoraConfig(r=args.rank, alpha=32), name="a", seed=0)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=args.rank, lora_alpha=32,
                                                                       target_modules="all-linear"))
    randomise(ours, ["a"])
    opt_ours = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-4)
    opt_theirs = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-4)
    labels = x.clone()

    def step(model, opt):
        def run():
            opt.zero_grad(set_to_none=True)
            model(input_ids=x, labels=labels).loss.backward()
            opt.step()
        return run

    ours.train(), theirs.train()
    t = interleaved({"ours": step(ours, opt_ours), "peft": step(theirs, opt_theirs)}, args.repeats, 2, sync)
    results.update(train_step_ours_s=t["ours"], train_step_peft_s=t["peft"], train_step_ratio=t["ours"] / t["peft"])
    ours.eval(), theirs.eval()

    def forward(model, **kw):
        def run():
            with torch.inference_mode():
                model(input_ids=x, **kw)
        return run

    t = interleaved({"ours": forward(ours), "peft": forward(theirs)}, args.repeats, 2, sync)
    results.update(forward_ours_s=t["ours"], forward_peft_s=t["peft"], forward_ratio=t["ours"] / t["peft"])
    del ours, theirs, opt_ours, opt_theirs

    # ---- 2 + 3. a mixed batch over 4 adapters -----------------------------------------------------
    names = ["a0", "a1", "a2", "a3"]
    ours = copy.deepcopy(base)
    for i, n in enumerate(names):
        attach(ours, LoraConfig(r=args.rank, alpha=32), name=n, seed=i)
    randomise(ours, names)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=args.rank, lora_alpha=32,
                                                                       target_modules="all-linear"),
                                 adapter_name=names[0])
    for n in names[1:]:
        theirs.add_adapter(n, peft.LoraConfig(r=args.rank, lora_alpha=32, target_modules="all-linear"))
    theirs.eval()
    rows = [names[i % 4] for i in range(args.batch * 2)]
    xm = torch.randint(0, vocab, (len(rows), args.seq), generator=g).to(device)
    bare = copy.deepcopy(base)

    def routed():
        with torch.inference_mode(), route(ours, rows):
            ours(input_ids=xm)

    def peft_mixed():
        with torch.inference_mode():
            theirs(input_ids=xm, adapter_names=rows)

    def bare_forward():
        with torch.inference_mode():
            bare(input_ids=xm)

    t = interleaved({"routed": routed, "peft": peft_mixed, "base": bare_forward}, args.repeats, 2, sync)
    results.update(
        mixed_batch=f"{len(rows)}x{args.seq} over {len(names)} adapters",
        mixed_routed_s=t["routed"], mixed_peft_s=t["peft"], mixed_speedup_vs_peft=t["peft"] / t["routed"],
        base_forward_s=t["base"], routed_overhead_vs_base=t["routed"] / t["base"],
    )
    emit(results, args.json, spec=".4f")


if __name__ == "__main__":
    main()
