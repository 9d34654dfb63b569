"""``pip install 'driftline[sidecar]'`` stays small: no FastAPI, scipy, pandas or Evidently, even transitively.

Offline and deterministic: the requirement set comes from ``pyproject.toml`` and its transitive
closure from the installed distributions' own metadata (``importlib.metadata``), evaluated with the
markers of this interpreter, as pip's resolver would. A second test runs the sidecar with those
packages made unimportable, so an import slipped into a sidecar module fails here, not on a device.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"fastapi", "starlette", "uvicorn", "scipy", "pandas", "evidently", "pyarrow", "httpx",
             "scikit-learn", "psycopg", "sqlalchemy"}


def sidecar_closure() -> dict[str, str]:
    """Every distribution ``driftline[sidecar]`` pulls in, mapped to who asked for it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [(Requirement(r), "driftline") for r in project["dependencies"]]
    todo += [(Requirement(r), "driftline[sidecar]") for r in project["optional-dependencies"]["sidecar"]]
    seen: dict[str, str] = {}
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen[name] = parent
        if name == "driftline":  # a self-reference such as driftline[sidecar,service] would show up here
            raise AssertionError(f"{parent} requires driftline{sorted(req.extras)}")
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{req.name} (needed by {parent}) is not installed; cannot check offline") from None
        for text in requires:
            sub = Requirement(text)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append((sub, req.name))
    return seen


def test_sidecar_extra_does_not_pull_server_or_analysis_packages() -> None:
    closure = sidecar_closure()
    assert {"kafka-python", "prometheus-client", "datasketches", "numpy", "pydantic-settings"} <= set(closure)
    pulled = {name: closure[name] for name in closure if name in FORBIDDEN}
    assert pulled == {}, f"driftline[sidecar] would install {pulled} (package: required by)"


def test_the_closure_check_can_fail() -> None:
    """Guard against a vacuous check: the service extra does pull FastAPI."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    service = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["service"]}
    assert {"fastapi", "scipy"} & service


BLOCKED_RUN = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"blocked for this test: {{name}}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import json, pathlib, tempfile, numpy as np
    from driftline.apps.cli.main import main
    from driftline.edge_sidecar.runner import Sidecar
    from driftline.edge_sidecar.settings import load_settings
    from driftline.edge_sidecar.transport import make_transport
    import driftline.edge_sidecar.transport.kafka

    assert main(["sidecar", "--check"]) == 0
    tmp = tempfile.mkdtemp()
    s = load_settings(None, spool={{"path": tmp, "fsync": False}}, api={{"port": 0}}, model="m",
                      proxy={{"enabled": True, "port": 0}}, transport={{"http": {{"url": "http://127.0.0.1:9"}}}})
    sc = Sidecar(s).start()
    sc.monitor.observe({{"a": 1.0, "b": "x"}}, 0.5)
    sc.monitor.observe(np.ones((10, 3)))
    status, _, body = sc._metrics()
    assert status == 200 and b"driftline_sidecar_observations_total" in body
    sc.stop(grace=0)
    assert sc.spool.stats().pending_rows == 11
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps(loaded))
""")


def test_the_sidecar_runs_without_the_heavy_packages(tmp_path: Path) -> None:
    blocked = sorted(FORBIDDEN | {"sklearn", "evidently"})
    out = subprocess.run([sys.executable, "-c", BLOCKED_RUN.format(blocked=blocked)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
