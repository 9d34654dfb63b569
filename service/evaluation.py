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

from pydantic import TypeAdapter, ValidationError

from driftline.profile import StreamKey, WindowProfile
from driftline.stats import CanaryConfig, DriftConfig, compare_profiles, evaluate_canary

from .device_verdicts import latest_device_verdict
from .errors import BadRequest, NotFound
from .merging import annotate_report, merge_windows
from .settings import ServiceSettings
from .store import ExperimentRow, Store, WindowRow

__all__ = ["EVALUATION_STAGES", "Evaluator", "ModelState", "RolloutRef", "canary_config_dict", "parse_canary_config"]

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
        """The drift report of ``model`` over ``(since, until]``; version: :meth:`default_version`."""
        version = version or self.default_version(model)
        since, until = self.window_range(since, until)
        rows = self.store.windows(model, version, variant, since, until, source)
        ref = self.reference_for(model, version, since, until)
        if ref is None:
            raise self.no_reference(model, version)
        if not rows:
            out = compare_profiles(ref[0], WindowProfile(ref[0].key, since, until), self.drift_config(model)).to_dict()
        else:
            out = _compare(ref[0], rows, self.drift_config(model))
        out.update(model=model, version=version, variant=variant, since=since, until=until,
                   reference_source=ref[1], windows=len(rows))
        return out

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
                        "rows": sum(r.rows for r in grouped[idx]), "drift_share": rep["drift_share"],
                        "dataset_drift": rep["dataset_drift"],
                        "features": [_slim(f) for f in rep["features"]],
                        "outputs": [_slim(f) for f in rep["outputs"]]})
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
            scores = [f["scores"].get("ks") or 0.0 for f in rep["features"]]
            out.append({"device": device, "cohort": rs[-1].cohort, "rows": sum(r.rows for r in rs),
                        "drift_share": rep["drift_share"], "dataset_drift": rep["dataset_drift"],
                        "max_ks": max(scores) if scores else 0.0,
                        "drifted_features": [f["name"] for f in rep["features"] if f["drift_detected"]],
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
                    st = self.states.setdefault((model, version), ModelState(model, version))
                    st.drift = report
                    st.reference_source = report["reference_source"]
                    st.evaluated_at = now
                    if not report["dataset_drift"]:
                        st.drift_since = None
                    elif st.drift_since is None:
                        st.drift_since = now
                changed.append(st)
        for exp in self.store.experiments():
            if exp.decision is None or self.canary_states.get(exp.model) is None:
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

    def canary_gate(self, model: str, ref: RolloutRef, gate: str, now: float | None = None) -> dict[str, Any]:
        """A controller's call: start the rollout's experiment on its first call, judge it, record the call."""
        now = time.time() if now is None else now
        exp = self.start_experiment(model, ref, now)
        result = self.judge(exp, now)
        self.store.add_canary_event(model, ref.rollout, now, gate, ref.phase, result["verdict"], result["rows"])
        return result

    def canary(self, model: str, rollout: str | None = None, now: float | None = None) -> dict[str, Any]:
        """The verdict of one experiment of ``model`` (its newest by default), with its gate-call history."""
        if rollout is None:
            exps = self.store.experiments(model)
            exp = exps[0] if exps else None
        else:
            exp = self.store.experiment(model, rollout)
        if exp is None:
            raise NotFound(f"no canary experiment for model {model!r}" + (f" rollout {rollout!r}" if rollout else ""),
                           "PUT /v1/models/{model}/canary, or let a controller's first gate call start one")
        out = self.judge(exp, time.time() if now is None else now)
        out["history"] = self.store.canary_events(model, exp.rollout)
        return out

    def experiments(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every stored experiment (newest first) with its status and gate-call history, without re-judging."""
        out = []
        for e in self.store.experiments(model):
            res = e.result or {}
            out.append({"model": e.model, "rollout": e.rollout, "controller": e.controller,
                        "baseline_version": e.config["baseline_version"], "canary_version": e.config["canary_version"],
                        "started_at": e.started_at, "status": _STATUS.get(e.decision or "", "running"),
                        "decision": e.decision, "decided_at": e.decided_at, "rows": res.get("rows"),
                        "history": self.store.canary_events(e.model, e.rollout)})
        return out

    def judge(self, exp: ExperimentRow, now: float) -> dict[str, Any]:
        """The experiment's verdict: its stored decision once it has one, else both arms since its start.

        ``promote`` and ``rollback`` are sticky (the first one stored wins, on every replica); an
        experiment still undecided after ``max_duration_seconds`` is decided ``inconclusive``.
        """
        if exp.decision is not None and exp.result is not None:
            result = dict(exp.result)
        else:
            cfg = parse_canary_config(exp.config)
            result = self._evaluate(exp.model, cfg, exp.started_at, now)
            verdict = result["verdict"]
            if verdict == "continue" and now - exp.started_at >= cfg.max_duration_seconds:
                verdict = result["verdict"] = "inconclusive"
                result["reasons"].append(f"no decision within max_duration_seconds={cfg.max_duration_seconds:.0f}")
            if verdict != "continue":
                stored = self.store.decide_experiment(exp.model, exp.rollout, verdict, result, now)
                if stored is not None and stored.result is not None:
                    exp, result = stored, dict(stored.result)
        result.update(model=exp.model, rollout=exp.rollout, controller=exp.controller, started_at=exp.started_at,
                      created_at=exp.started_at, evaluated_at=now, decision=exp.decision, decided_at=exp.decided_at,
                      status=_STATUS.get(result["verdict"], "running"))
        with self._lock:
            newest = self.canary_states.get(exp.model)
            if newest is None or newest.created_at <= exp.started_at:
                self.canary_states[exp.model] = CanaryState(exp.config, exp.started_at, result)
        return result

    def _evaluate(self, model: str, cfg: CanaryConfig, started: float, now: float) -> dict[str, Any]:
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
        return evaluate_canary(cfg, base, cand, duration_s=duration).to_dict()


_STATUS = {"promote": "promoted", "rollback": "rolled_back", "inconclusive": "inconclusive"}
EXPERIMENTS_KEPT = 100  # per model; older experiments are dropped with their history


@dataclass(frozen=True)
class RolloutRef:
    """Who is asking: the controller, the rollout's identity, its phase and the versions it names."""

    controller: str
    rollout: str
    phase: str = ""
    baseline_version: str | None = None
    canary_version: str | None = None


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
