"""Turning a task's examples into token ids: prompt + answer, truncating only the input, from the left.

The prompt is split into three pieces (template before the input, the input, template after it) so
that a long input can be cut from its left end while the instruction and the answer survive intact.
Training and evaluation share these functions, so the model is scored on exactly the format it learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapter_hub.core.errors import DataError
from adapter_hub.data.tasks import Example, Task


@dataclass(frozen=True)
class Encoded:
    prompt: list[int]
    target: list[int]  # answer tokens, ending with eos
    truncated: bool  # the input was cut to fit max_length


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens all prompts start with (their shared instruction), leaving each prompt at least one
    token of its own: the position that predicts the first answer token must lie after the prefix."""
    first, n = prompts[0], min(map(len, prompts)) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def encode_target(tokenizer, target: str, *, eos: bool = True) -> list[int]:
    ids = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if eos else ids


def template_ids(tokenizer, task: Task) -> tuple[list[int], list[int]]:
    """The template's ids before and after the input: the same for every example of a task, so callers
    that encode many examples compute them once (two of every three tokenizer calls otherwise)."""
    before, after = task.prompt_parts()
    return tokenizer(before, add_special_tokens=True)["input_ids"], tokenizer(after, add_special_tokens=False)["input_ids"]


def encode_prompt(tokenizer, task: Task, text: str, max_length: int, reserve: int = 0,
                  template: tuple[list[int], list[int]] | None = None) -> tuple[list[int], bool]:
    """Prompt ids leaving `reserve` tokens for the answer; the input loses tokens from its left end.
    `template` is `template_ids(tokenizer, task)`, computed here when not given."""
    head, tail = template or template_ids(tokenizer, task)
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    budget = max_length - reserve - len(head) - len(tail)
    if budget < 1:
        raise DataError(
            f"task {task.name}: max_length={max_length} leaves no room for the input "
            f"(instruction {len(head)} + suffix {len(tail)} + answer {reserve} tokens)"
        )
    truncated = len(body) > budget
    if truncated:
        body = body[-budget:]
    return head + body + tail, truncated


def encode_example(tokenizer, task: Task, example: Example, max_length: int,
                   template: tuple[list[int], list[int]] | None = None) -> Encoded:
    target = encode_target(tokenizer, example.target)
    prompt, truncated = encode_prompt(tokenizer, task, example.text, max_length, reserve=len(target), template=template)
    return Encoded(prompt, target, truncated)


def encode_examples(tokenizer, task: Task, examples: list[Example], max_length: int) -> tuple[list[Encoded], int]:
    """Encoded examples and how many had their input truncated (reported, never hidden)."""
    template = template_ids(tokenizer, task)
    encoded = [encode_example(tokenizer, task, ex, max_length, template) for ex in examples]
    return encoded, sum(e.truncated for e in encoded)
