"""The rooms and the arrows between them, read from the source (docs/architecture.md draws them).

* The core (``driftline/``) imports no shell (``driftline.edge_sidecar``, ``driftline.service``), no
  composition root (``driftline.apps``) and not the dashboards tooling.
* Apart from the I/O helpers named below, the core is pure: no sockets, threads, processes, HTTP,
  databases or Kafka, and no file system or environment access through ``os``.
* The shells import the core only: the sidecar never imports the service, nor the service the sidecar,
  and neither imports a composition root. Only ``apps/`` (the command and the demo) composes them.

Static (``ast``) so a lazy import inside a function counts too, plus one fresh interpreter that imports
every core module and finds no shell loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-dir"]
SHELLS = ("driftline.edge_sidecar", "driftline.service")
NOT_CORE = (*SHELLS, "driftline.apps", "driftline.dashboards")
# The core's I/O helpers, named as such in their docstrings: they read data files, profile files,
# settings files and the environment. Everything else in the core is pure.
IO_HELPERS = {"driftline.arrowfiles", "driftline.datafiles", "driftline.profiling", "driftline.settings",
              "driftline.spark", "driftline.wire"}
IMPURE = {"asyncio", "fastapi", "http", "httpx", "kafka", "os", "psycopg", "pyspark", "shutil", "signal", "socket",
          "sqlite3", "subprocess", "threading", "urllib", "uvicorn"}


def module_name(path: Path) -> str:
    """The import name of a source file, through ``[tool.setuptools.package-dir]``."""
    rel = path.relative_to(ROOT).with_suffix("")
    best, mapped = "", ""
    for name, src in PACKAGE_DIRS.items():
        if Path(src) in rel.parents and len(src) > len(best):
            best, mapped = src, name
    parts = rel.relative_to(best).parts
    return ".".join([mapped, *(parts[:-1] if parts[-1] == "__init__" else parts)])


def imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved, at any depth of the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def within(mod: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in packages)


def test_module_names_resolve_through_the_package_map() -> None:
    assert module_name(ROOT / "apps" / "cli" / "main.py") == "driftline.apps.cli.main"
    assert module_name(ROOT / "edge_sidecar" / "__init__.py") == "driftline.edge_sidecar"
    assert module_name(ROOT / "driftline" / "stats" / "canary.py") == "driftline.stats.canary"
    assert "driftline.profile" in imports(ROOT / "driftline" / "stats" / "canary.py")  # from ..profile import


@pytest.mark.parametrize("path", sources("driftline"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_shell_and_no_root(path: Path) -> None:
    bad = sorted(m for m in imports(path) if within(m, NOT_CORE))
    assert not bad, f"{path.relative_to(ROOT)} is core and must not import {bad}"


@pytest.mark.parametrize("path", [p for p in sources("driftline") if module_name(p) not in IO_HELPERS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pure_core_does_no_io(path: Path) -> None:
    bad = sorted(m for m in imports(path) if m.split(".")[0] in IMPURE)
    assert not bad, f"{path.relative_to(ROOT)} is pure core; move {bad} into an I/O helper or a shell"


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("edge_sidecar", ("driftline.service", "driftline.apps")),
    ("service", ("driftline.edge_sidecar", "driftline.apps")),
    ("dashboards", (*SHELLS, "driftline.apps")),
])
def test_a_shell_imports_the_core_only(folder: str, forbidden: tuple[str, ...]) -> None:
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imports(p) if within(m, forbidden)) for p in sources(folder)}
    assert not {k: v for k, v in bad.items() if v}


def test_only_the_roots_compose_both_shells() -> None:
    composers = {str(p.relative_to(ROOT)) for folder in ("driftline", "edge_sidecar", "service", "dashboards", "apps")
                 for p in sources(folder)
                 if all(any(within(m, (s,)) for m in imports(p)) for s in SHELLS)}
    assert composers and all(c.startswith("apps/") for c in composers), composers
    assert "apps/demo/runner.py" in composers


def test_importing_the_whole_core_loads_no_shell() -> None:
    core = [module_name(p) for p in sources("driftline")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in core)
            + f"print(sorted(m for m in sys.modules if m.startswith({NOT_CORE!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
