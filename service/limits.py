"""Server-side caps on names: distinct models, versions per model, features per model, feature series
(model x version x feature, over all models: what bounds the drift series in ``/metrics``), cohort
labels per model and values per cohort label.

Every name a window brings (its model, version, feature and output names, cohort values) is recorded
once in the store's ``catalog`` table, in the ingest transaction. A window that would add a name past
its cap is refused whole (``result: limited``, HTTP 422) and counted; nothing of it is stored, so it
never becomes a series. Names already known cost one set lookup; a new name costs one count query,
so several replicas on PostgreSQL agree up to names added in the same instant (at most one over a cap
per racing replica). Names stay counted after their windows age out.

:meth:`Catalog.known_model` answers from memory in O(1): the Alertmanager receiver ignores alerts for
models the service has never seen without touching the database.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import Counter
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from driftline.profile import WindowProfile

__all__ = ["LIMITS", "Caps", "Catalog"]

SCHEMA = ["""CREATE TABLE IF NOT EXISTS catalog (
    kind TEXT NOT NULL, scope TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (kind, scope, name))"""]
"""The ``catalog`` table: its SQL lives here, so it is declared here (created by :class:`Catalog`)."""

LIMITS = ("models", "versions", "features", "feature_series", "cohort_labels", "cohort_values")


@dataclass(frozen=True)
class Caps:
    """The caps in force (from ``limits`` in the settings)."""

    max_models: int = 50
    max_versions_per_model: int = 10
    max_features_per_model: int = 1000
    max_feature_series: int = 3000
    max_cohort_labels: int = 8
    max_cohort_values: int = 50

    def of(self, kind: str) -> int:
        return {"models": self.max_models, "versions": self.max_versions_per_model,
                "features": self.max_features_per_model, "feature_series": self.max_feature_series,
                "cohort_labels": self.max_cohort_labels, "cohort_values": self.max_cohort_values}[kind]


Entry = tuple[str, str, str]  # (kind, scope, name): scope is '' for models, the model, or model + US (0x1f) + label


def entries(profiles: Iterable[WindowProfile]) -> set[Entry]:
    """Every catalog entry the windows need."""
    out: set[Entry] = set()
    for p in profiles:
        k = p.key
        shape = (k.model, k.model_version, k.cohort, p.column_names("features"), p.column_names("outputs"))
        # only small shapes are cached (128 of up to 128 columns): a hostile stream of ever-new shapes costs ~25 MB at most
        out |= _entries_cached(*shape) if len(shape[3]) + len(shape[4]) <= _CACHED_COLUMNS else _entries_of(*shape)
    return out


_CACHED_COLUMNS = 128


def _entries_of(model: str, version: str, cohort: tuple[tuple[str, str], ...], features: tuple[str, ...],
                outputs: tuple[str, ...]) -> frozenset[Entry]:
    """The entries of one window's names: the same few shapes arrive again and again (a device sends
    the same columns every window), so each is built once, not per envelope."""
    out: set[Entry] = {("models", "", model), ("versions", model, version)}
    for name in (*features, *outputs):
        out.add(("features", model, name))
        out.add(("feature_series", "", f"{model}\x1f{version}\x1f{name}"))
    for label, value in cohort:
        out.add(("cohort_labels", model, label))
        out.add(("cohort_values", f"{model}\x1f{label}", value))
    return frozenset(out)


_entries_cached = functools.lru_cache(maxsize=128)(_entries_of)


class Catalog:
    """The known names and their caps; reads and writes the ``catalog`` table inside transactions."""

    def __init__(self, store: Any, caps: Caps) -> None:
        self.store = store
        self.caps = caps
        self.refused: Counter[str] = Counter({k: 0 for k in LIMITS})
        self._lock = threading.Lock()
        self._known: set[Entry] = set()
        self._models: set[str] = set()
        store.create_tables(SCHEMA)
        self._backfill()
        for kind, scope, name in store.query("SELECT kind, scope, name FROM catalog"):
            self._remember([(str(kind), str(scope), str(name))])

    def _backfill(self) -> None:
        """A store from before the catalog: record its models, versions and cohort values once."""
        if self.store.query("SELECT COUNT(*) FROM catalog")[0][0]:
            return
        found: set[Entry] = set()
        for model, version, cohort in self.store.query("SELECT DISTINCT model, version, cohort FROM windows"):
            found.add(("models", "", str(model)))
            found.add(("versions", str(model), str(version)))
            for label, value in json.loads(cohort).items():
                found.add(("cohort_labels", str(model), str(label)))
                found.add(("cohort_values", f"{model}\x1f{label}", str(value)))
        if found:
            with self.store.transaction() as conn:
                for e in sorted(found):
                    self._insert(conn, e)

    def _insert(self, conn: Any, e: Entry) -> None:
        conn.execute("INSERT INTO catalog (kind, scope, name) VALUES (?, ?, ?) "
                     "ON CONFLICT (kind, scope, name) DO NOTHING", e)

    def _remember(self, found: Iterable[Entry]) -> None:
        with self._lock:
            for e in found:
                self._known.add(e)
                if e[0] == "models":
                    self._models.add(e[2])

    def refusals(self) -> dict[str, int]:
        """Windows refused so far, by cap (a copy taken under the lock, for the collector)."""
        with self._lock:
            return dict(self.refused)

    def known_model(self, model: str) -> bool:
        """Has any window of ``model`` been accepted? (memory only, O(1))"""
        with self._lock:
            return model in self._models

    def admit(self, conn: Any, profiles: Iterable[WindowProfile],
              pending: AbstractSet[Entry] = frozenset()) -> tuple[str | None, list[Entry]]:
        """Inside the ingest transaction: ``(None, new entries)`` if the windows fit, else ``(reason, [])``.

        ``pending``: entries this transaction already admitted (an earlier envelope of the same poll
        batch), so a batch of one new model's windows asks the database about its names once, not
        once per window. Call :meth:`committed` with the new entries once the transaction has committed.
        """
        with self._lock:
            missing = sorted(entries(profiles) - self._known - pending)
        if not missing:
            return None, []
        new: list[Entry] = []
        for e in missing:
            if not conn.execute("SELECT 1 FROM catalog WHERE kind = ? AND scope = ? AND name = ?", e).fetchall():
                new.append(e)
        adding = Counter((kind, scope) for kind, scope, _ in new)
        for (kind, scope), n in sorted(adding.items()):
            (have,) = conn.execute("SELECT COUNT(*) FROM catalog WHERE kind = ? AND scope = ?",
                                   (kind, scope)).fetchall()[0]
            cap = self.caps.of(kind)
            if int(have) + n > cap:
                with self._lock:
                    self.refused[kind] += 1
                where = scope.replace("\x1f", " label ") or "the service"
                return (f"limit max {kind} reached for {where}: {have} known, cap {cap} "
                        f"(settings limits.*); this window's new {kind} were refused"), []
        for e in new:
            self._insert(conn, e)
        return None, missing

    def committed(self, found: Iterable[Entry]) -> None:
        """The transaction that added ``found`` committed: remember them."""
        self._remember(found)
