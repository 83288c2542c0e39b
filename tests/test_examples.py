"""The shipped example configs stay loadable: a renamed setting or a refused strategy parameter would
otherwise only show when a user (or the GPU check) runs them, minutes in."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter_hub.bench.config import BenchConfig

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


def test_there_are_example_configs():
    assert {p.name for p in EXAMPLES} >= {"builtin_quick.toml", "cl_benchmark.toml", "cl_benchmark_gpu.toml", "demo.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads_and_its_strategy_parameters_pass_their_checks(path):
    config = BenchConfig.from_toml(path)  # loading runs every strategy's own parameter checks
    assert config.strategies and config.tasks


def test_the_gpu_config_is_the_cpu_run_at_a_larger_budget():
    folder = EXAMPLES[0].parent
    cpu, gpu = BenchConfig.from_toml(folder / "cl_benchmark.toml"), BenchConfig.from_toml(folder / "cl_benchmark_gpu.toml")
    assert gpu.tasks == cpu.tasks and [(s.name, s.params) for s in gpu.strategies] == [(s.name, s.params) for s in cpu.strategies]
    assert gpu.max_train >= cpu.max_train and gpu.max_test >= cpu.max_test
