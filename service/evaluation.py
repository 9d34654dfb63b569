"""Drift and canary evaluation: merge stored windows over a time range, then call the core statistics.

The newest evaluation of each model version and each model's newest canary judgement are kept as
frozen values (:mod:`.results`); collectors, the status page and retraining read them through
:meth:`Evaluator.snapshot`, so a scrape never computes statistics and never takes a lock of ours.
Results are typed here; JSON is made at the HTTP edge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from pydantic import TypeAdapter, ValidationError

from driftline.profile import StreamKey, WindowProfile
from driftline.stats import (
    CanaryConfig,
    CanaryResult,
    ColumnResult,
    DriftConfig,
    DriftReport,
    compare_profiles,
    evaluate_canary,
)

from .device_verdicts import latest_device_verdict
from .errors import BadRequest, NotFound
from .merging import annotate_report, merge_windows
from .results import STATUS, CanaryState, DriftResult, ModelState, Snapshot
from .settings import ServiceSettings
from .store import ExperimentRow, Store, WindowRow

__all__ = ["EVALUATION_STAGES", "Evaluator", "RolloutRef", "canary_config_dict", "parse_canary_config"]

log = logging.getLogger("driftline.service.evaluation")

EVALUATION_STAGES = ("drift", "canary", "retrain", "retention", "device_health", "performance")

WEEK = 7 * 86400.0


@dataclass
class Evaluator:
    """Reads the store, evaluates, and keeps the newest results (frozen values, replaced whole)."""

    store: Store
    settings: ServiceSettings
    _states: dict[tuple[str, str], ModelState] = field(default_factory=dict)
    _canaries: dict[str, CanaryState] = field(default_factory=dict)
    _errors: Counter[str] = field(default_factory=Counter)  # stage -> failed evaluations
    _failing: set[tuple[str, str]] = field(default_factory=set)  # (stage, subject) failing now: logged once
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> Snapshot:
        """The newest results at this instant, copied under the lock: what every reader reads."""
        with self._lock:
            return Snapshot(MappingProxyType(dict(self._states)), MappingProxyType(dict(self._canaries)),
                            MappingProxyType(dict(self._errors)))

    def forget_canary(self, model: str) -> None:
        """Drop the model's newest canary judgement (its defaults and experiments were deleted)."""
        with self._lock:
            self._canaries.pop(model, None)

    def failed(self, stage: str, subject: str, exc: BaseException) -> None:
        """Count a failed evaluation; log it with its traceback the first time in a row for ``subject``."""
        with self._lock:
            self._errors[stage] += 1
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
              since: float | None = None, until: float | None = None, source: str | None = None) -> DriftResult:
        """The drift of ``model`` over ``(since, until]``; version: :meth:`default_version`."""
        version = version or self.default_version(model)
        since, until = self.window_range(since, until)
        rows = self.store.windows(model, version, variant, since, until, source)
        ref = self.reference_for(model, version, since, until)
        if ref is None:
            raise self.no_reference(model, version)
        if not rows:
            report = compare_profiles(ref[0], WindowProfile(ref[0].key, since, until), self.drift_config(model))
        else:
            report = _compare(ref[0], rows, self.drift_config(model))
        return DriftResult(model, version, variant, since, until, ref[1], len(rows), report)

    def versions(self, model: str) -> list[dict[str, Any]]:
        """Every version of ``model`` with data or a reference, newest data first, each saying whether it has one.

        A version "has a reference" when one was uploaded for it; with ``auto_reference_*`` or
        ``seasonal_reference`` set, every version with data may also get one from its own windows.
        """
        ev = self.settings.evaluation
        derived = ev.auto_reference_rows > 0 or ev.auto_reference_hours > 0 or ev.seasonal_reference
        refs = {r["version"]: r for r in self.store.reference_details(model)}
        out: dict[str, dict[str, Any]] = {}
        for m in self.store.models():
            if m["name"] != model:
                continue
            for st in m["streams"]:
                v = out.setdefault(st["version"], {"version": st["version"], "rows": 0, "windows": 0,
                                                   "last_window_end": st["last_window_end"]})
                v["rows"] += st["rows"]
                v["windows"] += st["windows"]
                v["last_window_end"] = max(v["last_window_end"], st["last_window_end"])
        for version in refs:
            out.setdefault(version, {"version": version, "rows": 0, "windows": 0, "last_window_end": None})
        for v in out.values():
            r = refs.get(v["version"])
            v["reference"] = ({"source": r["source"], "created_at": r["created_at"], "rows": r["rows"]}
                              if r else None)
            v["has_reference"] = r is not None or (derived and v["windows"] > 0)
        # newest data first; at equal times (a canary beside its baseline) the one with more traffic
        return sorted(out.values(), key=lambda v: (v["last_window_end"] is None, -(v["last_window_end"] or 0.0),
                                                    -v["rows"], -((v["reference"] or {}).get("created_at") or 0.0)))

    def default_version(self, model: str) -> str:
        """The version drift, history, devices and the model page show when none is asked for.

        The newest version (by data) that has a reference; else the newest reference without data;
        else the newest version with data (whose drift then says how to upload a reference). A new
        version that starts sending before its reference exists does not hide the one that has one.
        """
        versions = self.versions(model)
        if not versions:
            raise NotFound(f"no data and no reference for model {model!r}",
                           "send windows from a sidecar, or upload a reference with `driftline reference upload`")
        with_ref = [v for v in versions if v["has_reference"]]
        return str((with_ref or versions)[0]["version"])

    def no_reference(self, model: str, version: str) -> NotFound:
        """The 404 of a version without a reference: what to run, and which versions do have one."""
        others = [v["version"] for v in self.versions(model) if v["has_reference"] and v["version"] != version]
        hint = (f"build and upload one: driftline reference build TRAINING_FILE --model {model} --version {version} "
                f"--out ref.dlp --upload {self.settings.public_url or 'SERVICE_URL'} "
                f"(or PUT /v1/models/{model}/versions/{version}/reference with the file)")
        if others:
            hint += f"; versions with a reference: {', '.join(others)}"
        return NotFound(f"no reference for model {model!r} version {version!r}", hint)

    def latest_version(self, model: str) -> str:
        streams = [m for m in self.store.models() if m["name"] == model]
        if not streams:
            raise NotFound(f"no data for model {model!r}")
        latest = max(streams[0]["streams"], key=lambda s: s["last_window_end"])
        return str(latest["version"])

    def history(self, model: str, version: str | None = None, buckets: int = 24,
                until: float | None = None) -> list[dict[str, Any]]:
        """Drift per time bucket, oldest first: the feature-by-time heatmap."""
        version = version or self.default_version(model)
        bucket = self.settings.evaluation.history_bucket_seconds
        until = time.time() if until is None else until
        since = until - buckets * bucket
        rows = self.store.windows(model, version, None, since, until)
        ref = self.reference_for(model, version, since, until)
        if ref is None:
            raise self.no_reference(model, version)
        grouped: dict[int, list[WindowRow]] = {}
        for r in rows:
            grouped.setdefault(int((r.end - since) // bucket), []).append(r)
        cfg = self.drift_config(model)
        out = []
        for idx in sorted(grouped):
            rep = _compare(ref[0], grouped[idx], cfg)
            out.append({"start": since + idx * bucket, "end": since + (idx + 1) * bucket,
                        "rows": sum(r.rows for r in grouped[idx]), "drift_share": rep.shown_share,
                        "dataset_drift": rep.dataset_drift,
                        "features": [_slim(f) for f in rep.features],
                        "outputs": [_slim(f) for f in rep.outputs]})
        return out

    def devices(self, model: str, version: str | None = None, since: float | None = None,
                until: float | None = None) -> list[dict[str, Any]]:
        """Devices ranked by drift share, then by their largest drift score."""
        version = version or self.default_version(model)
        since, until = self.window_range(since, until)
        rows = self.store.windows(model, version, None, since, until)
        ref = self.reference_for(model, version, since, until)
        if ref is None:
            raise self.no_reference(model, version)
        by_device: dict[str, list[WindowRow]] = {}
        for r in rows:
            by_device.setdefault(r.source, []).append(r)
        cfg = self.drift_config(model)
        out = []
        for device, rs in by_device.items():
            rep = _compare(ref[0], rs, cfg)
            scores = [f.clean_scores().get("ks") or 0.0 for f in rep.features]
            out.append({"device": device, "cohort": rs[-1].cohort, "rows": sum(r.rows for r in rs),
                        "drift_share": rep.shown_share, "dataset_drift": rep.dataset_drift,
                        "max_ks": max(scores) if scores else 0.0,
                        "drifted_features": [f.name for f in rep.features if f.drift_detected],
                        "last_window_end": max(r.end for r in rs),
                        "device_verdict": latest_device_verdict(r.profile for r in rs)})
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
                    old = self._states.get((model, version))
                    since = None if not report.report.dataset_drift else (
                        old.drift_since if old is not None and old.drift_since is not None else now)
                    st = self._states[(model, version)] = ModelState(model, version, report, report.reference_source,
                                                                      now, since)
                changed.append(st)
        for exp in self.store.experiments():
            with self._lock:
                judged = exp.model in self._canaries
            if exp.decision is None or not judged:
                try:
                    self.judge(exp, now)
                except (NotFound, BadRequest):
                    continue
                except Exception as exc:
                    self.failed("canary", exp.model, exc)
                    continue
                self.succeeded("canary", exp.model)
        return changed

    # ---- canaries: one experiment per rollout ----------------------------------------------------
    def canary_defaults(self, model: str) -> CanaryConfig | None:
        """The model's canary defaults (``PUT .../canary`` or ``canaries:`` in the settings), if any."""
        found = self.store.canaries().get(model)
        return None if found is None else parse_canary_config(found[0])

    def start_experiment(self, model: str, ref: RolloutRef, now: float | None = None, *,
                         replace: bool = False, config: CanaryConfig | None = None) -> ExperimentRow:
        """The experiment of ``ref``: found, or started now from the model's defaults and the versions it names."""
        now = time.time() if now is None else now
        if not replace:
            found = self.store.experiment(model, ref.rollout)
            if found is not None:
                return found
        cfg = config or self.canary_defaults(model)
        update = {k: v for k, v in (("baseline_version", ref.baseline_version),
                                    ("canary_version", ref.canary_version)) if v}
        if cfg is None:  # only configured models get experiments: a caller cannot grow the store at will
            raise NotFound(f"no canary defaults for model {model!r}",
                           "set them with PUT /v1/models/{model}/canary or canaries: in the settings")
        cfg = parse_canary_config({**canary_config_dict(cfg), **update})
        return self.store.start_experiment(model, ref.rollout, ref.controller, canary_config_dict(cfg), now,
                                           replace=replace, keep=EXPERIMENTS_KEPT)

    def canary_gate(self, model: str, ref: RolloutRef, gate: str, now: float | None = None) -> CanaryState:
        """A controller's call: start the rollout's experiment on its first call, judge it, record the call."""
        now = time.time() if now is None else now
        exp = self.start_experiment(model, ref, now)
        state = self.judge(exp, now)
        self.store.add_canary_event(model, ref.rollout, now, gate, ref.phase, state.verdict, dict(state.result.rows))
        return state

    def canary(self, model: str, rollout: str | None = None, now: float | None = None) -> CanaryState:
        """The verdict of one experiment of ``model`` (its newest by default); its history: :meth:`canary_history`."""
        if rollout is None:
            exps = self.store.experiments(model)
            exp = exps[0] if exps else None
        else:
            exp = self.store.experiment(model, rollout)
        if exp is None:
            raise NotFound(f"no canary experiment for model {model!r}" + (f" rollout {rollout!r}" if rollout else ""),
                           "PUT /v1/models/{model}/canary, or let a controller's first gate call start one")
        return self.judge(exp, time.time() if now is None else now)

    def canary_history(self, state: CanaryState) -> list[dict[str, Any]]:
        """The gate calls of the experiment ``state`` judged, oldest first."""
        return self.store.canary_events(state.model, state.rollout)

    def experiments(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every stored experiment (newest first) with its status and gate-call history, without re-judging."""
        out = []
        for e in self.store.experiments(model):
            res = e.result or {}
            out.append({"model": e.model, "rollout": e.rollout, "controller": e.controller,
                        "baseline_version": e.config["baseline_version"], "canary_version": e.config["canary_version"],
                        "started_at": e.started_at, "status": STATUS.get(e.decision or "", "running"),
                        "decision": e.decision, "decided_at": e.decided_at, "rows": res.get("rows"),
                        "history": self.store.canary_events(e.model, e.rollout)})
        return out

    def judge(self, exp: ExperimentRow, now: float) -> CanaryState:
        """The experiment's verdict: its stored decision once it has one, else both arms since its start.

        ``promote`` and ``rollback`` are sticky (the first one stored wins, on every replica); an
        experiment still undecided after ``max_duration_seconds`` is decided ``inconclusive``.
        """
        cfg = parse_canary_config(exp.config)
        if exp.decision is not None and exp.result is not None:
            result = CanaryResult.from_dict(exp.result, cfg)
        else:
            result = self._evaluate(exp.model, cfg, exp.started_at, now)
            if result.verdict == "continue" and now - exp.started_at >= cfg.max_duration_seconds:
                result = result.decided("inconclusive",
                                        f"no decision within max_duration_seconds={cfg.max_duration_seconds:.0f}")
            if result.verdict != "continue":
                stored = self.store.decide_experiment(exp.model, exp.rollout, result.verdict, result.to_dict(), now)
                if stored is not None and stored.result is not None:
                    exp, result = stored, CanaryResult.from_dict(stored.result, cfg)
        state = CanaryState(exp.model, exp.rollout, exp.controller, exp.started_at, now, exp.decision, exp.decided_at,
                            result)
        with self._lock:
            newest = self._canaries.get(exp.model)
            if newest is None or newest.started_at <= exp.started_at:
                self._canaries[exp.model] = state
        return state

    def _evaluate(self, model: str, cfg: CanaryConfig, started: float, now: float) -> CanaryResult:
        base_rows = self.store.windows(model, cfg.baseline_version, since=started)
        can_rows = self.store.windows(model, cfg.canary_version, since=started)
        if base_rows and can_rows:  # the same time range for both arms
            lo = max(base_rows[0].start, can_rows[0].start)
            hi = min(base_rows[-1].end, can_rows[-1].end)
            base_rows = [r for r in base_rows if r.start >= lo and r.end <= hi]
            can_rows = [r for r in can_rows if r.start >= lo and r.end <= hi]
        empty = WindowProfile(StreamKey.of(model, ""), started, max(now, started + 1e-6))
        base = merge_windows([r.profile for r in base_rows]).profile if base_rows else empty
        cand = merge_windows([r.profile for r in can_rows]).profile if can_rows else empty.copy()
        duration = (max(r.end for r in can_rows) - min(r.start for r in can_rows)) if can_rows else 0.0
        return evaluate_canary(cfg, base, cand, duration_s=duration)


EXPERIMENTS_KEPT = 100  # per model; older experiments are dropped with their history


@dataclass(frozen=True)
class RolloutRef:
    """Who is asking: the controller, the rollout's identity, its phase and the versions it names."""

    controller: str
    rollout: str
    phase: str = ""
    baseline_version: str | None = None
    canary_version: str | None = None


def _compare(ref: WindowProfile, rows: list[WindowRow], cfg: DriftConfig) -> DriftReport:
    """The drift report of ``rows`` merged; columns whose type changed in the range become ``type_change``."""
    merged = merge_windows([r.profile for r in rows])
    report = annotate_report(compare_profiles(ref, merged.profile, cfg), merged.conflicts)

    def kinds(item: ColumnResult, ref_cols: Any, cur_cols: Any) -> ColumnResult:
        # the kind changed against the reference: say how many values of each side
        if item.status == "type_change" and item.types is None and item.name in cur_cols:
            r, c = ref_cols[item.name], cur_cols[item.name]
            return replace(item, types={c.kind: int(c.count)}, rows=(int(r.count), int(c.count)))
        return item

    return replace(report, features=tuple(kinds(f, ref.features, merged.profile.features) for f in report.features),
                   outputs=tuple(kinds(o, ref.outputs, merged.profile.outputs) for o in report.outputs))


def _slim(item: ColumnResult) -> dict[str, Any]:
    scores = item.clean_scores()
    return {"name": item.name, "drift_detected": item.drift_detected, "status": item.status,
            **({"types": dict(item.types)} if item.types is not None else {}),
            "scores": {k: scores.get(k) for k in ("ks", "psi", "tvd", "jensen_shannon")}}


_CANARY = TypeAdapter(CanaryConfig)


def parse_canary_config(raw: Any) -> CanaryConfig:
    """Validate a canary config (a ``PUT`` body, a stored row): :class:`BadRequest` naming the field."""
    try:
        return _CANARY.validate_python(raw)
    except ValidationError as exc:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise BadRequest("invalid canary config", detail) from None


def canary_config_dict(cfg: CanaryConfig) -> dict[str, Any]:
    """The JSON form of a config, as stored and answered."""
    return _CANARY.dump_python(cfg, mode="json")  # type: ignore[no-any-return]
