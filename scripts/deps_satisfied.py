"""Exit 0 when driftline is installed editable from this checkout with every requirement of the
given extras satisfied, else 1 (used by scripts/test.sh to skip a slow, no-op `pip install`)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

__all__ = ["missing_requirements"]


def missing_requirements(dist_name: str, extras: set[str]) -> list[str]:
    """Requirements of ``dist_name`` (with ``extras``, followed recursively) that are not met."""
    missing: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(dist_name, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (name.lower(), wanted) in seen:
            continue
        seen.add((name.lower(), wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            active = [e for e in wanted | {""} if req.marker is None or req.marker.evaluate({"extra": e})]
            if not active:
                continue
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                missing.append(str(req))
                continue
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                missing.append(f"{req} (have {version})")
            elif req.extras:
                todo.append((req.name, frozenset(req.extras)))
    return missing


def main() -> int:
    repo = Path(__file__).resolve().parents[1]
    try:
        import driftline
    except ImportError:
        return 1
    if Path(driftline.__file__).resolve().parent != repo / "driftline":
        return 1
    missing = missing_requirements("driftline", set(sys.argv[1:]) or {"all"})
    for item in missing:
        print(f"missing: {item}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
