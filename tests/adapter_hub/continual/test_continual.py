"""Continual-learning strategies on a tiny model and the built-in tasks (CPU, seconds each):
learning works, seq forgets where per_task does not, O-LoRA stays orthogonal, EWC/replay behave as
specified against hand computations, and an interrupted sequence resumes to the identical adapter."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig, attach
from adapter_hub.continual import STRATEGIES, ContinualConfig, make_strategy
from adapter_hub.continual.ewc import ewc_penalty, fisher_diagonal
from adapter_hub.continual.replay import ReplayBuffer
from adapter_hub.continual.runner import run_sequence
from adapter_hub.data import load_task
from adapter_hub.data.prompts import encode_examples
from adapter_hub.evaluation import score
from adapter_hub.lora import detach, lora_layers, lora_parameters
from adapter_hub.training import TrainConfig, train_task
from registry import Registry

FAST = TrainConfig(lr=3e-3, steps=250, batch_size=16, progress=False)


def config(steps: int = 250, r: int = 8) -> ContinualConfig:
    return ContinualConfig(LoraConfig(r=r), TrainConfig(lr=3e-3, steps=steps, batch_size=16, progress=False,
                                                                   seed=0))


def accuracy(model, tokenizer, adapter, task) -> float:
    attach(model, adapter, name="scored")
    try:
        return score(model, tokenizer, task)["current"].accuracy
    finally:
        detach(model, "scored")


@pytest.fixture(scope="module")
def conflict():
    return [load_task("builtin:sentiment"), load_task("builtin:sentiment_flip")]


# ---- one task -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, chance", [("sentiment", 0.5), ("topic", 0.25), ("animal", 1 / 3),
                                          ("sentiment_flip", 0.5)])
def test_training_lowers_loss_and_beats_chance(tiny_model, tokenizer, name, chance):
    model, task = tiny_model(), load_task(f"builtin:{name}")
    before = score(model, tokenizer, task)["current"].accuracy
    attach(model, LoraConfig(r=16), name="a", seed=0)
    result = train_task(model, tokenizer, task, TrainConfig(lr=3e-3, steps=300, batch_size=16, progress=False))
    after = score(model, tokenizer, task)["current"].accuracy
    assert result.summary()["last"] < result.summary()["first"] / 3
    assert after >= 0.85 and after > chance + 0.3 and before < chance + 0.2


def test_training_is_deterministic_on_cpu(tiny_model, tokenizer):
    task = load_task("builtin:topic")
    finals = []
    for _ in range(2):
        model = attach(tiny_model(), LoraConfig(r=4), name="a", seed=1)
        result = train_task(model, tokenizer, task, TrainConfig(lr=3e-3, steps=20, batch_size=8, seed=5, progress=False))
        finals.append((result.losses, [p.detach().clone() for p in lora_parameters(model)]))
    assert finals[0][0] == finals[1][0]
    assert all(torch.equal(a, b) for a, b in zip(finals[0][1], finals[1][1]))


# ---- forgetting ------------------------------------------------------------------------------------


def test_seq_forgets_the_conflicting_task_but_per_task_does_not(tiny_model, tokenizer, conflict):
    model = tiny_model()
    seq = run_sequence("seq", model, tokenizer, conflict, config())
    first_then = accuracy(model, tokenizer, seq.steps[0].state, conflict[0])
    first_after = accuracy(model, tokenizer, seq.steps[1].state, conflict[0])
    assert first_then >= 0.9 and first_after <= first_then - 0.5  # measured: 1.00 -> 0.04

    per_task = run_sequence("per_task", model, tokenizer, conflict, config())
    own = [accuracy(model, tokenizer, per_task.steps[i].state, conflict[i]) for i in range(2)]
    assert min(own) >= 0.9  # each task with its own adapter: nothing to forget
    assert accuracy(model, tokenizer, per_task.steps[0].state, conflict[0]) == first_then  # same seed, same start


def test_olora_keeps_new_subspaces_orthogonal(tiny_model, tokenizer, conflict):
    model = tiny_model()
    inc = run_sequence("inc", model, tokenizer, conflict, config())
    strategy = make_strategy("olora", tiny_model(), tokenizer, config())  # run_sequence's steps, components kept
    olora = [strategy.learn(conflict[0], 1, []), strategy.learn(conflict[1], 2, [conflict[0]])]
    plain, orthogonal = inc.steps[1].info["orthogonality"], olora[1].info["orthogonality"]
    assert orthogonal < 0.1 * plain and orthogonal < 0.005  # measured: 0.0009 vs 0.064
    # the state is the exact sum of both components: ΔW of the state = ΔW_1 + ΔW_2 in every module
    state = olora[1].state
    parts = [LoraAdapter.from_model(strategy.model, name) for name in ("inc1", "inc2")]
    assert set(state.ranks.values()) == {16} and set(state.modules) == set(parts[0].modules)
    for m in state.modules:
        total = parts[0].delta_weight(m, torch.float64) + parts[1].delta_weight(m, torch.float64)
        torch.testing.assert_close(state.delta_weight(m, torch.float64), total, rtol=1e-6, atol=1e-9)
        assert float(parts[1].delta_weight(m).abs().max()) > 0  # both components really contribute


def test_olora_loss_matches_a_hand_computation(tiny_model, tokenizer):
    model = tiny_model()
    strategy = make_strategy("olora", model, tokenizer, config(), lambda1=0.7, lambda2=0.3)
    strategy.new_adapter("inc1", 1)
    strategy.components.append("inc1")
    strategy.new_adapter("inc2", 2)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["inc2"].normal_()
    loss = strategy.extra_loss("inc2")()
    orth, l2 = 0.0, 0.0
    for _, layer in lora_layers(model):
        A1, A2, B2 = (layer.lora_A["inc1"].detach().double(), layer.lora_A["inc2"].detach().double(),
                      layer.lora_B["inc2"].detach().double())
        orth += sum(abs(float(A1[j] @ A2[k])) for j in range(A1.shape[0]) for k in range(A2.shape[0]))
        l2 += float(A2.pow(2).sum().sqrt() + B2.pow(2).sum().sqrt())
    assert loss.item() == pytest.approx(0.7 * orth + 0.3 * l2, rel=1e-5)


def test_nlora_loss_is_the_l1_of_the_new_update_by_hand(tiny_model, tokenizer):
    model = tiny_model()
    strategy = make_strategy("nlora", model, tokenizer, config(), lam=0.3)
    strategy.new_adapter("inc1", 1)
    strategy.components.append("inc1")
    strategy.new_adapter("inc2", 2)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["inc1"].normal_()  # an earlier component: frozen, not penalised
            layer.lora_B["inc2"].normal_()
    loss = strategy.extra_loss("inc2")()
    expected = 0.0
    for _, layer in lora_layers(model):
        A, B = layer.lora_A["inc2"].detach().double(), layer.lora_B["inc2"].detach().double()
        expected += sum(abs(float(B[i] @ A[:, j])) for i in range(B.shape[0]) for j in range(A.shape[1]))
    assert loss.item() == pytest.approx(0.3 * expected, rel=1e-5)
    loss.backward()  # only the new factors get the penalty's gradient
    layer = next(layer for _, layer in lora_layers(model))
    assert layer.lora_B["inc2"].grad is not None and layer.lora_B["inc1"].grad is None
    assert make_strategy("nlora", tiny_model(), tokenizer, config(), lam=0.0).extra_loss("x") is None


def test_nlora_makes_the_update_sparser_than_inc(tiny_model, tokenizer, conflict):
    model = tiny_model()
    plain = run_sequence("inc", model, tokenizer, conflict[:1], config(steps=120))
    sparse = run_sequence("nlora", model, tokenizer, conflict[:1], config(steps=120), params={"lam": 1e-3})
    assert sparse.steps[0].info["sparsity"] > plain_sparsity(plain.steps[0].state) + 0.05
    assert sparse.steps[0].info["sparsity"] == pytest.approx(plain_sparsity(sparse.steps[0].state))


def test_nlora_collision_by_hand(tiny_model):
    """Rank-1 updates with known supports in every adapted layer: the earlier one changes rows {0,1,2}
    of input column 0, the new one rows {1,2,3,4}: 2 of the new update's 4 changed entries collide."""
    from adapter_hub.continual.nlora import collision

    model = tiny_model()
    for name in ("old", "new"):
        attach(model, LoraConfig(r=1, alpha=1), name=name, activate="add")
    with torch.no_grad():
        for _, layer in lora_layers(model):
            for name, rows in (("old", [0, 1, 2]), ("new", [1, 2, 3, 4])):
                layer.lora_A[name].zero_()[0, 0] = 1.0
                layer.lora_B[name].zero_()[rows, 0] = 1.0
    assert collision(model, ["old"], "new") == pytest.approx(0.5)
    assert collision(model, [], "new") == 0.0
    assert collision(model, ["new"], "old") == pytest.approx(2 / 3)


