"""Progress output: a live bar on a (pseudo-)terminal, one plain line per phase elsewhere, nothing
with --quiet — checked on the real CLI in a subprocess, and on the progress module directly."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from adapter_hub.core import progress

TRAIN = ["train", "--base-model", "tiny-llama", "--task", "topic", "--data", "builtin:topic", "--steps", "6",
         "--max-train", "32", "--max-test", "8", "--batch-size", "4", "--max-length", "64", "--threads", "1"]


def _cli(tmp_path, args, *, terminal: bool) -> str:
    """stdout+stderr of `adapter-hub --registry TMP args`, through a pseudo-terminal or a pipe."""
    cmd = [sys.executable, "-c", "from adapter_hub.cli import main; main()", "--registry", str(tmp_path / "reg"), *args]
    env = {**os.environ, "ADAPTER_HUB_CACHE": str(tmp_path / "cache"), "COLUMNS": "120"}
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal 120 columns wide
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_live_bars_and_quiet_gets_none(tmp_path):
    shown = _cli(tmp_path, TRAIN, terminal=True)
    assert "%|" in shown and "\r" in shown  # tqdm's bar, redrawn in place
    assert "loss " in shown and "ex_s " in shown  # the phase line reports the last loss and examples/s
    assert "seq topic: 6/6 steps in" in shown  # the phase's line stays when the bar goes
    quiet = _cli(tmp_path, [*TRAIN, "--quiet"], terminal=True)
    assert "%|" not in quiet and "steps in" not in quiet and "rows in" not in quiet
    assert "topic:" in quiet  # the result (the version's ref) is still printed


def test_logs_get_one_plain_line_per_phase(tmp_path):
    logged = _cli(tmp_path, TRAIN, terminal=False)
    assert "\r" not in logged and "%|" not in logged
    lines = [line for line in logged.splitlines() if " in " in line and "/s" in line]
    assert any(line.startswith("seq topic: 6/6 steps in ") and "loss " in line for line in lines), logged
    assert any(line.startswith("eval topic: 8/8 rows in ") for line in lines), logged


def test_phase_modes(capsys):
    try:
        progress.set_mode("lines")
        with progress.phase("work", 3, "item") as p:
            for _ in range(3):
                p.advance(1, loss=0.5)
        progress.say("hello")
        err = capsys.readouterr().err
        assert err.startswith("work: 3/3 items in ") and "loss 0.5" in err and err.endswith("hello\n")
        progress.set_mode("quiet")
        with progress.phase("work", 3) as p:
            p.advance(3)
        progress.say("hello")
        assert capsys.readouterr().err == ""
        with pytest.raises(ValueError, match="progress mode must be"):
            progress.set_mode("loud")
    finally:
        progress.set_mode("auto")


def test_the_gguf_readers_own_bar_is_silent_in_logs_and_kept_on_a_terminal(monkeypatch):
    import io
    import sys

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from adapter_hub.models.smollm2 import gguf_bars_unless_tty

    def drawn(terminal: bool) -> str:
        monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
        out = io.StringIO()
        with gguf_bars_unless_tty():
            for _ in gguf_utils.tqdm(range(5), desc="Converting", file=out, mininterval=0):
                pass
        return out.getvalue()

    original = gguf_utils.tqdm
    assert drawn(terminal=False) == ""
    assert gguf_utils.tqdm is original  # put back
    assert "Converting" in drawn(terminal=True) and "\r" in drawn(terminal=True)
