"""`adapter-hub ui`: a read-only web view of a registry — tasks, versions with their lineage graph,
evaluations, and benchmark runs with accuracy heatmaps, curves with intervals and comparisons — and
the JSON API the pages are built from (`/api/...`, the shapes of the CLI's `--json`).

Needs the `ui` extra (starlette, jinja2, uvicorn); never imports torch.
"""

from __future__ import annotations

from adapter_hub.ui.app import create_app

__all__ = ["create_app"]