def test_inflora_reports_the_stored_subspace_sizes(tiny_model, tokenizer, conflict):
    strategy = make_strategy("inflora", tiny_model(), tokenizer, config(steps=5))
    for k, task in enumerate(conflict, start=1):
        dims = strategy.learn(task, k, conflict[:k - 1]).info["subspace_dims"]
        sizes = [int(b.shape[1]) for b in strategy.basis.values()]
        assert dims == {"mean": sum(sizes) / len(sizes), "min": min(sizes), "max": max(sizes)}
        assert all(0 < b.shape[1] < b.shape[0] for b in strategy.basis.values())  # a subspace, not all of R^in


def plain_sparsity(adapter) -> float:
    """Share of ΔW entries below 1% of the module's largest |entry|, straight from the adapter's factors."""
    small = total = 0
    for m in adapter.modules:
        d = adapter.delta_weight(m).abs()
        small += int((d < 1e-2 * d.max()).sum())
        total += d.numel()
    return small / total


def test_inflora_leaves_the_stored_subspace_of_earlier_tasks_untouched(tiny_model, tokenizer, conflict):
    """After task 2, the change task 2 made (state 2 − state 1) maps every direction of task 1's stored
    input subspace to zero; A of the new component is exactly what was fixed before training."""
    from adapter_hub.continual.inflora import input_covariances

    model = tiny_model()
    strategy = make_strategy("inflora", model, tokenizer, config(steps=60))
    first = strategy.learn(conflict[0], 1, [])
    basis_1 = {m: b.clone() for m, b in strategy.basis.items()}
    assert all(0 < b.shape[1] < b.shape[0] for b in basis_1.values())  # a real subspace, not all of R^in
    second = strategy.learn(conflict[1], 2, [conflict[0]])
    for m, M in basis_1.items():
        change = second.state.delta_weight(m) - first.state.delta_weight(m)  # (out, in) for Linear layers
        moved = change.double() @ M.double()  # the change's effect on each stored direction
        assert moved.abs().max() < 1e-6 * max(1.0, float(change.abs().max())), m
        assert float(change.abs().max()) > 1e-4  # task 2 did learn something in this layer
    # the stored basis after task 1 against an independent reference: each sampled example run alone
    # (no padding, no masks), the layer's inputs caught by a hook on the wrapped nn.Linear itself,
    # Σ x xᵀ and its eigendecomposition in float64 (numpy), GPM's energy rule applied by hand
    examples = strategy._subspace_sample(strategy.encode(conflict[0])[0], 1)  # the seeded sample it used
    assert len(examples) == 64
    m0 = next(iter(basis_1))
    fresh = make_strategy("inflora", tiny_model(), tokenizer, config(steps=60))
    fresh.learn(conflict[0], 1, [])  # the model as it stood when task 1's subspace was measured
    linear = dict(lora_layers(fresh.model))[m0].base_layer
    seen: list[np.ndarray] = []
    hook = linear.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().double().reshape(-1, args[0].shape[-1]).numpy()))
    try:
        with torch.no_grad():
            for ex in examples:
                fresh.model(input_ids=torch.tensor([ex.prompt + ex.target]))
    finally:
        hook.remove()
    tokens = np.concatenate(seen)  # (every token of every example, in)
    assert tokens.shape[0] == sum(len(ex.prompt) + len(ex.target) for ex in examples)
    reference = tokens.T @ tokens
    ours = input_covariances(fresh.model, examples, tokenizer.pad_token_id, [m0])[m0].cpu().numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())
    values, vectors = np.linalg.eigh(reference)
    values, vectors = values[::-1], vectors[:, ::-1]
    k = int(np.searchsorted(np.cumsum(values) / values.sum(), 0.95) + 1)  # fewest directions holding 95%
    assert basis_1[m0].shape[1] == k
    M = basis_1[m0].double().numpy()
    np.testing.assert_allclose(M @ M.T, vectors[:, :k] @ vectors[:, :k].T, atol=1e-4)  # the same subspace


