"""The reference grammar: `task` · `task:3` · `task@alias` · `sha256:<hex prefix ≥ 8>`.

Names (tasks, aliases): `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, and never containing "..", so a name is
always safe as a path component, a URL segment and a shell word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import NameError_, RefError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME_RE = re.compile(NAME_PATTERN)
_REF_RE = re.compile(rf"(?P<task>{NAME_PATTERN})(?::(?P<number>[0-9]+)|@(?P<alias>{NAME_PATTERN}))?")
_DIGEST_RE = re.compile(r"sha256:(?P<hex>[0-9a-f]{8,64})")
GRAMMAR = "task | task:N | task@alias | sha256:<8-64 hex digits>"
MAX_VERSION = 2**31 - 1  # the version column is a 32-bit integer on every backend


def check_name(name: object, what: str = "task") -> str:
    """Return `name` if it is a valid task/alias name, else raise NameError_ saying why."""
    if not isinstance(name, str):
        raise NameError_(f"{what} name must be a string, got {type(name).__name__}")
    shown = name if len(name) <= 40 else name[:37] + "..."
    if not _NAME_RE.fullmatch(name) or ".." in name:
        if len(name) > 128:
            why = f"it is {len(name)} characters long (at most 128)"
        elif not name:
            why = "it is empty"
        elif ".." in name:
            why = "it contains '..'"
        else:
            bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
            why = f"it contains {bad}" if bad else "it must start with a letter or digit"
        raise NameError_(f"invalid {what} name {shown!r}: {why}; allowed: {NAME_PATTERN} without '..'")
    return name


@dataclass(frozen=True)
class Ref:
    text: str
    task: str | None = None
    number: int | None = None
    alias: str | None = None
    digest_prefix: str | None = None  # "sha256:abcd1234..."

    @property
    def kind(self) -> str:
        if self.digest_prefix:
            return "digest"
        if self.number is not None:
            return "number"
        if self.alias is not None:
            return "alias"
        return "latest"


def parse_ref(text: object) -> Ref:
    if not isinstance(text, str):
        raise RefError(f"a reference must be a string, got {type(text).__name__}")
    shown = text if len(text) <= 60 else text[:57] + "..."
    if text.startswith("sha256:"):
        m = _DIGEST_RE.fullmatch(text)
        if not m:
            raise RefError(f"malformed digest reference {shown!r}: expected sha256: and 8-64 lowercase hex digits")
        return Ref(text, digest_prefix=text)
    m = _REF_RE.fullmatch(text)
    if not m or ".." in text:
        raise RefError(f"malformed reference {shown!r}; expected {GRAMMAR}")
    if m["number"] is not None and len(m["number"]) > len(str(MAX_VERSION)):
        raise RefError(f"malformed reference {shown!r}: version number is larger than {MAX_VERSION}")
    number = int(m["number"]) if m["number"] is not None else None
    if number is not None and number < 1:
        raise RefError(f"malformed reference {shown!r}: version numbers start at 1")
    if number is not None and number > MAX_VERSION:
        raise RefError(f"malformed reference {shown!r}: version number is larger than {MAX_VERSION}")
    return Ref(text, task=m["task"], number=number, alias=m["alias"])
