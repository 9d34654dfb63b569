"""Merging stored windows when a column changed type between them (``zip`` sent as 1000, then "01000").

The core refuses to merge a numeric column with a categorical one (``SchemaConflictError``): there is
no honest sketch of both. The service must still answer, so a column whose kind differs between the
windows of a range is left out of the merged profile and reported as ``type_change`` with the count
of values of each kind; every other column is merged and scored as usual. Roll-up keeps such
windows apart instead (:func:`compatible_groups`), so no data is lost.

Pure: profiles in, profiles and counts out; reports in, reports out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from driftline.profile import WindowProfile, merge_all
from driftline.stats import DriftReport

__all__ = ["Conflicts", "Merged", "annotate_report", "compatible_groups", "merge_windows"]

Conflicts = dict[tuple[str, str], dict[str, int]]  # (role, column) -> kind -> values of that kind


@dataclass(frozen=True)
class Merged:
    """One merged profile, and the columns left out of it because their kind changed."""

    profile: WindowProfile
    conflicts: Conflicts = field(default_factory=dict)


def _kinds(profiles: Iterable[WindowProfile]) -> Conflicts:
    seen: Conflicts = {}
    for p in profiles:
        for role, cols in (("feature", p.features), ("output", p.outputs)):
            for name, col in cols.items():
                by_kind = seen.setdefault((role, name), {})
                by_kind[col.kind] = by_kind.get(col.kind, 0) + int(col.count)
    return seen


def merge_windows(profiles: Sequence[WindowProfile]) -> Merged:
    """Merge ``profiles`` (at least one); columns of more than one kind are dropped and counted."""
    conflicts = {k: v for k, v in _kinds(profiles).items() if len(v) > 1}
    if not conflicts:
        return Merged(merge_all(profiles))
    stripped = []
    for p in profiles:
        q = p.copy()
        for role, name in conflicts:
            (q.features if role == "feature" else q.outputs).pop(name, None)
        stripped.append(q)
    return Merged(merge_all(stripped), conflicts)


def compatible_groups(profiles: Sequence[WindowProfile]) -> list[list[int]]:
    """Indexes of ``profiles`` split into groups that merge without a type conflict (first fit)."""
    groups: list[tuple[list[int], dict[tuple[str, str], str]]] = []
    for i, p in enumerate(profiles):
        kinds = {(role, n): c.kind for role, cols in (("f", p.features), ("o", p.outputs)) for n, c in cols.items()}
        for members, known in groups:
            if all(known.get(k, v) == v for k, v in kinds.items()):
                members.append(i)
                known.update(kinds)
                break
        else:
            groups.append(([i], dict(kinds)))
    return [members for members, _ in groups]


def annotate_report(report: DriftReport, conflicts: Conflicts) -> DriftReport:
    """Mark the dropped columns of a drift report (of the merged profile) as ``type_change``: a new value.

    The core reported them as ``missing_column`` (they are absent from the merged profile); each becomes
    ``status: type_change`` with ``types`` (values per kind in the range) and one ``type_change``
    data-quality issue. Such columns are not evaluated, so they do not count in the drift share.
    """
    if not conflicts:
        return report
    issues = [i for i in report.issues
              if not (i["signal"] == "missing_column" and (i["role"], i["column"]) in conflicts)]
    sides = {"feature": list(report.features), "output": list(report.outputs)}
    for (role, name), kinds in sorted(conflicts.items()):
        items = sides[role]
        for idx, item in enumerate(items):
            if item.name == name:
                items[idx] = replace(item, status="type_change", drift_detected=False, types=dict(kinds),
                                     rows=(item.rows[0], sum(kinds.values())))
        issues.append({"column": name, "role": role, "signal": "type_change", "current": "mixed",
                       "types": dict(kinds)})
    return replace(report, features=tuple(sides["feature"]), outputs=tuple(sides["output"]), issues=tuple(issues))