def test_inflora_trains_b_only(tiny_model, tokenizer, conflict):
    from adapter_hub.continual.inflora import down_projection, input_covariances

    model = tiny_model()
    strategy = make_strategy("inflora", model, tokenizer, config(steps=30))
    strategy.learn(conflict[0], 1, [])
    examples = strategy._subspace_sample(strategy.encode(conflict[1])[0], 2)
    m0 = next(iter(strategy.basis))
    cov = input_covariances(model, examples, tokenizer.pad_token_id, [m0])[m0]  # inc1 active, as in learn
    expected_A = down_projection(cov, strategy.basis[m0], 8).float()
    basis = strategy.basis[m0].clone()
    strategy.learn(conflict[1], 2, [conflict[0]])
    layer = dict(lora_layers(model))[m0]
    torch.testing.assert_close(layer.lora_A["inc2"].detach(), expected_A, rtol=1e-4, atol=1e-6)
    assert float((layer.lora_A["inc2"].detach().double() @ basis.double()).abs().max()) < 1e-6
    assert float(layer.lora_B["inc2"].detach().abs().max()) > 0


@pytest.mark.parametrize("name, params, message", [
    ("nlora", {"lam": -1.0}, "parameter lam must be >= 0"),
    ("inflora", {"threshold": 1.5}, r"parameter threshold must be in \(0, 1\]"),
    ("inflora", {"threshold": 0.0}, r"parameter threshold must be in \(0, 1\]"),
    ("inflora", {"rank": 3}, r"has no parameter\(s\) \['rank'\]"),
    ("inflora", {"subspace_examples": 0}, "parameter subspace_examples must be an integer >= 1"),
    ("replay_gen", {"fraction": -0.1}, r"parameter fraction must be in \[0, 10\]"),
    ("replay_gen", {"top_p": 0.0}, r"parameter top_p must be in \(0, 1\]"),
    ("replay_gen", {"temperature": 0.0}, "parameter temperature must be > 0"),
    ("replay_gen", {"max_new_tokens": 0}, "parameter max_new_tokens must be >= 1"),
])
def test_new_strategies_refuse_bad_parameters(tiny_model, tokenizer, name, params, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(name, tiny_model(), tokenizer, config(), **params)


# ---- EWC --------------------------------------------------------------------------------------------


def test_ewc_penalty_by_hand():
    params = [torch.tensor([3.0, 4.0]), torch.tensor([[0.5]])]
    fisher = [torch.tensor([1.0, 2.0]), torch.tensor([[4.0]])]
    star = [torch.tensor([1.0, 1.0]), torch.tensor([[0.0]])]
    # (λ/2)·Σ F(θ−θ*)² = (2/2)·(1·2² + 2·3² + 4·0.5²) = 4 + 18 + 1 = 23, plus a second task: (2/2)·(1·9+2·16+4·0.25) = 42
    assert float(ewc_penalty(params, [(fisher, star)], lam=2.0)) == pytest.approx(23.0)
    zeros = [torch.zeros(2), torch.zeros(1, 1)]
    assert float(ewc_penalty(params, [(fisher, star), (fisher, zeros)], lam=2.0)) == pytest.approx(23.0 + 42.0)


def _fisher_by_hand(model, params, examples) -> list[torch.Tensor]:
    """The answer loss written out (mean NLL of the answer tokens given everything before, from the full
    logits in float64), its per-example gradients squared and averaged."""
    hand = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for ex in examples:
        ids = torch.tensor([ex.prompt + ex.target])
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        positions = range(len(ex.prompt) - 1, len(ex.prompt) + len(ex.target) - 1)
        nll = -sum(logp[t, ids[0, t + 1]] for t in positions) / len(ex.target)
        for h, g in zip(hand, torch.autograd.grad(nll, params)):
            h += g.detach().double() ** 2 / len(examples)
    return hand


def test_fisher_is_the_mean_of_squared_per_example_gradients(tiny_model, tokenizer):
    model = attach(tiny_model(), LoraConfig(r=2), name="a", seed=0)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["a"].normal_(0, 0.1)
    task = load_task("builtin:topic")
    examples, _ = encode_examples(tokenizer, task, task.train[:3], 256)
    params = lora_parameters(model, ["a"])
    ours = fisher_diagonal(model, params, examples, tokenizer.pad_token_id)
    hand = _fisher_by_hand(model, params, examples)
    for a, b in zip(ours, hand):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-4, atol=1e-10)
    assert any(float(f.sum()) > 0 for f in ours)


