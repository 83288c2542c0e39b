"""Scoring against independent references: naive per-label full forwards, HF generate, the one-at-a-time loop."""

from __future__ import annotations

import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig, attach
from adapter_hub.data import Example, Task, load_task
from adapter_hub.data.prompts import encode_prompt, encode_target
from adapter_hub.evaluation import (
    CURRENT,
    EvalConfig,
    Routed,
    decoding,
    evaluate_states,
    score,
    scoring,
)
from adapter_hub.evaluation.decoding import packed_candidates
from adapter_hub.evaluation.prefix import prefix_to_share, prompt_pass
from adapter_hub.evaluation.states import evaluate_states_loop
from adapter_hub.evaluation.text import token_f1
from adapter_hub.lora import detach, lora_layers


def _adapters(model, n=3, std=0.05):
    out = {}
    for i in range(n):
        attach(model, LoraConfig(r=4, alpha=8), name="x", seed=i)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for _, layer in lora_layers(model):
                layer.lora_B["x"].copy_(torch.randn(layer.lora_B["x"].shape, generator=g) * std)
        out[f"a{i}"] = LoraAdapter.from_model(model, "x")
        detach(model, "x")
    return out


def naive_predictions(model, tokenizer, task, max_length=256):
    """Each label scored with its own full forward of prompt + label; mean log-prob of the label tokens."""
    reserve = max(len(encode_target(tokenizer, label, eos=False)) for label in task.labels)
    preds = []
    with torch.no_grad():
        for ex in task.test:
            prompt, _ = encode_prompt(tokenizer, task, ex.text, max_length, reserve)
            best, best_label = None, None
            for label in task.labels:
                cand = encode_target(tokenizer, label, eos=False)
                logp = torch.log_softmax(model(torch.tensor([prompt + cand])).logits[0].double(), -1)
                value = sum(float(logp[len(prompt) - 1 + t, c]) for t, c in enumerate(cand)) / len(cand)
                if best is None or value > best:
                    best, best_label = value, label
            preds.append(best_label)
    return preds


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager", "padding-masks-only"])
def test_shared_prompt_ranking_equals_one_forward_per_label(tiny_model, tokenizer, name, attention, monkeypatch):
    """All three candidate passes: packed under a 4D mask (sdpa: boolean, eager: additive) and the
    per-candidate cache copies used where attention takes padding masks only."""
    model = tiny_model(name)
    if attention == "padding-masks-only":
        monkeypatch.setattr(decoding, "takes_custom_masks", lambda model: False)
    else:
        model.set_attn_implementation(attention)
    adapter = _adapters(model, 1, std=0.2)["a0"]
    attach(model, adapter, name="a")
    task = load_task("builtin:topic", max_test=40)  # 4 labels of different lengths, shared first letters
    ours = score(model, tokenizer, task, config=EvalConfig(batch_size=7))[CURRENT]
    assert ours.predictions == naive_predictions(model, tokenizer, task)
    assert len(set(ours.predictions)) > 1  # a non-trivial check: not one constant answer


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_candidates_equal_full_forwards(tiny_model, attention):
    """The packed candidate pass against one full forward of prompt + candidate per pair, including a
    one-token candidate (nothing after its first token: contributes 0) and prompts of unequal length."""
    model = tiny_model()
    model.set_attn_implementation(attention)
    model.eval()
    prompts = [[1, 40, 41, 42, 43, 44, 45], [1, 50, 51, 52], [1, 60, 61, 62, 63, 64, 65, 66, 67, 68]]
    cands = [[70, 71, 72], [80], [90, 91], [100, 101, 102, 103]]
    with torch.no_grad():
        hidden, cache, mask, positions = prompt_pass(model, 0, prompts, prefix=None)
        packed = packed_candidates(model, cands, cache, mask, positions)
        for i, p in enumerate(prompts):
            for k, c in enumerate(cands):
                logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].double(), -1)
                expected = sum(float(logp[len(p) + j, c[j + 1]]) for j in range(len(c) - 1))
                assert abs(float(packed[i, k]) - expected) < 1e-4
    assert packed[:, 1].abs().max() == 0 and packed[:, 3].abs().min() > 1.0


