"""Comparing generated text with targets: normalisation for exact match, and token F1."""

from __future__ import annotations

import re
from collections import Counter


def normalise(text: str) -> str:
    """Case-folded, punctuation as spaces, whitespace collapsed: how answers are compared."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def token_f1(prediction: str, target: str) -> float:
    """SQuAD-style token F1 between normalised strings."""
    p, t = normalise(prediction).split(), normalise(target).split()
    if not p or not t:
        return float(p == t)
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)
