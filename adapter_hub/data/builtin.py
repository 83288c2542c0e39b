"""Built-in generated tasks: deterministic, seeded, offline; small enough for a tiny model to learn.

Each task is a keyword-driven classification problem over short English sentences, so a tiny
random-init model can learn it in seconds and a real model recognises the words. Two tasks are
designed to conflict: `sentiment` and `sentiment_flip` share inputs and label words but map them
oppositely (told apart only by the instruction), so training one after the other overwrites the
first unless the strategy protects it; per-task adapters and joint training can hold both.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from adapter_hub.core.errors import DataError
from adapter_hub.data.tasks import Example, Task

N_TRAIN = 512  # enough for the tiny test models to pass 90% on each task in a few hundred steps
N_TEST = 128  # 128 test examples: one wrong answer moves accuracy by < 1 point

# Small keyword sets: each class is recognisable from a handful of words, so a ~0.1M-parameter
# byte-level model learns a task in a few hundred steps, while the sentences still vary.
_SUBJECTS = ["the movie", "this book", "the concert", "our dinner", "the hotel", "that game", "the show",
             "the trip"]
_ADVERBS = ["really", "truly", "quite", "very", "so", "simply"]
_POSITIVE = ["great", "wonderful", "excellent", "lovely", "superb", "brilliant"]
_NEGATIVE = ["terrible", "awful", "boring", "dreadful", "horrible", "poor"]
_TOPICS = {
    "sports": ["goal", "team", "match", "coach", "league"],
    "science": ["atom", "cell", "theory", "lab", "gene"],
    "food": ["pasta", "recipe", "bread", "soup", "chef"],
    "music": ["guitar", "song", "album", "melody", "piano"],
}
_TOPIC_FRAMES = ["news about the {a} and the {b}", "a story on the {a} and a {b}", "notes on the {a}, the {b}",
                 "today the {a} met the {b}"]
_ANIMALS = {
    "mammal": ["dog", "cat", "horse", "lion", "goat", "bear"],
    "bird": ["eagle", "sparrow", "parrot", "owl", "robin", "duck"],
    "fish": ["salmon", "trout", "tuna", "shark", "carp", "cod"],
}
_PLACES = ["river", "forest", "farm", "market", "garden", "lake"]


def _sentiment_pair(rng: random.Random) -> tuple[str, str]:
    polarity = rng.choice(["positive", "negative"])
    adjective = rng.choice(_POSITIVE if polarity == "positive" else _NEGATIVE)
    return f"{rng.choice(_SUBJECTS)} was {rng.choice(_ADVERBS)} {adjective}", polarity


def _sentiment(rng: random.Random) -> Example:
    text, polarity = _sentiment_pair(rng)
    return Example(text, polarity)


def _sentiment_flip(rng: random.Random) -> Example:
    text, polarity = _sentiment_pair(rng)
    return Example(text, "negative" if polarity == "positive" else "positive")


def _topic(rng: random.Random) -> Example:
    topic = rng.choice(sorted(_TOPICS))
    a, b = rng.sample(_TOPICS[topic], 2)
    return Example(rng.choice(_TOPIC_FRAMES).format(a=a, b=b), topic)


def _animal(rng: random.Random) -> Example:
    kind = rng.choice(sorted(_ANIMALS))
    return Example(f"by the {rng.choice(_PLACES)} i saw a {rng.choice(_ANIMALS[kind])}", kind)


# name -> (example generator, labels, instruction)
BUILTIN_TASKS: dict[str, tuple[Callable[[random.Random], Example], list[str], str]] = {
    "sentiment": (_sentiment, ["positive", "negative"], "Sentiment of the review?"),
    "sentiment_flip": (_sentiment_flip, ["positive", "negative"], "Opposite of the review's sentiment?"),
    "topic": (_topic, sorted(_TOPICS), "Topic of the text?"),
    "animal": (_animal, sorted(_ANIMALS), "Animal class?"),
}


def builtin_task(name: str, *, seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Task:
    """Generate a built-in task; the same (name, seed) gives the same examples in every process."""
    if name not in BUILTIN_TASKS:
        raise DataError(f"unknown built-in task {name!r}; built-ins: {', '.join(sorted(BUILTIN_TASKS))}")
    make, labels, instruction = BUILTIN_TASKS[name]
    # Seed from the name too, so tasks sharing a generator (sentiment, sentiment_flip) get fresh sentences.
    rng = random.Random(f"{name}:{seed}")
    train = [make(rng) for _ in range(n_train)]
    test = [make(rng) for _ in range(n_test)]
    return Task(name, train, test, list(labels), instruction, source=f"builtin:{name}", meta={"seed": seed})