def test_greedy_decoding_equals_hf_generate(tiny_model, tokenizer):
    model = tiny_model()
    attach(model, _adapters(model, 1, std=0.2)["a0"], name="a")
    task = load_task("builtin:animal", max_test=12)
    ours = score(model, tokenizer, task, config=EvalConfig(scorer="generate", max_new_tokens=6, batch_size=5))[CURRENT]
    for ex, pred in zip(task.test, ours.predictions):
        prompt, _ = encode_prompt(tokenizer, task, ex.text, 256, reserve=6)
        out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        expected = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
        assert pred == expected


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("scorer", ["loglik", "generate"])
def test_shared_prefix_cache_changes_no_prediction(tiny_model, tokenizer, name, scorer):
    """Encoding the instruction once and reusing its cache must give the same answers as whole prompts,
    for one state and for routed states (whose prefix cache has one row per state)."""
    model = tiny_model(name)
    adapters = _adapters(model, 2, std=0.2)
    task = load_task("builtin:topic", max_test=30)
    prompts = [encode_prompt(tokenizer, task, ex.text, 256, 8)[0] for ex in task.test]
    assert prefix_to_share(prompts) >= 20  # the instruction really is shared and gets cached
    states = {**adapters, "base": None}
    with_prefix, whole = (
        evaluate_states(model, tokenizer, [task], states,
                        EvalConfig(scorer=scorer, batch_size=8, max_new_tokens=6, shared_prefix=shared))
        for shared in (True, False))
    for label in states:
        assert with_prefix[label]["topic"].predictions == whole[label]["topic"].predictions
    assert len({tuple(with_prefix[s]["topic"].predictions) for s in states}) > 1


def test_shared_prefix_length_leaves_every_prompt_a_token():
    assert prefix_to_share([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7, 8]]) == 5
    assert prefix_to_share([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 8]]) == 5  # one is a prefix of the other
    assert prefix_to_share([[1, 2, 3, 9, 9], [1, 2, 3, 8, 8]]) == 0  # under MIN_SHARED_PREFIX: not worth it
    assert prefix_to_share([[1, 2, 3, 4, 5, 6]]) == 5


@pytest.mark.parametrize("scorer", ["loglik", "generate"])
def test_routed_evaluation_equals_the_one_at_a_time_loop(tiny_model, tokenizer, scorer):
    model = tiny_model()
    adapters = _adapters(model, 3, std=0.1)
    tasks = [load_task(f"builtin:{n}", max_test=48) for n in ("sentiment", "topic", "animal")]
    pick = [adapters["a0"], adapters["a1"], None, adapters["a2"]]  # a router's choice per example
    states = {**adapters, "base": None,
              "per_task": {"sentiment": adapters["a0"], "topic": adapters["a2"], "animal": None},
              "routed": Routed({t.name: [pick[e % 4] for e in range(len(t.test))] for t in tasks})}
    cfg = EvalConfig(scorer=scorer, batch_size=16)
    routed = evaluate_states(model, tokenizer, tasks, states, cfg)
    loop = evaluate_states_loop(model, tokenizer, tasks, states, cfg)
    for label in states:
        for t in tasks:
            assert routed[label][t.name].accuracy == loop[label][t.name].accuracy
            assert routed[label][t.name].predictions == loop[label][t.name].predictions
    assert routed["per_task"]["sentiment"].predictions == routed["a0"]["sentiment"].predictions
    assert routed["per_task"]["animal"].predictions == routed["base"]["animal"].predictions
    # the routed state answers each example with the adapter chosen for it (a1 is used nowhere else)
    by_name = {id(a): label for label, a in adapters.items()}
    for t in tasks:
        for e, prediction in enumerate(routed["routed"][t.name].predictions):
            alone = "base" if pick[e % 4] is None else by_name[id(pick[e % 4])]
            assert prediction == routed[alone][t.name].predictions[e]
        assert routed["routed"][t.name].correct == [
            int(p == ex.target) for p, ex in zip(routed["routed"][t.name].predictions, t.test)]
    assert len({tuple(routed[s]["topic"].predictions) for s in adapters}) > 1  # the adapters really differ
    from adapter_hub.lora import list_adapters

    assert list_adapters(model) == []  # evaluation leaves the model as it found it


def test_generation_metrics_on_free_text(tiny_model, tokenizer):
    task = Task("echo", [Example("a", "b")], [Example("abc", "x y"), Example("d", "z")], labels=None)
    model = tiny_model()
    result = score(model, tokenizer, task, config=EvalConfig(scorer="generate", max_new_tokens=4))[CURRENT]
    assert result.n == 2 and result.f1 is not None and 0.0 <= result.f1 <= 1.0
    with pytest.raises(ValueError, match="use scorer='generate'"):
        score(model, tokenizer, task)


