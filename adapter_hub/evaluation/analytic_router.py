"""The analytic task router (Any-SSR, "Analytic Subspace Routing", arXiv:2503.13575): a ridge classifier
from the frozen base model's features to the task, trained in closed form and updated task by task
without any earlier task's data.

  φ(x)     the frozen base model's mean-pooled state of the input text (evaluation.router.features),
           expanded by random Fourier features (scikit-learn's RBFSampler: √(2/D)·cos(Wx + b)), so a
           linear classifier on φ is a kernel classifier on x.
  task t   adds its training inputs' statistics: G += Φ_tᵀΦ_t (D × D) and a new column Φ_tᵀ·1 of
           C (D × T); nothing else of the task is kept.
  weights  W = (G + λI)⁻¹ C — exactly the ridge regression on every task's features at once
           (one-hot task targets), whatever the order the tasks came in: the recursive least-squares
           identity Any-SSR rests on.
  route(x) argmax_t φ(x)ᵀW.

Stored per state: G and C in float64, D·(D + T) numbers (D = 1024: 8 MB + 8 KB per task), plus the
seed, γ and λ that fix φ. γ is set once from the first task's features (the median-distance rule),
so later tasks change nothing about φ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.kernel_approximation import RBFSampler

DIMENSIONS = 1024  # random features: enough for a few dozen tasks, G stays 8 MB
RIDGE = 1.0  # λ: each example adds O(1) to G (φ has norm ~1); small beside a task of hundreds, keeps G invertible


@dataclass
class AnalyticRouter:
    dimensions: int = DIMENSIONS
    ridge: float = RIDGE
    seed: int = 0
    gamma: float | None = None  # the RBF width, fixed by the first task
    gram: np.ndarray | None = field(default=None, repr=False)  # (D, D): Σ φφᵀ over every task's inputs
    cross: np.ndarray | None = field(default=None, repr=False)  # (D, T): column t = Σ φ over task t's inputs
    tasks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.dimensions, bool) or not isinstance(self.dimensions, int) or self.dimensions < 1:
            raise ValueError(f"router dimensions must be an integer >= 1, got {self.dimensions!r}")
        if not self.ridge > 0:
            raise ValueError(f"router ridge must be > 0, got {self.ridge!r}")
        self._sampler: RBFSampler | None = None

    def expand(self, features: np.ndarray) -> np.ndarray:
        """φ: (N, H) features -> (N, D) random Fourier features (float64)."""
        if self.gamma is None:
            raise ValueError("the router has no task yet: its feature map is fixed by the first task")
        x = np.asarray(features, dtype=np.float64)
        if self._sampler is None or self._sampler.n_features_in_ != x.shape[1]:
            self._sampler = RBFSampler(gamma=self.gamma, n_components=self.dimensions, random_state=self.seed)
            self._sampler.fit(np.zeros((1, x.shape[1])))  # the random map depends on the width only
        return self._sampler.transform(x)

    def add_task(self, name: str, features: np.ndarray) -> None:
        """Learn task `name` from its training inputs' features (N, H): one pass, then only G and C."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"task {name}: the router needs a non-empty (N, H) feature matrix")
        if name in self.tasks:
            raise ValueError(f"task {name} is already in the router")
        if self.gamma is None:
            self.gamma = median_gamma(x)
            self.gram = np.zeros((self.dimensions, self.dimensions))
            self.cross = np.zeros((self.dimensions, 0))
        phi = self.expand(x)
        self.gram += phi.T @ phi
        self.cross = np.concatenate([self.cross, phi.sum(0, keepdims=True).T], axis=1)
        self.tasks.append(name)

    def weights(self) -> np.ndarray:
        """(D, T): the ridge solution (G + λI)⁻¹ C."""
        return np.linalg.solve(self.gram + self.ridge * np.eye(self.dimensions), self.cross)

    def route(self, features: np.ndarray) -> list[int]:
        """Index into `tasks` of the task each row of `features` (N, H) is sent to."""
        if not self.tasks:
            raise ValueError("routing needs at least one task")
        if len(self.tasks) == 1:
            return [0] * len(features)
        return (self.expand(features) @ self.weights()).argmax(1).tolist()

    def state(self) -> dict:
        """The settings that fix φ (small, JSON); G and C travel as arrays (`arrays`)."""
        return {"dimensions": self.dimensions, "ridge": self.ridge, "seed": self.seed, "gamma": self.gamma,
                "tasks": list(self.tasks)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"gram": self.gram, "cross": self.cross}

    @classmethod
    def restore(cls, state: dict, arrays: dict[str, np.ndarray]) -> AnalyticRouter:
        router = cls(int(state["dimensions"]), float(state["ridge"]), int(state["seed"]), state["gamma"],
                     np.array(arrays["gram"], dtype=np.float64), np.array(arrays["cross"], dtype=np.float64),
                     list(state["tasks"]))
        return router

    def stored_numbers(self) -> int:
        return self.dimensions * (self.dimensions + len(self.tasks))


def median_gamma(x: np.ndarray, sample: int = 256) -> float:
    """1 / median squared distance between (at most `sample`) rows: the usual RBF width rule."""
    rows = x[:sample]
    d2 = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    median = float(np.median(d2[np.triu_indices(len(rows), 1)])) if len(rows) > 1 else 1.0
    return 1.0 / median if median > 0 else 1.0
