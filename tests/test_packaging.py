"""The wheel holds every package and data file: setuptools' explicit list must name each folder with an
__init__.py (a missing entry installs fine in editable mode and breaks only from a wheel)."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    listed = set(setuptools_config()["packages"])
    for top in ("adapter_hub", "registry"):
        for init in (ROOT / top).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} is missing from [tool.setuptools] packages in pyproject.toml"


def test_the_web_views_templates_and_styles_ship():
    patterns = setuptools_config()["package-data"]["adapter_hub.ui"]
    folder = ROOT / "adapter_hub" / "ui"
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
             if p.is_file() and p.suffix in (".html", ".css") and "__pycache__" not in p.parts]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"{name} would not be in the wheel"