@pytest.mark.parametrize("prediction, target, f1", [
    ("the cat sat", "the cat sat", 1.0),
    ("the cat", "the cat sat", 0.8),
    ("dog", "the cat sat", 0.0),
    ("The Cat, sat!", "the cat sat", 1.0),
    ("", "", 1.0),
])
def test_token_f1_by_hand(prediction, target, f1):
    assert token_f1(prediction, target) == pytest.approx(f1)


def test_evaluation_inputs_are_checked(tiny_model, tokenizer):
    task = load_task("builtin:topic", max_test=4)
    with pytest.raises(ValueError, match="scorer must be"):
        EvalConfig(scorer="vibes")
    with pytest.raises(ValueError, match="no test examples"):
        score(tiny_model(), tokenizer, task, examples=[])
    with pytest.raises(KeyError, match="unknown adapter"):
        score(tiny_model(), tokenizer, task, states=["missing"])


def test_an_incompatible_state_raises_its_own_error_and_leaves_the_model_clean(tiny_model, tokenizer):
    """The adapter that cannot attach is named by its real error (not a KeyError from the cleanup), and
    the adapters attached before it are detached again."""
    from adapter_hub.core.errors import IncompatibleAdaptersError
    from adapter_hub.lora import list_adapters

    model = tiny_model("tiny-llama")
    good = _adapters(model, 1)["a0"]
    foreign = _adapters(tiny_model("tiny-gpt2"), 1)["a0"]
    task = load_task("builtin:topic", max_test=4)
    with pytest.raises(IncompatibleAdaptersError):
        evaluate_states(model, tokenizer, [task], {"good": good, "foreign": foreign})
    assert list_adapters(model) == []


def test_rows_per_forward_are_capped_and_predictions_unchanged(tiny_model, tokenizer):
    model = tiny_model()
    states = {**_adapters(model, 5), "base": None}
    task = load_task("builtin:topic", max_test=24)
    rows = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    decoder = getattr(model, "base_model")
    handle2 = decoder.register_forward_pre_hook(lambda m, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                                with_kwargs=True)
    capped = evaluate_states(model, tokenizer, [task], states, EvalConfig(batch_size=16, max_rows=13))
    handle.remove()
    handle2.remove()
    assert rows and max(rows) <= 13  # 6 states: 2 examples (12 rows) per forward instead of 16 (96 rows)
    free = evaluate_states(model, tokenizer, [task], states, EvalConfig(batch_size=16))
    for label in states:
        assert capped[label]["topic"].predictions == free[label]["topic"].predictions


def test_length_sorted_batches_change_no_prediction_and_cut_padding(tiny_model, tokenizer, monkeypatch):
    """Rows are batched by length for less padding; in test order every prediction must be the same."""
    model = tiny_model()
    states = {**_adapters(model, 2, std=0.2), "base": None}
    task = load_task("builtin:topic", max_test=40)
    widths = []
    decoder = getattr(model, "base_model")
    handle = decoder.register_forward_pre_hook(lambda m, args, kwargs: widths.append(kwargs["input_ids"].numel()),
                                               with_kwargs=True)
    config = EvalConfig(batch_size=8, shared_prefix=False)
    try:
        sorted_rows = evaluate_states(model, tokenizer, [task], states, config)
        sorted_tokens, widths[:] = sum(widths), []
        monkeypatch.setattr(scoring, "scoring_order", lambda prompts: list(range(len(prompts))))
        test_order = evaluate_states(model, tokenizer, [task], states, config)
        unsorted_tokens = sum(widths)
    finally:
        handle.remove()
    for label in states:
        assert sorted_rows[label]["topic"].predictions == test_order[label]["topic"].predictions
    assert sorted_tokens < unsorted_tokens  # the point of sorting: fewer (padded) tokens through the model


def test_scored_logits_are_fp32_under_bf16_autocast(tiny_model):
    from adapter_hub.evaluation.forward import head_fp32
    from adapter_hub.models.decoder import decoder_and_head

    _, head = decoder_and_head(tiny_model())
    hidden = torch.randn(5, head.in_features, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head_fp32(head, hidden)
        in_bf16 = head(hidden)
    assert logits.dtype == torch.float32 and in_bf16.dtype == torch.bfloat16  # autocast really was on
    torch.testing.assert_close(logits, hidden @ head.weight.T, atol=1e-6, rtol=1e-6)
