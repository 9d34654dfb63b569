"""The distribution: every package folder ships, the licence is declared, extras stay light."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]


def _import_name(folder: Path) -> str:
    rel = folder.relative_to(ROOT)
    best = ""
    for name, src in PACKAGE_DIRS.items():
        src_path = Path(src)
        if rel == src_path or src_path in rel.parents:
            if len(src) >= len(best):
                best, mapped = src, name
    suffix = rel.relative_to(Path(best)).parts
    return ".".join([mapped, *suffix])


def test_every_package_folder_is_listed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for top in PACKAGE_DIRS.values():
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(_import_name(init.parent))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "these listed packages have no folder"


def test_licence_and_entry_point() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert project["scripts"]["driftline"] == "driftline.apps.cli.main:main"
    assert project["name"] == "driftline"


def test_core_dependencies_are_light() -> None:
    heavy = ("fastapi", "uvicorn", "scipy", "pandas", "evidently", "sqlalchemy", "psycopg", "pyarrow")
    for dep in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["sidecar"]:
        assert not dep.lower().startswith(heavy), dep
