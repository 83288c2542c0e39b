"""Training one task: the answer-only head gives the full-logits loss, gradient accumulation weighs every
answer token alike (the full batch's gradient), a non-finite loss leaves the adapter as it was, and the
warmup/cosine schedules follow hand-computed learning rates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adapter_hub import LoraConfig, attach
from adapter_hub.data import load_task
from adapter_hub.data.prompts import encode_examples
from adapter_hub.lora import lora_parameters
from adapter_hub.training import TrainConfig, train_on
from adapter_hub.training import loss as train_loss
from adapter_hub.training.batches import IGNORE, collate
from adapter_hub.training.loss import accumulate, answer_loss


def _examples(tokenizer, n=12):
    task = load_task("builtin:topic", max_train=n)
    encoded, _ = encode_examples(tokenizer, task, task.train, 256)
    return encoded


def _model(tiny_model, name="tiny-llama"):
    model = attach(tiny_model(name), LoraConfig(r=4, alpha=8), name="a", seed=0)
    with torch.no_grad():  # B ≠ 0 so that A gets gradients too
        for p in lora_parameters(model, ["a"]):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model


def full_logits_loss(model, batch):
    """The reference: every position's logits, then the mean cross-entropy over answer tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_answer_only_head_equals_the_full_logits_loss(tiny_model, tokenizer, name):
    model = _model(tiny_model, name)
    batch = collate(_examples(tokenizer, 6), tokenizer.pad_token_id, torch.device("cpu"))
    ours, n = answer_loss(model, batch)
    assert n == int((batch["labels"] != IGNORE).sum())
    torch.testing.assert_close(ours, full_logits_loss(model, batch), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_the_shared_instruction_runs_once_with_the_same_loss_and_gradients(tiny_model, tokenizer, name, monkeypatch):
    """The rows' common instruction goes through the decoder as one row: loss and LoRA gradients equal
    those of the full-logits reference, and fewer tokens pass through the model."""
    monkeypatch.setattr(train_loss, "MIN_SAVED_FLOPS", 0)  # a tiny model saves too little to share by default
    model = _model(tiny_model, name).eval()  # eval: GPT-2's dropout off, so sharing applies to both shapes
    batch = collate(_examples(tokenizer, 6), tokenizer.pad_token_id, torch.device("cpu"))
    assert batch["common_prefix"] >= 20  # the instruction is shared
    tokens = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: tokens.append(args[0].numel()))
    params = lora_parameters(model, ["a"])
    try:
        loss, _ = answer_loss(model, batch)
        shared_tokens, tokens[:] = sum(tokens), []
        ours = torch.autograd.grad(loss, params)
        reference_loss = full_logits_loss(model, batch)
        reference = torch.autograd.grad(reference_loss, params)
    finally:
        handle.remove()
    assert shared_tokens == batch["input_ids"].numel() - 5 * batch["common_prefix"]
    torch.testing.assert_close(loss, reference_loss, atol=1e-5, rtol=1e-6)
    for g, r in zip(ours, reference):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-4)


def test_no_shared_instruction_under_dropout_or_for_one_row(tiny_model, tokenizer, monkeypatch):
    from adapter_hub.training.loss import shared_prefix_length

    examples = _examples(tokenizer, 6)
    batch = collate(examples, tokenizer.pad_token_id, torch.device("cpu"))
    llama = _model(tiny_model).train()
    assert shared_prefix_length(llama, batch) == 0  # a tiny model saves less than the extra call costs
    monkeypatch.setattr(train_loss, "MIN_SAVED_FLOPS", 0)
    assert shared_prefix_length(llama, batch) == batch["common_prefix"]
    assert shared_prefix_length(llama, collate(examples[:1], tokenizer.pad_token_id, torch.device("cpu"))) == 0
    assert shared_prefix_length(_model(tiny_model, "tiny-gpt2").train(), batch) == 0  # GPT-2's own dropout
    lora_dropout = attach(tiny_model(), LoraConfig(r=4, alpha=8, dropout=0.1), name="a", seed=0).train()
    assert shared_prefix_length(lora_dropout, batch) == 0  # one mask over the prefix would tie the rows
    assert shared_prefix_length(lora_dropout.eval(), batch) == batch["common_prefix"]
    mixed = collate(examples[:3] + _other_task(tokenizer), tokenizer.pad_token_id, torch.device("cpu"))
    assert mixed["common_prefix"] < batch["common_prefix"] // 2  # two tasks' instructions: little in common