def test_ewc_anchors_are_the_learnt_adapter_and_its_fisher(tiny_model, tokenizer, conflict):
    """After task 1, θ* is the adapter just learnt (the registered state's factors, bit for bit) and F its
    Fisher; the extra term task 2's training ran is (λ/2)·Σ F·(θ − θ*)² against exactly those: the very
    callable training used, evaluated at the final parameters, equals that formula with θ* taken from
    the registered state and F computed by hand (full logits, float64). And it pulls the adapter back."""
    from adapter_hub.continual.ewc import NAME

    tasks = [dataclasses.replace(t, train=t.train[:16]) for t in conflict]
    strategy = make_strategy("ewc", tiny_model(), tokenizer, config(steps=30), lam=1e4, fisher_samples=64)
    used: dict = {}
    real_train = strategy.train

    def spy(*args, extra_loss=None, **kwargs):
        used["extra_loss"] = extra_loss
        return real_train(*args, extra_loss=extra_loss, **kwargs)

    strategy.train = spy
    first = strategy.learn(tasks[0], 1, [])
    assert used["extra_loss"] is None  # nothing to protect on the first task
    layers = list(lora_layers(strategy.model))  # lora_parameters' order: per layer, A then B
    star = [t for name, _ in layers for t in (first.state.modules[name].A, first.state.modules[name].B)]
    params = lora_parameters(strategy.model, [NAME])
    assert all(torch.equal(s, p.detach()) for s, p in zip(star, params)) and any(float(s.abs().sum()) > 0 for s in star)
    assert all(torch.equal(s, a) for s, a in zip(star, strategy.anchors[0][1]))
    examples, _ = encode_examples(tokenizer, tasks[0], tasks[0].train, 256)  # 16 < fisher_samples: all of them
    fisher = _fisher_by_hand(strategy.model, params, examples)
    second = strategy.learn(tasks[1], 2, [tasks[0]])
    assert second.train.extra_losses[0] == 0.0  # θ = θ* when task 2 starts
    moved = [p.detach().double() for p in lora_parameters(strategy.model, [NAME])]
    by_hand = 0.5 * 1e4 * sum(float((f * (m - s.double()) ** 2).sum()) for f, m, s in zip(fisher, moved, star))
    assert by_hand > 0
    assert float(used["extra_loss"]().detach()) == pytest.approx(by_hand, rel=1e-4)
    drift = lambda lam: sum(float((m - s).abs().sum()) for m, s in zip(  # noqa: E731
        _ewc_after_two(tiny_model, tokenizer, tasks, lam), star))
    assert drift(1e6) < drift(0.0)  # a strong pull toward θ* keeps the adapter nearer to it


