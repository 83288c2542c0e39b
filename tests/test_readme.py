"""The README's code runs as written: every ```python block in order in one namespace, every
`adapter-hub` line of the ```bash blocks through the CLI, on the tiny model in a temp folder (as doc
tests do). What cannot run here is skipped by an explicit rule below, each for a stated reason, and
one line runs on a smaller budget: `bench run examples/builtin_quick.toml` (~4 minutes on 2 cores)
gets a copy of that config with 10 steps per task and 16 test examples — same command, same run
name, so the `bench show/compare/report` lines after it still have their run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Lines that need what a test cannot have: the real SmolLM2 run or the shared CL_Benchmark data (covered
# by benchmarks and test_demo), or the project set-up and this very test suite (.venv/bin/...).
NEEDS_REAL_MODEL_OR_DATA = re.compile(r"smollm2|cl_benchmark|cl-benchmark|\.\./shared|\bdemo\b|scripts/setup|\.venv/")
# `ui` serves until stopped; tests/adapter_hub/ui runs the same app in-process and in a browser.
SERVES_UNTIL_STOPPED = re.compile(r"adapter-hub( --registry \S+)? ui\b")


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)]


def shell_commands(block: str) -> list[str]:
    """One entry per command: continuations joined, comments dropped, `a && b` split."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split("  #")[0].split(" # ")[0].strip()
        if line and not line.startswith("#"):
            out += [part.strip() for part in line.split("&&")]
    return out


def _example(path: str, tmp_path: Path) -> str:
    """An example config: builtin_quick on a small budget (see the module docstring), others as they are."""
    if not path.endswith("builtin_quick.toml"):
        return str(ROOT / path)
    import tomllib

    raw = tomllib.loads((ROOT / path).read_text())
    raw["train"]["steps"], raw["max_test"], raw["max_train"] = 10, 16, 64
    lines = [f"{k} = {_toml(v)}" for k, v in raw.items() if not isinstance(v, (dict, list)) or k == "tasks"]
    for section in ("lora", "train", "eval"):
        lines += [f"[{section}]", *(f"{k} = {_toml(v)}" for k, v in raw.get(section, {}).items())]
    for strategy in raw["strategies"]:
        lines += ["[[strategies]]", *(f"{k} = {_toml(v)}" for k, v in strategy.items())]
    small = tmp_path / "builtin_quick_small.toml"
    small.write_text("\n".join(lines) + "\n")
    return str(small)


def _toml(value) -> str:
    import json

    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def test_readme_code_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # "~/adapters" lands in the temp folder
    namespace: dict = {}
    ran = {"python": 0, "cli": 0}
    skipped = []
    from adapter_hub.cli import cli

    for lang, code in blocks(README.read_text()):
        code = code.replace('"smollm2-135m"', '"tiny-llama"')  # the tiny model stands in for SmolLM2
        if lang == "python":
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
            ran["python"] += 1
            continue
        for command in shell_commands(code):
            if NEEDS_REAL_MODEL_OR_DATA.search(command) or SERVES_UNTIL_STOPPED.match(command):
                skipped.append(command)
                continue
            words = shlex.split(command.replace("~", str(tmp_path)))
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                monkeypatch.setenv(key, value)
                continue
            assert words[0] == "adapter-hub", command
            words = [_example(w, tmp_path) if w.startswith("examples/") else w for w in words[1:]]
            result = CliRunner().invoke(cli, words)
            assert result.exit_code == 0, f"{command}\n{result.output}"
            ran["cli"] += 1
    assert ran["python"] == 5 and ran["cli"] >= 29, ran
    print(f"skipped (real model or data): {skipped}")
    assert namespace["result"].refs == ["topic:3", "sentiment:2"]
    assert (tmp_path / "reports" / "quick" / "report.md").is_file()