def _other_task(tokenizer):
    task = load_task("builtin:sentiment", max_train=3)
    return encode_examples(tokenizer, task, task.train, 256)[0]


def test_accumulation_gives_the_full_batch_gradient(tiny_model, tokenizer):
    """Micro-batches with different answer-token counts: the accumulated gradient equals one backward
    over all examples (equal weights per micro-batch would overweight the shorter one's tokens)."""
    examples = _examples(tokenizer, 9)
    examples = sorted(examples, key=lambda e: len(e.target))
    assert len(examples[0].target) != len(examples[-1].target)  # the split really is unequal
    device = torch.device("cpu")

    def grads(splits):
        model = _model(tiny_model)
        params = lora_parameters(model, ["a"])
        accumulate(model, [collate(s, tokenizer.pad_token_id, device) for s in splits])
        return [p.grad.clone() for p in params]

    whole = grads([examples])
    for split in ([examples[:2], examples[2:]], [examples[:5], examples[5:7], examples[7:]]):
        for g, ref in zip(grads(split), whole):
            torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-4)  # fp32 summation order; equal weights per
            # micro-batch would be off by far more (the splits' token counts differ)


def test_a_non_finite_loss_leaves_the_adapter_as_after_the_last_good_step(tiny_model, tokenizer):
    examples = _examples(tokenizer)
    config = TrainConfig(lr=1e-2, steps=2, batch_size=4, progress=False)
    clean = _model(tiny_model)
    train_on(clean, examples, config, pad_id=tokenizer.pad_token_id)
    calls = {"n": 0}

    def nan_at_step_3():
        calls["n"] += 1
        value = torch.tensor(float("nan") if calls["n"] == 3 else 0.0)
        return value.requires_grad_()

    poisoned = _model(tiny_model)
    with pytest.raises(FloatingPointError, match="non-finite at step 3.*left as after step 2"):
        train_on(poisoned, examples, TrainConfig(lr=1e-2, steps=5, batch_size=4, progress=False),
                 pad_id=tokenizer.pad_token_id, extra_loss=nan_at_step_3)
    for p, q in zip(lora_parameters(poisoned, ["a"]), lora_parameters(clean, ["a"])):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, atol=0, rtol=0)  # same seed, same batches: bit-identical


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rates_follow_the_schedule(tiny_model, tokenizer, schedule):
    lr, total = 1e-3, 10
    result = train_on(_model(tiny_model), _examples(tokenizer),
                      TrainConfig(lr=lr, steps=total, batch_size=4, warmup_ratio=0.2, schedule=schedule, progress=False),
                      pad_id=tokenizer.pad_token_id)
    warmup = 2  # round(0.2 · 10)
    expected = [lr * (s + 1) / warmup for s in range(warmup)]
    for s in range(warmup, total):
        factor = 1.0 if schedule == "constant" else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        expected.append(lr * factor)
    assert result.lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert len(result.losses) == total


def test_grad_accum_counts_every_micro_batch(tiny_model, tokenizer):
    examples = _examples(tokenizer, 8)
    result = train_on(_model(tiny_model), examples, TrainConfig(lr=1e-3, steps=1, batch_size=4, grad_accum=2,
                                                                progress=False), pad_id=tokenizer.pad_token_id)
    assert result.tokens == sum(len(e.target) for e in examples)  # both micro-batches, every example once

