"""Progress people can see, in the three forms a long job needs:

  "bar"    a live tqdm bar per phase on stderr (rate, ETA, loss) — when stderr is a terminal;
  "lines"  one plain line when a phase ends (what, how much, how long, how fast) — for logs and CI,
           never a carriage return;
  "quiet"  nothing.

The mode is process-wide (`set_mode`; the CLI's --quiet sets "quiet"); "auto" picks "bar" on a
terminal and "lines" otherwise. Training and evaluation open phases with `phase(...)` and advance
them; they never print directly, so one switch governs everything a command shows.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal

Mode = Literal["auto", "bar", "lines", "quiet"]
_mode: Mode = "auto"


def set_mode(mode: Mode) -> None:
    global _mode
    if mode not in ("auto", "bar", "lines", "quiet"):
        raise ValueError(f"progress mode must be auto, bar, lines or quiet, got {mode!r}")
    _mode = mode


def mode() -> Mode:
    """The mode in force, "auto" resolved against stderr."""
    if _mode != "auto":
        return _mode
    return "bar" if sys.stderr.isatty() else "lines"


def say(message: str) -> None:
    """A one-line status message (suppressed by quiet)."""
    if mode() != "quiet":
        print(message, file=sys.stderr, flush=True)


class Phase:
    """One unit of work with a known size: advanced as it goes, summarised when it ends."""

    def __init__(self, label: str, total: int, unit: str, show: Mode) -> None:
        self.label, self.total, self.unit, self.show = label, total, unit, show
        self.done = 0
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self._bar = None
        if show == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=label, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)

    def advance(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.show in ("bar", "lines"):  # the bar vanishes (leave=False); a line stays as the record
            rate = self.done / self.seconds if self.seconds > 0 else 0.0
            extra = "".join(f", {k} {_short(v)}" for k, v in self.postfix.items())
            print(f"{self.label}: {self.done}/{self.total} {self.unit}s in {self.seconds:.1f} s "
                  f"({rate:.1f} {self.unit}/s{extra})", file=sys.stderr, flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def phase(label: str, total: int, unit: str = "step", *, enabled: bool = True) -> Iterator[Phase]:
    """A phase shown in the current mode (enabled=False: counted, never shown)."""
    p = Phase(label, total, unit, mode() if enabled else "quiet")
    try:
        yield p
    finally:
        p.close()