def _ewc_after_two(tiny_model, tokenizer, tasks, lam):
    from adapter_hub.continual.ewc import NAME

    strategy = make_strategy("ewc", tiny_model(), tokenizer, config(steps=30), lam=lam)
    strategy.learn(tasks[0], 1, [])
    strategy.learn(tasks[1], 2, [tasks[0]])
    return [p.detach() for p in lora_parameters(strategy.model, [NAME])]


# ---- replay ----------------------------------------------------------------------------------------


def _tasks(n_tasks=3, size=100):
    from adapter_hub.data import Example, Task

    return [Task(f"t{i}", [Example(f"t{i}-{j}", "x") for j in range(size)], [Example("q", "x")], ["x"])
            for i in range(n_tasks)]


def test_balanced_replay_keeps_equal_shares():
    buffer = ReplayBuffer("balanced", seed=0, memory=30)
    expected = [{"t0": 30}, {"t0": 15, "t1": 15}, {"t0": 10, "t1": 10, "t2": 10}]
    for task, counts in zip(_tasks(), expected):
        buffer.update(task)
        assert buffer.counts() == counts
        assert len({ex.text for _, ex in buffer.items}) == sum(counts.values())  # no duplicates
        assert all(ex.text.startswith(t.name) for t, ex in buffer.items)


def test_reservoir_replay_is_uniform_over_the_stream():
    shares, inclusion = {"t0": 0, "t1": 0, "t2": 0}, {}
    seeds = 300
    for seed in range(seeds):
        buffer = ReplayBuffer("reservoir", seed=seed, memory=30)
        for task in _tasks():
            buffer.update(task)
        assert len(buffer.items) == 30
        for task, ex in buffer.items:
            shares[task.name] += 1
            inclusion[ex.text] = inclusion.get(ex.text, 0) + 1
    for name in shares:  # every example has probability 30/300 of being kept: 1/3 of memory per task
        assert shares[name] / (30 * seeds) == pytest.approx(1 / 3, abs=0.03)
    # and each of the 300 examples on its own: a chi-square test of the 300 inclusion counts against the
    # uniform 30 each, at p = 0.001 (the 99.9% quantile of chi-square with 299 degrees of freedom by
    # Wilson-Hilferty: 380). One example kept three times too often adds (90 − 30)²/30 = 120 to it.
    expected = 30 * seeds / 300
    chi2 = sum((inclusion.get(f"t{t}-{j}", 0) - expected) ** 2 / expected for t in range(3) for j in range(100))
    df = 299
    bound = df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3
    assert chi2 < bound, (chi2, bound)


def _spy_on_training(strategy) -> list[list]:
    """What each training call of `strategy` really received (its encoded examples), call by call."""
    calls: list[list] = []
    real = strategy.train

    def spy(names_trained, names_active, examples, step, **kwargs):
        calls.append(list(examples))
        return real(names_trained, names_active, examples, step, **kwargs)

    strategy.train = spy
    return calls


def _encoded(tokenizer, task, examples, max_length=256) -> list[tuple]:
    from adapter_hub.data.prompts import encode_example

    return [(tuple(e.prompt), tuple(e.target)) for e in (encode_example(tokenizer, task, ex, max_length) for ex in examples)]


def test_replay_mixes_memory_into_training(tiny_model, tokenizer, conflict):
    """Step 2 trains on task 2's examples plus exactly the 64 examples memory held after step 1, each in
    its own task's prompt format; info["replayed"] counts what reached training."""
    strategy = make_strategy("replay", tiny_model(), tokenizer, config(steps=4), memory=64)
    calls = _spy_on_training(strategy)
    first = strategy.learn(conflict[0], 1, [])
    memory = [(t, ex) for t, ex in strategy.buffer.items]
    second = strategy.learn(conflict[1], 2, [conflict[0]])
    trained = sorted((tuple(e.prompt), tuple(e.target)) for e in calls[1])
    expected = _encoded(tokenizer, conflict[1], conflict[1].train) + [p for t, ex in memory for p in _encoded(tokenizer, t, [ex])]
    assert len(memory) == 64 and trained == sorted(expected)
    assert first.info["replayed"] == {} and second.info["replayed"] == {"sentiment": 64}


@pytest.mark.parametrize("sampling", ["balanced", "reservoir"])
@pytest.mark.parametrize("memory", [None, 30])
def test_every_memory_is_drawn_from_the_previous_memory_and_the_current_task(sampling, memory):
    buffer = ReplayBuffer(sampling, seed=3, memory=memory, fraction=0.05)
    previous: set = set()
    for k, task in enumerate(_tasks(4, 100), start=1):
        buffer.update(task)
        now = {(t.name, i) for t, i in buffer.slots}
        assert now <= previous | {(task.name, i) for i in range(len(task.train))}, k
        assert len(buffer.slots) == len(now) == (memory if memory is not None else round(0.05 * 100 * k))
        previous = now


