"""The analytic router: its task-by-task update is the ridge regression on all tasks at once."""

from __future__ import annotations

import numpy as np
import pytest

from adapter_hub.evaluation.analytic_router import AnalyticRouter


def _tasks(rng, T=4, n=60, h=12):
    """T clusters of features, one per task, with some spread."""
    centres = rng.normal(size=(T, h)) * 3
    return [centres[t] + rng.normal(size=(n + 7 * t, h)) for t in range(T)]


def test_the_recursive_update_equals_the_batch_ridge_solution():
    rng = np.random.default_rng(0)
    tasks = _tasks(rng)
    router = AnalyticRouter(dimensions=256, ridge=0.5, seed=3)
    for t, x in enumerate(tasks):
        router.add_task(f"t{t}", x)
    # the batch solution, written out: every task's features at once, one-hot task targets
    phi = router.expand(np.concatenate(tasks))
    y = np.concatenate([np.eye(len(tasks))[[t] * len(x)] for t, x in enumerate(tasks)])
    batch = np.linalg.solve(phi.T @ phi + 0.5 * np.eye(256), phi.T @ y)
    ours = router.weights()
    assert np.abs(ours - batch).max() <= 1e-6 * np.abs(batch).max()
    # and it routes: held-out points of each cluster go to their task
    held = _tasks(np.random.default_rng(0))  # same centres, the first rows
    accuracy = np.mean([router.route(x[:20]) == [t] * 20 for t, x in enumerate(held)])
    assert accuracy == 1.0


def test_what_is_kept_is_statistics_of_fixed_size_and_it_round_trips():
    rng = np.random.default_rng(1)
    router = AnalyticRouter(dimensions=64, seed=0)
    for t, x in enumerate(_tasks(rng, T=3)):
        router.add_task(f"t{t}", x)
    arrays = router.arrays()
    assert arrays["gram"].shape == (64, 64) and arrays["cross"].shape == (64, 3)
    assert router.stored_numbers() == 64 * (64 + 3)
    again = AnalyticRouter.restore(router.state(), arrays)
    x = rng.normal(size=(10, 12)) * 3
    assert again.route(x) == router.route(x) and np.array_equal(again.weights(), router.weights())


def test_the_feature_map_is_fixed_by_the_first_task():
    rng = np.random.default_rng(2)
    tasks = _tasks(rng, T=2)
    router = AnalyticRouter(dimensions=32)
    router.add_task("a", tasks[0])
    gamma, before = router.gamma, router.expand(tasks[0][:3])
    router.add_task("b", tasks[1])
    assert router.gamma == gamma and np.array_equal(router.expand(tasks[0][:3]), before)


@pytest.mark.parametrize("kwargs, message", [({"dimensions": 0}, "dimensions must be an integer >= 1"),
                                             ({"ridge": 0.0}, "ridge must be > 0"),
                                             ({"dimensions": True}, "dimensions must be an integer")])
def test_bad_router_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnalyticRouter(**kwargs)


def test_a_task_twice_or_no_features_is_refused():
    router = AnalyticRouter(dimensions=8)
    router.add_task("a", np.ones((3, 4)) + np.arange(12).reshape(3, 4))
    with pytest.raises(ValueError, match="already in the router"):
        router.add_task("a", np.ones((3, 4)))
    with pytest.raises(ValueError, match="non-empty"):
        router.add_task("b", np.ones((0, 4)))
