"""Drift and canary evaluation: merge stored windows over a time range, then call the core statistics.

The newest evaluation of each model version is cached for the Prometheus collector and the status
page, so a scrape never computes statistics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from driftline.profile import StreamKey, WindowProfile
from driftline.stats import CanaryConfig, DriftConfig, Guardrail, compare_profiles, evaluate_canary

from .errors import BadRequest, NotFound
from .merging import annotate_report, merge_windows
from .settings import ServiceSettings
from .store import Store, WindowRow

__all__ = ["EVALUATION_STAGES", "Evaluator", "ModelState", "canary_config_from_dict"]

log = logging.getLogger("driftline.service.evaluation")

EVALUATION_STAGES = ("drift", "canary", "retrain", "retention")

WEEK = 7 * 86400.0


@dataclass
class ModelState:
    """The newest evaluation of one model version, read by collectors and the status page."""

    model: str
    version: str
    drift: dict[str, Any] | None = None
    reference_source: str | None = None
    evaluated_at: float = 0.0
    drift_since: float | None = None  # start of the current unbroken run of dataset drift


@dataclass
class CanaryState:
    config: dict[str, Any]
    created_at: float
    result: dict[str, Any] | None = None


@dataclass
class Evaluator:
    """Reads the store, evaluates, and keeps the newest results."""

    store: Store
    settings: ServiceSettings
    states: dict[tuple[str, str], ModelState] = field(default_factory=dict)
    canary_states: dict[str, CanaryState] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)  # stage -> failed evaluations
    _failing: set[tuple[str, str]] = field(default_factory=set)  # (stage, subject) failing now: logged once
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, stage: str, subject: str, exc: BaseException) -> None:
        """Count a failed evaluation; log it with its traceback the first time in a row for ``subject``."""
        with self._lock:
            self.errors[stage] += 1
            first = (stage, subject) not in self._failing
            self._failing.add((stage, subject))
        if first:
            log.error("%s evaluation of %s failed (logged once until it recovers): %s", stage, subject, exc,
                      exc_info=exc)

    def succeeded(self, stage: str, subject: str) -> None:
        """Clear the failing mark of ``subject``, so its next failure is logged again."""
        with self._lock:
            if (stage, subject) in self._failing:
                self._failing.discard((stage, subject))
                log.info("%s evaluation of %s recovered", stage, subject)

    def drift_config(self, model: str) -> DriftConfig:
        ev = self.settings.evaluation
        return DriftConfig(alpha=ev.alpha, min_rows=ev.min_rows, drift_share_threshold=ev.drift_share_threshold,
                           thresholds={**DriftConfig().thresholds, **ev.thresholds},
                           critical_features=frozenset(ev.critical_features.get(model, [])))

    # ---- references ---------------------------------------------------------------------------
    def reference_for(self, model: str, version: str, since: float, until: float) -> tuple[WindowProfile, str] | None:
        """Uploaded reference, else the version's first rows/hours, else the same period a week earlier."""
        found = self.store.reference(model, version)
        if found is not None:
            return found
        ev = self.settings.evaluation
        if ev.auto_reference_rows > 0 or ev.auto_reference_hours > 0:
            rows = self.store.windows(model, version)
            rows = [r for r in rows if r.profile.key.variant != "canary"]
            if rows:
                first = rows[0].start
                picked: list[WindowRow] = []
                total = 0
                for r in rows:
                    if ev.auto_reference_hours > 0 and r.start >= first + ev.auto_reference_hours * 3600:
                        break
                    if ev.auto_reference_rows > 0 and total >= ev.auto_reference_rows:
                        break
                    picked.append(r)
                    total += r.rows
                enough = (ev.auto_reference_rows > 0 and total >= ev.auto_reference_rows) or (
                    ev.auto_reference_hours > 0 and rows[-1].end >= first + ev.auto_reference_hours * 3600)
                if picked and enough:
                    return merge_windows([r.profile for r in picked]).profile, "first_window"
        if ev.seasonal_reference:
            rows = self.store.windows(model, version, since=since - WEEK, until=until - WEEK)
            if rows:
                return merge_windows([r.profile for r in rows]).profile, "week_ago"
        return None

    # ---- drift ------------------------------------------------------------------------------------
    def window_range(self, since: float | None, until: float | None) -> tuple[float, float]:
        until = time.time() if until is None else until
        since = until - self.settings.evaluation.current_window_seconds if since is None else since
        if since >= until:
            raise BadRequest("'since' must be before 'until'")
        return since, until

    def drift(self, model: str, version: str | None = None, variant: str | None = None,
              since: float | None = None, until: float | None = None, source: str | None = None) -> dict[str, Any]:
        """The drift report of ``model`` (its newest version by default) over ``(since, until]``."""
        version = version or self.latest_version(model)
        since, until = self.window_range(since, until)
        rows = self.store.windows(model, version, variant, since, until, source)
        ref = self.reference_for(model, version, since, until)
        if ref is None:
            raise NotFound(f"no reference for model {model!r} version {version!r}",
                           "upload one with PUT /v1/models/{model}/versions/{version}/reference")
        if not rows:
            out = compare_profiles(ref[0], WindowProfile(ref[0].key, since, until), self.drift_config(model)).to_dict()
        else:
            out = _compare(ref[0], rows, self.drift_config(model))
        out.update(model=model, version=version, variant=variant, since=since, until=until,
                   reference_source=ref[1], windows=len(rows))
        return out

    def latest_version(self, model: str) -> str:
        streams = [m for m in self.store.models() if m["name"] == model]
        if not streams:
            raise NotFound(f"no data for model {model!r}")
        latest = max(streams[0]["streams"], key=lambda s: s["last_window_end"])
        return str(latest["version"])

    def history(self, model: str, version: str | None = None, buckets: int = 24,
                until: float | None = None) -> list[dict[str, Any]]:
        """Drift per time bucket, oldest first: the feature-by-time heatmap."""
        version = version or self.latest_version(model)
        bucket = self.settings.evaluation.history_bucket_seconds
        until = time.time() if until is None else until
        since = until - buckets * bucket
        rows = self.store.windows(model, version, None, since, until)
        ref = self.reference_for(model, version, since, until)
        if ref is None:
            raise NotFound(f"no reference for model {model!r} version {version!r}")
        grouped: dict[int, list[WindowRow]] = {}
        for r in rows:
            grouped.setdefault(int((r.end - since) // bucket), []).append(r)
        cfg = self.drift_config(model)
        out = []
        for idx in sorted(grouped):
            rep = _compare(ref[0], grouped[idx], cfg)
            out.append({"start": since + idx * bucket, "end": since + (idx + 1) * bucket,
                        "rows": sum(r.rows for r in grouped[idx]), "drift_share": rep["drift_share"],
                        "dataset_drift": rep["dataset_drift"],
                        "features": [_slim(f) for f in rep["features"]],
                        "outputs": [_slim(f) for f in rep["outputs"]]})
        return out

    def devices(self, model: str, version: str | None = None, since: float | None = None,
                until: float | None = None) -> list[dict[str, Any]]:
        """Devices ranked by drift share, then by their largest drift score."""
        version = version or self.latest_version(model)
        since, until = self.window_range(since, until)
        rows = self.store.windows(model, version, None, since, until)
        ref = self.reference_for(model, version, since, until)
        if ref is None:
            raise NotFound(f"no reference for model {model!r} version {version!r}")
        by_device: dict[str, list[WindowRow]] = {}
        for r in rows:
            by_device.setdefault(r.source, []).append(r)
        cfg = self.drift_config(model)
        out = []
        for device, rs in by_device.items():
            rep = _compare(ref[0], rs, cfg)
            scores = [f["scores"].get("ks") or 0.0 for f in rep["features"]]
            out.append({"device": device, "cohort": rs[-1].cohort, "rows": sum(r.rows for r in rs),
                        "drift_share": rep["drift_share"], "dataset_drift": rep["dataset_drift"],
                        "max_ks": max(scores) if scores else 0.0,
                        "drifted_features": [f["name"] for f in rep["features"] if f["drift_detected"]],
                        "last_window_end": max(r.end for r in rs)})
        out.sort(key=lambda d: (-d["drift_share"], -d["max_ks"], d["device"]))
        return out

    # ---- the background pass ----------------------------------------------------------------------
    def evaluate_all(self, now: float | None = None) -> list[ModelState]:
        """Evaluate every model version with data in the current window; update the caches.

        Each model version and each canary is evaluated on its own: one that fails is counted
        (:attr:`errors`), logged once, and the pass goes on with the next.
        """
        now = time.time() if now is None else now
        changed = []
        for m in self.store.models():
            for model, version in sorted({(m["name"], st["version"]) for st in m["streams"]}):
                subject = f"{model} {version}"
                try:
                    report = self.drift(model, version, since=now - self.settings.evaluation.current_window_seconds,
                                        until=now)
                except NotFound:
                    self.succeeded("drift", subject)
                    continue
                except Exception as exc:  # one model's failure never skips another
                    self.failed("drift", subject, exc)
                    continue
                self.succeeded("drift", subject)
                with self._lock:
                    st = self.states.setdefault((model, version), ModelState(model, version))
                    st.drift = report
                    st.reference_source = report["reference_source"]
                    st.evaluated_at = now
                    if not report["dataset_drift"]:
                        st.drift_since = None
                    elif st.drift_since is None:
                        st.drift_since = now
                changed.append(st)
        for model in sorted(self.store.canaries()):
            try:
                self.canary(model, now=now)
            except (NotFound, BadRequest):
                continue
            except Exception as exc:
                self.failed("canary", model, exc)
                continue
            self.succeeded("canary", model)
        return changed

    # ---- canaries ---------------------------------------------------------------------------------
    def canary(self, model: str, now: float | None = None) -> dict[str, Any]:
        """The canary verdict of ``model``: both arms merged over the same time range."""
        found = self.store.canaries().get(model)
        if found is None:
            raise NotFound(f"no canary experiment for model {model!r}",
                           "create one with PUT /v1/models/{model}/canary")
        raw, created = found
        cfg = canary_config_from_dict(raw)
        now = time.time() if now is None else now
        base_rows = self.store.windows(model, cfg.baseline_version, since=created)
        can_rows = self.store.windows(model, cfg.canary_version, since=created)
        if base_rows and can_rows:  # the same time range for both arms
            lo = max(base_rows[0].start, can_rows[0].start)
            hi = min(base_rows[-1].end, can_rows[-1].end)
            base_rows = [r for r in base_rows if r.start >= lo and r.end <= hi]
            can_rows = [r for r in can_rows if r.start >= lo and r.end <= hi]
        empty = WindowProfile(StreamKey.of(model, ""), created, now)
        base = merge_windows([r.profile for r in base_rows]).profile if base_rows else empty
        cand = merge_windows([r.profile for r in can_rows]).profile if can_rows else empty.copy()
        duration = (max(r.end for r in can_rows) - min(r.start for r in can_rows)) if can_rows else 0.0
        result = evaluate_canary(cfg, base, cand, duration_s=duration).to_dict()
        result.update(model=model, created_at=created, evaluated_at=now)
        with self._lock:
            self.canary_states[model] = CanaryState(raw, created, result)
        return result


def _compare(ref: WindowProfile, rows: list[WindowRow], cfg: DriftConfig) -> dict[str, Any]:
    """The drift report of ``rows`` merged; columns whose type changed in the range become ``type_change``."""
    merged = merge_windows([r.profile for r in rows])
    out = annotate_report(compare_profiles(ref, merged.profile, cfg).to_dict(), merged.conflicts)
    for role, items in (("feature", out["features"]), ("output", out["outputs"])):
        ref_cols, cur_cols = (ref.features, merged.profile.features) if role == "feature" else \
            (ref.outputs, merged.profile.outputs)
        for item in items:  # the kind changed against the reference: say how many values of each side
            if item["status"] == "type_change" and "types" not in item and item["name"] in cur_cols:
                r, c = ref_cols[item["name"]], cur_cols[item["name"]]
                item["types"] = {c.kind: int(c.count)}
                item["rows"] = {"reference": int(r.count), "current": int(c.count)}
    return out


def _slim(item: dict[str, Any]) -> dict[str, Any]:
    return {"name": item["name"], "drift_detected": item["drift_detected"], "status": item["status"],
            **({"types": item["types"]} if "types" in item else {}),
            "scores": {k: item["scores"].get(k) for k in ("ks", "psi", "tvd", "jensen_shannon")}}


def canary_config_from_dict(raw: dict[str, Any]) -> CanaryConfig:
    """Build a :class:`CanaryConfig` from the JSON body of ``PUT /v1/models/{model}/canary``."""
    try:
        kwargs: dict[str, Any] = {k: raw[k] for k in ("baseline_version", "canary_version")}
        for k in ("score_output", "label_output", "positive_threshold", "alpha", "min_rows", "min_rows_rollback"):
            if raw.get(k) is not None:
                kwargs[k] = raw[k]
        if raw.get("min_duration_seconds") is not None:
            kwargs["min_duration_s"] = float(raw["min_duration_seconds"])
        if raw.get("guardrails") is not None:
            kwargs["guardrails"] = tuple(Guardrail(**g) for g in raw["guardrails"])
        return CanaryConfig(**kwargs)
    except KeyError as exc:
        raise BadRequest(f"canary config needs {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"invalid canary config: {exc}") from None