class GuardedList(list):
    """A learnt task's training list: only indexed reads are allowed, and they are recorded."""

    def __init__(self, items, reads):
        super().__init__(items)
        self.reads = reads

    def __getitem__(self, i):
        self.reads.append(i)
        return super().__getitem__(i)

    def __iter__(self):
        raise AssertionError("an earlier task's whole training set was read")

    def __len__(self):
        raise AssertionError("an earlier task's whole training set was read")


@pytest.mark.parametrize("sampling", ["balanced", "reservoir"])
def test_no_past_example_reaches_training_unless_it_was_in_memory(tiny_model, tokenizer, sampling):
    """Once a task is learnt its data is sealed: the only reads allowed are indexed reads of the examples
    the memory holds at that moment. A replay that re-drew from a past task's full set would fail."""
    tasks = [dataclasses.replace(load_task(f"builtin:{n}", max_train=100), name=n) for n in ("topic", "sentiment", "animal")]
    strategy = make_strategy("replay", tiny_model(), tokenizer, config(steps=3), sampling=sampling)
    calls = _spy_on_training(strategy)
    for k, task in enumerate(tasks, start=1):
        in_memory = {(t.name, i) for t, i in strategy.buffer.slots}
        memory = [(t, list.__getitem__(t.train, i)) for t, i in strategy.buffer.slots]  # read before sealing
        reads = {t.name: [] for t in tasks[:k - 1]}
        for past in tasks[:k - 1]:
            past.train = GuardedList(list.__iter__(past.train), reads[past.name])
        result = strategy.learn(task, k, tasks[:k - 1])
        for name, indices in reads.items():
            assert {(name, i) for i in indices} <= in_memory, (k, name)
        seen = 100 * k
        assert result.info["memory_size"] == round(0.02 * seen) == len(strategy.buffer.slots)  # 2% of data seen
        assert result.info["memory_fraction_of_seen"] == pytest.approx(0.02, abs=0.005)
        # what reached training: this task's examples and the memory's, nothing else
        trained = sorted((tuple(e.prompt), tuple(e.target)) for e in calls[-1])
        expected = _encoded(tokenizer, task, task.train) + [p for t, ex in memory for p in _encoded(tokenizer, t, [ex])]
        assert trained == sorted(expected), k
        assert sum(result.info["replayed"].values()) == len(in_memory)


def test_generative_replay_reads_no_earlier_example_and_labels_what_it_generates(tiny_model, tokenizer):
    """Earlier tasks' training lists are sealed (any read fails); pseudo-examples are sampled after the
    earlier task's prompt head, and exactly those the model answers with a label are kept, each with
    that answer as its target."""
    from adapter_hub.continual.replay_gen import label_inputs, sample_inputs
    from adapter_hub.data.prompts import encode_prompt

    tasks = [dataclasses.replace(load_task(f"builtin:{n}", max_train=80), name=n) for n in ("topic", "animal", "sentiment")]
    model = tiny_model()
    strategy = make_strategy("replay_gen", model, tokenizer, config(steps=200), fraction=0.5, max_new_tokens=12)

    def greedy_answer(fmt, text: str) -> str:  # HF generate, independently of the scorer label_inputs uses
        prompt, _ = encode_prompt(tokenizer, fmt, text, 96, reserve=8)
        out = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, len(prompt):].tolist(), skip_special_tokens=True).split("\n")[0].strip().lower()

    for k, task in enumerate(tasks, start=1):
        reads: list = []
        for past in tasks[:k - 1]:
            past.train = GuardedList(list.__iter__(past.train), reads)
        result = strategy.learn(task, k, tasks[:k - 1])
        assert reads == []  # not one earlier example touched
        if k == 1:
            assert result.info["generated"] == {}
            # what a kept pseudo-example is, checked on the model just trained on this format: after the
            # later tasks a tiny model may have forgotten it (on some CPUs it answers no label at all),
            # which would leave nothing kept to check
            fmt = dataclasses.replace(task, train=[], test=[])
            texts = sample_inputs(model, tokenizer, fmt, 6, seed=1, max_new_tokens=12, temperature=1.0, top_p=0.9)
            assert texts == sample_inputs(model, tokenizer, fmt, 6, seed=1, max_new_tokens=12, temperature=1.0, top_p=0.9)
            assert all("\n" not in t for t in texts) and len(set(texts)) > 1
            kept = label_inputs(model, tokenizer, fmt, texts, max_length=96)
            answers = {t: greedy_answer(fmt, t) for t in texts}
            labelled = [t for t in texts if t and answers[t] in {label.lower() for label in fmt.labels}]
            assert labelled, "the model just trained on the task answers none of its pseudo-inputs with a label"
            assert [ex.text for ex in kept] == labelled  # exactly those, in order; no other is kept
            assert all(ex.target in fmt.labels and ex.target.lower() == answers[ex.text] for ex in kept)
            continue
        assert sum(result.info["generated"].values()) == round(0.5 * 80)  # split over the earlier tasks
        assert set(result.info["generated"]) == {t.name for t in tasks[:k - 1]}
        assert all(0 <= result.info["valid_label"][n] <= result.info["generated"][n] for n in result.info["generated"])
        assert result.info["stored_examples"] == 0


