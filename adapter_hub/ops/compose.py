"""`compose`: linear expressions over registry references, e.g. "0.5*agnews:3 + 0.5*yelp@best - 0.2*toxic".

Grammar (parsed by recursive descent, never eval):
    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("+" | "-") unary | atom
    atom   := NUMBER | REF | "(" expr ")"
REF follows the registry grammar (task, task:N, task@alias, sha256:hex). Names may contain "-", so
write a space before a minus that subtracts: `a - b` (while `a-b` is the task named "a-b").
An expression must be linear: numbers scale adapters; adapters cannot multiply each other and a bare
number cannot be added to an adapter. The value is {ref: coefficient}, evaluated exactly by ops.linear.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.core.errors import ComposeSyntaxError
from adapter_hub.ops.align import check_adapters, from_factors, provenance
from adapter_hub.ops.arithmetic import weighted_sum_factors
from adapter_hub.ops.svd import reduce_rank

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_:@]))
  | (?P<ref>sha256:[0-9a-f]+|[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]+|@[A-Za-z0-9][A-Za-z0-9._-]*)?)
  | (?P<op>[-+*/()])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str  # number | ref | op | end
    text: str
    column: int  # 1-based


def tokenize(expression: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if m is None:
            raise ComposeSyntaxError(expression, pos + 1, f"unexpected character {expression[pos]!r}")
        if m.lastgroup != "space":
            tokens.append(Token(m.lastgroup, m.group(), pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", len(expression) + 1))
    return tokens


# A value is a linear combination {ref: coeff} plus a constant (a bare number).
Value = tuple[dict[str, float], float | None]
MAX_NESTING = 100  # parentheses and unary signs nest by recursion; far deeper than any real expression


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = tokenize(expression)
        self.i = 0
        self.depth = 0

    def error(self, token: Token, message: str) -> ComposeSyntaxError:
        return ComposeSyntaxError(self.expression, token.column, message)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> dict[str, float]:
        if self.peek().kind == "end":
            raise self.error(self.peek(), "empty expression")
        terms, const = self.expr()
        if self.peek().kind != "end":
            raise self.error(self.peek(), f"expected an operator or the end, found {self.peek().text!r}")
        if const is not None and const != 0:
            raise self.error(self.tokens[0], "the expression has a bare number term; numbers can only scale adapters")
        if not terms:
            raise self.error(self.tokens[0], "the expression names no adapter")
        return terms

    def expr(self) -> Value:
        value = self.term()
        while self.peek().text in ("+", "-") and self.peek().kind == "op":
            op = self.take()
            right = self.term()
            value = self.combine(value, right, 1.0 if op.text == "+" else -1.0, op)
        return value

    def combine(self, left: Value, right: Value, sign: float, op: Token) -> Value:
        (lt, lc), (rt, rc) = left, right
        if (lt and rc is not None) or (rt and lc is not None):
            raise self.error(op, "cannot add a number to an adapter; numbers can only scale adapters")
        terms = dict(lt)
        for ref, c in rt.items():
            terms[ref] = terms.get(ref, 0.0) + sign * c
        const = None if lc is None and rc is None else (lc or 0.0) + sign * (rc or 0.0)
        return terms, const

    def term(self) -> Value:
        value = self.unary()
        while self.peek().text in ("*", "/") and self.peek().kind == "op":
            op = self.take()
            right = self.unary()
            (lt, lc), (rt, rc) = value, right
            if op.text == "/":
                if rt:
                    raise self.error(op, "cannot divide by an adapter")
                if rc == 0:
                    raise self.error(op, "division by zero")
                value = ({k: v / rc for k, v in lt.items()}, None if lc is None else lc / rc)
            elif lt and rt:
                raise self.error(op, "cannot multiply two adapters; numbers can only scale adapters")
            elif lt:
                value = ({k: v * rc for k, v in lt.items()}, None)
            elif rt:
                value = ({k: v * lc for k, v in rt.items()}, None)
            else:
                value = ({}, lc * rc)
        return value

    def nest(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(token, f"nested more than {MAX_NESTING} levels deep (parentheses or signs)")

    def unary(self) -> Value:
        token = self.peek()
        if token.kind == "op" and token.text in "+-":
            self.take()
            self.nest(token)
            terms, const = self.unary()
            self.depth -= 1
            sign = 1.0 if token.text == "+" else -1.0
            return {k: sign * v for k, v in terms.items()}, None if const is None else sign * const
        return self.atom()

    def atom(self) -> Value:
        token = self.take()
        if token.kind == "number":
            return {}, float(token.text)
        if token.kind == "ref":
            return {token.text: 1.0}, None
        if token.text == "(":
            self.nest(token)
            value = self.expr()
            self.depth -= 1
            closing = self.take()
            if closing.text != ")":
                raise self.error(closing, f"expected ')', found {closing.text or 'the end'!r}")
            return value
        found = "the end of the expression" if token.kind == "end" else repr(token.text)
        raise self.error(token, f"expected a reference, a number or '(', found {found}")


def parse(expression: str) -> dict[str, float]:
    """{ref: coefficient} of a linear expression (coefficients of a repeated ref are summed)."""
    if not isinstance(expression, str):
        raise TypeError("the expression must be a string")
    return _Parser(expression).parse()


def compose(expression: str, *, registry=None, resolve: Callable[[str], LoraAdapter] | None = None,
            rank: int | None = None, energy: float | None = None, allow_partial: bool = False) -> LoraAdapter:
    """Evaluate a linear expression of adapters exactly (then optionally reduce its rank).

    References are loaded with `registry.load(ref)` (or `resolve(ref)`). Every reference is resolved
    before any arithmetic, and an unknown one raises the registry's RefError naming it.
    """
    terms = parse(expression)
    if resolve is None:
        if registry is None:
            raise ValueError("compose() needs registry= (or resolve=) to load the referenced adapters")
        resolve = registry.load
    adapters, weights = [], []
    for ref, coefficient in terms.items():
        try:
            adapters.append(resolve(ref))
        except Exception as exc:
            # Say which expression, and what a hyphen in a name means, on the error itself: its type
            # and traceback stay as the resolver raised them (rebuilding it as type(exc)(message)
            # breaks on exceptions whose constructor takes other arguments).
            hint = ""
            if "-" in ref and not any(ch in ref for ch in ":@"):
                hint = f" (to subtract, put spaces around the minus: {ref.replace('-', ' - ')!r})"
            said = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            exc.args = (f"in {expression!r}: {said}{hint}", *exc.args[1:])
            raise
        weights.append(coefficient)
    modules = check_adapters(adapters, allow_partial=allow_partial)
    prov = provenance("compose", adapters, expression=expression, weights=weights, rank=rank, energy=energy)
    result = from_factors(weighted_sum_factors(adapters, weights, modules), adapters[0], prov)
    if rank is not None or energy is not None:
        reduced = reduce_rank(result, rank, energy=energy)
        reduced.provenance = {**prov, "max_relative_error": reduced.provenance["max_relative_error"]}
        return reduced
    return result
