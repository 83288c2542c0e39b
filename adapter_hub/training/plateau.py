"""Training to competence: the dev checks of `until = "plateau"`. Every `eval_every` steps the dev
split is scored; the state with the best dev accuracy is kept (a copy of the trained parameters);
training stops once `patience` checks in a row have not beaten the best by more than `min_delta`, or
at `max_steps`, and the best state is put back — bit for bit, so the adapter a step registers is the
one its dev accuracy was measured on.

The check before training (step 0) goes on the curve as where the task started, but it is never a
candidate: a state that has not seen the task cannot be the task's result. It used to be one, and on
a 25-example dev split (cb) two noisy checks that failed to beat the previous task's adapter ended
training at step 32 and registered that untrained adapter as the task's state (seq, seed 1 of the
regime run: cb at 0.27). The first trained check is the first best, and patience counts from there.

What a check can tell depends on the dev split's size, which this class does not choose (TrainConfig's
dev_fraction, dev_min, dev_max).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from adapter_hub.training.config import TrainConfig

# Which stopping rule a plateau-trained state was made with; part of the step cache's key, so a state
# trained under an earlier rule is never served as this rule's result. 2: step 0 is never restored.
RULE = 2


class PlateauStop:
    def __init__(self, config: TrainConfig, params: Sequence[nn.Parameter], check: Callable[[], float]) -> None:
        self.config, self.params, self.check = config, list(params), check
        self.curve: list[list[float]] = []  # [step, dev accuracy]
        self.best: float | None = None
        self.best_step = 0
        self._best_state: list[torch.Tensor] = []
        self._since_best = 0
        self.seconds = 0.0  # spent scoring the dev split (part of the training time; reported apart)

    def due(self, steps_done: int) -> bool:
        return steps_done % self.config.eval_every == 0

    def record(self, steps_done: int) -> bool:
        """Score the dev split now; True when training should stop (no progress for `patience` checks).
        At step 0 (before training) the score is only recorded: the untrained state is never restored."""
        start = time.perf_counter()
        accuracy = float(self.check())
        self.seconds += time.perf_counter() - start
        self.curve.append([steps_done, round(accuracy, 6)])
        if steps_done == 0:
            return False
        if self.best is None or accuracy > self.best + self.config.min_delta:
            self.best, self.best_step, self._since_best = accuracy, steps_done, 0
            self._best_state = [p.detach().clone() for p in self.params]
        else:
            self._since_best += 1
        return self._since_best >= self.config.patience

    def restore(self) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, self._best_state):
                p.copy_(saved)

    def summary(self, reason: str, steps_run: int) -> dict:
        return {"reason": reason, "steps_run": steps_run, "best_step": self.best_step, "best_dev": self.best,
                "dev": self.curve, "dev_seconds": round(self.seconds, 2)}


def schedule_steps(config: TrainConfig, budget_steps: int) -> tuple[int, int]:
    """(steps to run at most, steps the warmup is a share of). A plateau run's length is unknown: its
    warmup is a share of the shortest it can be (patience checks), so it ends before the first verdict."""
    if config.plateau:
        return config.max_steps, config.eval_every * config.patience
    return budget_steps, budget_steps