def test_pseudo_inputs_are_cut_where_the_answer_part_begins():
    from adapter_hub.continual.replay_gen import _cut

    assert _cut(" news about the team\nAnswer: sports", "\nAnswer:") == "news about the team"
    assert _cut("a story Answer: x", " Answer:") == "a story"
    assert _cut("no stop at all", "\nAnswer:") == "no stop at all"


# ---- resume -----------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("strategy", ["seq", "olora", "nlora", "inflora", "replay", "replay_gen", "ewc", "merge",
                                      "per_task", "mtl", "slao", "ella"])
def test_resumed_sequence_equals_uninterrupted(tiny_model, tokenizer, tmp_path, strategy):
    tasks = [load_task("builtin:sentiment", max_train=96), load_task("builtin:topic", max_train=96),
             load_task("builtin:animal", max_train=96)]
    cfg = config(steps=12, r=4)
    full = run_sequence(strategy, tiny_model(), tokenizer, tasks, cfg, registry=Registry.open(tmp_path / "a"), run="r")

    def stop_after_two(result, ref):
        if result.step == 2:
            raise Interrupt

    reg = Registry.open(tmp_path / "b")
    with pytest.raises(Interrupt):
        run_sequence(strategy, tiny_model(), tokenizer, tasks, cfg, registry=reg, run="r", on_step=stop_after_two)
    resumed = run_sequence(strategy, tiny_model(), tokenizer, tasks, cfg, registry=reg, run="r")
    assert resumed.resumed == 2 and len(resumed.steps) == 3
    if strategy == "replay":  # the restored memory is the one the uninterrupted run had, slot for slot
        assert resumed.steps[-1].info["memory"] == full.steps[-1].info["memory"]
    a, b = full.steps[-1].state, resumed.steps[-1].state
    assert a.modules.keys() == b.modules.keys()
    for m in a.modules:
        assert torch.equal(a.modules[m].A, b.modules[m].A) and torch.equal(a.modules[m].B, b.modules[m].B), m


# ---- the registry record -----------------------------------------------------------------------------


def test_every_state_is_registered_with_lineage_and_metadata(tiny_model, tokenizer, conflict, tmp_path):
    reg = Registry.open(tmp_path / "r")
    out = run_sequence("seq", tiny_model(), tokenizer, conflict, config(steps=20), registry=reg, run="demo")
    assert out.refs == ["sentiment:1", "sentiment_flip:1"]
    second = reg.get("sentiment_flip:1")
    key = second.tags.pop("step_key")  # the state is the trained adapter: findable by content (step_cache)
    assert second.tags == {"run": "demo", "strategy": "seq", "step": "2", "role": "state"} and len(key) == 64
    assert second.metadata["strategy"] == "seq" and second.metadata["sequence"] == ["sentiment", "sentiment_flip"]
    assert second.metadata["loss"]["steps"] == 20 and len(second.metadata["loss"]["curve"]) == 10
    assert second.base_model == "tiny-llama" and second.metadata["lora"]["r"] == 8
    assert second.metadata["base_dtype"] == "float32"
    assert [(e.parent, e.kind) for e in reg.lineage("sentiment_flip:1")] == [("sentiment:1", "trained_from")]

    merged = run_sequence("merge", tiny_model(), tokenizer, conflict, config(steps=20), registry=reg, run="m")
    edges = reg.lineage(merged.refs[1], max_depth=1)
    assert {e.kind for e in edges} == {"merged_from"} and len(edges) == 2
    assert {reg.get(e.parent).tags["role"] for e in edges} == {"component"}


def test_merge_strategy_with_linear_averages_its_parts(tiny_model, tokenizer, conflict):
    """linear is a weighted sum; the strategy gives weights 1/n so its state does not grow with the tasks."""
    cfg = config(steps=5)
    runner = make_strategy("merge", tiny_model(), tokenizer, cfg, method="linear", rank=2 * cfg.lora.r)  # exact
    first = runner.learn(conflict[0], 1, [])
    second = runner.learn(conflict[1], 2, [conflict[0]])
    parts = second.state_inputs
    assert len(parts) == 2 and second.state.provenance["weights"] == [0.5, 0.5]
    for m in sorted(second.state.modules)[:3]:
        expected = 0.5 * parts[0].delta_weight(m) + 0.5 * parts[1].delta_weight(m)
        torch.testing.assert_close(second.state.delta_weight(m), expected, atol=1e-6, rtol=1e-5)
    assert first.state.provenance["op"] == "scale"


