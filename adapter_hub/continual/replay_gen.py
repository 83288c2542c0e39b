"""`replay_gen`: seq plus generative replay — pseudo-examples of earlier tasks written by the model
itself (LAMOL, Sun et al. 2020; SAPT's pseudo-samples, Zhao et al. 2024). No example of an earlier
task is stored or read: only its prompt format (instruction, template, label set) is kept.

Before training task k (k > 1), for each earlier task j:
  1. the current model (the state after task k−1) samples inputs after task j's prompt head
     (the instruction and the template up to the input), nucleus sampling, cut where the
     template's answer part would begin;
  2. the same model answers each pseudo-input greedily in task j's format; an answer that is one of
     task j's labels (normalised) makes a pseudo-example, any other answer is dropped.
The pseudo-examples join task k's training set, each in its own task's format. How many: `fraction`
× |task k's training set| in all (LAMOL's γ = 0.2), split evenly over the earlier tasks. The step
info records how many were generated and how many had a valid label, per task.

Determinism: sampling runs under a forked RNG seeded from (seed, step, task position), so a resumed
run regenerates exactly the same pseudo-examples from the restored state (CPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from adapter_hub.continual.base import StepResult, Strategy
from adapter_hub.data import Example, Task
from adapter_hub.evaluation import EvalConfig, score
from adapter_hub.evaluation.text import normalise
from adapter_hub.lora import attach, list_adapters

NAME = "replay_gen"
GENERATION_BATCH = 16  # pseudo-inputs sampled per generate call


def prompt_format(task: Task) -> Task:
    """What generative replay may keep of a learnt task: its name and prompt format, no examples."""
    return dataclasses.replace(task, train=[], test=[])


def _cut(text: str, after: str) -> str:
    """The pseudo-input up to where the template's answer part starts (the first line for the
    default template, whose answer part begins with a newline)."""
    stops = [s for s in (after, after.strip(), "\n" if after.startswith("\n") else "") if s]
    end = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:end].strip()


def sample_inputs(model, tokenizer, task: Task, n: int, *, seed: int, max_new_tokens: int, temperature: float,
                  top_p: float) -> list[str]:
    """n pseudo-inputs for `task`, sampled after its prompt head by the model as it is."""
    before, after = task.prompt_parts()
    head = tokenizer(before, add_special_tokens=True)["input_ids"]
    device = next(model.parameters()).device
    texts: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, n, GENERATION_BATCH):
                rows = min(GENERATION_BATCH, n - start)
                ids = torch.tensor([head] * rows, device=device)
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                for row in out[:, len(head):].tolist():
                    texts.append(_cut(tokenizer.decode(row, skip_special_tokens=True), after))
    finally:
        model.train(was_training)
    return texts


def label_inputs(model, tokenizer, task: Task, texts: Sequence[str], max_length: int) -> list[Example]:
    """The model's own greedy answers to `texts` in task's format; only answers in the label set stay."""
    texts = [t for t in texts if t]
    if not texts:
        return []
    probe = [Example(t, "") for t in texts]
    answers = score(model, tokenizer, task, config=EvalConfig(scorer="generate", max_length=max_length),
                    examples=probe)["current"].predictions
    if task.labels is None:  # free text: any non-empty answer is a target
        return [Example(t, a) for t, a in zip(texts, answers) if a]
    labels = {normalise(label): label for label in task.labels}
    return [Example(t, labels[normalise(a)]) for t, a in zip(texts, answers) if normalise(a) in labels]


class GenerativeReplay(Strategy):
    name = "replay_gen"
    # fraction: LAMOL's γ. max_new_tokens 64: a CL_Benchmark input's first line at the CPU budget's
    # max_length. temperature 1, top_p 0.9: sampling diverse enough not to repeat one input.
    defaults = {"fraction": 0.2, "max_new_tokens": 64, "temperature": 1.0, "top_p": 0.9}

    @classmethod
    def check_values(cls, params, where):
        if not 0 <= params["fraction"] <= 10:
            raise ValueError(f"{where} parameter fraction must be in [0, 10], got {params['fraction']}")
        if params["max_new_tokens"] < 1:
            raise ValueError(f"{where} parameter max_new_tokens must be >= 1, got {params['max_new_tokens']}")
        if params["temperature"] <= 0:
            raise ValueError(f"{where} parameter temperature must be > 0, got {params['temperature']}")
        if not 0 < params["top_p"] <= 1:
            raise ValueError(f"{where} parameter top_p must be in (0, 1], got {params['top_p']}")

    def __init__(self, model, tokenizer, config, **params):
        super().__init__(model, tokenizer, config, **params)
        self.formats: list[Task] = []  # learnt tasks' prompt formats: all this strategy keeps of them

    def learn(self, task, step, history):
        if NAME not in list_adapters(self.model):
            self.new_adapter(NAME, step)
        examples, truncated = self.encode(task)
        generated: dict[str, int] = {}
        valid: dict[str, int] = {}
        total = round(float(self.params["fraction"]) * len(task.train))
        for j, past in enumerate(self.formats):
            n = total // len(self.formats) + (1 if j < total % len(self.formats) else 0)
            if n == 0:
                continue
            texts = sample_inputs(self.model, self.tokenizer, past, n, seed=self.config.seed * 1_000_003 + step * 1009 + j,
                                  max_new_tokens=int(self.params["max_new_tokens"]),
                                  temperature=float(self.params["temperature"]), top_p=float(self.params["top_p"]))
            pseudo = label_inputs(self.model, self.tokenizer, past, texts, self.config.train.max_length)
            generated[past.name], valid[past.name] = len(texts), len(pseudo)
            examples += self.encode(past, pseudo)[0]
        result = self.train([NAME], [NAME], examples, step, truncated=truncated, dev=[task],
                            description=f"replay_gen {task.name}")
        self.formats.append(prompt_format(task))
        info = {"generated": generated, "valid_label": valid, "stored_examples": 0}
        return StepResult(task.name, step, self.snapshot(NAME, step, task), result, info=info)

    def restore(self, steps, history: Sequence[Task]):
        attach(self.model, steps[-1].state, name=NAME, activate="add")
        self.formats = [prompt_format(t) for t in history]