@pytest.mark.parametrize("strategy", ["seq", "mtl"])
def test_strategies_report_how_many_inputs_were_truncated(tiny_model, tokenizer, strategy):
    """A max_length that cuts some inputs: the step's result counts them (mtl: over every task so far)."""
    tasks = [load_task("builtin:sentiment", max_train=40), load_task("builtin:topic", max_train=40)]
    cfg = ContinualConfig(LoraConfig(r=4), TrainConfig(lr=3e-3, steps=2, batch_size=8, max_length=74,
                                                       progress=False, seed=0))
    expected = [encode_examples(tokenizer, t, t.train, 74)[1] for t in tasks]
    assert all(0 < e < 40 for e in expected)  # the setting really cuts some inputs, not all
    runner = make_strategy(strategy, tiny_model(), tokenizer, cfg)
    first, second = runner.learn(tasks[0], 1, []), runner.learn(tasks[1], 2, [tasks[0]])
    assert first.train.truncated == expected[0]
    assert second.train.truncated == (sum(expected) if strategy == "mtl" else expected[1])


def test_strategy_selection_errors(tiny_model, tokenizer):
    assert sorted(STRATEGIES) == sorted(["seq", "inc", "olora", "nlora", "inflora", "replay", "replay_gen", "ewc",
                                         "per_task", "mtl", "merge", "slao", "ella"])
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        make_strategy("nope", tiny_model(), tokenizer, config())
    with pytest.raises(ValueError, match="has no parameter"):
        make_strategy("olora", tiny_model(), tokenizer, config(), lamda1=0.5)
    with pytest.raises(ValueError, match="needs a run name"):
        run_sequence("seq", tiny_model(), tokenizer, [load_task("builtin:topic")], config(), registry=object())


def test_mtl_learns_both_conflicting_tasks(tiny_model, tokenizer, conflict):
    model = tiny_model()
    result = run_sequence("mtl", model, tokenizer, conflict, config())
    final = result.steps[-1].state
    assert min(accuracy(model, tokenizer, final, t) for t in conflict) >= 0.75  # measured 0.86 / 0.94
    assert result.steps[-1].train.steps == 2 * 250  # from scratch, with the budget of both tasks


def test_mtl_judges_its_plateau_on_the_mean_of_per_task_dev_accuracies(tiny_model, tokenizer, monkeypatch):
    """Pooled, a task weighs as much as its dev split is large; mtl's stop must weigh every task alike."""
    import types

    import adapter_hub.continual.base as base

    big, small = load_task("builtin:topic", max_train=200), load_task("builtin:sentiment", max_train=40)
    plateau = ContinualConfig(LoraConfig(r=4), TrainConfig(until="plateau", max_steps=16, progress=False))
    strategy = make_strategy("mtl", tiny_model(), tokenizer, plateau)
    n_big, n_small = len(strategy.split(big)[1]), len(strategy.split(small)[1])
    assert n_big != n_small  # otherwise pooled and per-task means agree and the test shows nothing

    def scripted(model, tokenizer, task, config, examples):  # every big-task example right, no small one
        return {base.CURRENT: types.SimpleNamespace(correct=[task.name == big.name] * len(examples))}

    monkeypatch.setattr(base, "score", scripted)
    assert strategy.dev_check([big, small])() == pytest.approx((1.0 + 0.0) / 2)  # not n_big / (n_big + n_small)
    assert strategy.dev_check([small])() == 0.0 and strategy.dev_check([big])() == 1.0


def test_replay_buffer_rejects_bad_settings():
    with pytest.raises(ValueError, match="sampling"):
        ReplayBuffer("fifo", 0, memory=10)
    with pytest.raises(ValueError, match="memory"):
        ReplayBuffer("balanced", 0, memory=-1)
    with pytest.raises(ValueError, match="memory_fraction"):
        ReplayBuffer("balanced", 0, fraction=1.5)


def test_replay_buffer_ignores_the_global_random_state():
    picks = []
    for global_seed in (1, 2):
        random.seed(global_seed)
        buffer = ReplayBuffer("balanced", seed=0, memory=10)
        buffer.update(_tasks(1)[0])
        picks.append([ex.text for _, ex in buffer.items])
    assert picks[0] == picks[1]


def test_mtl_checks_its_plateau_as_often_per_task_as_a_one_task_strategy(tiny_model, tokenizer):
    """With i tasks in the mix each gets 1/i of the updates: checks i times further apart, cap i times higher."""
    tasks = [load_task("builtin:topic", max_train=48), load_task("builtin:sentiment", max_train=48)]
    plateau = ContinualConfig(LoraConfig(r=4), TrainConfig(until="plateau", lr=3e-3, max_length=64, eval_every=2,
                                                           patience=1, min_delta=0.99, max_steps=3, progress=False))
    result = run_sequence("mtl", tiny_model(), tokenizer, tasks, plateau)
    assert [s for s, _ in result.steps[0].train.stop["dev"]] == [0, 2, 3]  # the cap forces a last check
    assert [s for s, _ in result.steps[1].train.stop["dev"]] == [0, 4, 6]  # twice apart, cap 2 x 3
