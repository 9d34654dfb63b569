"""The demo's live terminal view and final summary: pure functions from API answers to text."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Snapshot", "render_live", "render_summary", "summarise"]

Snapshot = dict[str, Any]


def _drifted(drift: Mapping[str, Any] | None, key: str = "features") -> list[str]:
    return [f["name"] for f in (drift or {}).get(key, []) if f.get("drift_detected")]


def render_live(snap: Snapshot, elapsed: float, duration: float | None) -> str:
    """One compact status line, redrawn in place on a terminal."""
    drift = snap.get("drift") or {}
    canary = snap.get("canary") or {}
    share = drift.get("drift_share")
    phase = snap.get("phase", "")
    total = f"/{duration:.0f}s" if duration else "s"
    return (
        f"[{elapsed:5.1f}{total}] {phase:<18} rows {snap.get('rows', 0):>8,}  "
        f"windows shipped {snap.get('windows', 0):>4}  "
        f"drift share {'  –  ' if share is None else f'{share:5.0%}'}  "
        f"drifted {len(_drifted(drift)):>2}  "
        f"canary {canary.get('verdict', '–'):<8}  retrain {snap.get('retrain_requests', 0)}"
    )


def summarise(snap: Snapshot, urls: Mapping[str, str]) -> dict[str, Any]:
    """The end-of-run summary as JSON-ready data (what ``--json`` prints)."""
    drift = snap.get("drift") or {}
    canary = snap.get("canary") or {}
    devices: Sequence[Mapping[str, Any]] = snap.get("devices") or []
    drifted_devices = [d["device"] for d in devices if d.get("dataset_drift") or d.get("drift_detected")]
    return {
        "model": snap.get("model"),
        "rows": snap.get("rows", 0),
        "windows_shipped": snap.get("windows", 0),
        "dataset_drift": bool(drift.get("dataset_drift")),
        "drift_share": drift.get("drift_share"),
        "drifted_features": _drifted(drift),
        "prediction_shift": _drifted(drift, "outputs"),
        "drifted_devices": drifted_devices,
        "devices_ranked": [
            {"device": d.get("device"), "drift_share": d.get("drift_share")} for d in list(devices)[:10]
        ],
        "expected_drifted_devices": snap.get("expected_drifted_devices", []),
        "canary": {
            "baseline_version": canary.get("baseline_version"),
            "canary_version": canary.get("canary_version"),
            "verdict": canary.get("verdict"),
            "reasons": canary.get("reasons", []),
        },
        "retraining_requests": snap.get("retrain_payloads", []),
        "conformance": _conformance(snap),
        "urls": dict(urls),
    }


def _conformance(snap: Snapshot) -> dict[str, Any]:
    """Golden-set results of the production version: devices, how many pass, which fail and why."""
    items = [c for c in snap.get("conformance") or [] if c.get("version") == "v1"]
    if not items:
        return {"devices": 0, "passing": 0, "failing_devices": [],
                "expected_failing": snap.get("expected_nonconforming_devices", [])}
    it = items[0]
    failing = [{"device": d["device"], "result": d["result"], "cohort": d.get("cohort", {}),
                "max_abs_diff": float(d.get("max_abs_diff") or 0.0), "top1_agreement": float(d.get("top1_agreement") or 0.0),
                "score_ks": d.get("score_ks"), "error": d.get("error"), "trigger": d.get("trigger")}
               for d in it.get("failing_devices", [])]
    return {"devices": it["devices"], "passing": it.get("pass", 0), "failing_devices": failing,
            "expected_failing": snap.get("expected_nonconforming_devices", [])}


def render_summary(summary: Mapping[str, Any]) -> str:
    """A readable end-of-run report."""
    lines = ["", "Driftline demo summary", "======================"]
    lines.append(f"rows observed on the fleet: {summary['rows']:,}; windows shipped: {summary['windows_shipped']}")
    share = summary.get("drift_share")
    lines.append(
        f"dataset drift: {'YES' if summary['dataset_drift'] else 'no'}"
        + (f" (drift share {share:.0%})" if isinstance(share, int | float) else "")
    )
    feats = summary["drifted_features"]
    lines.append(f"drifted features ({len(feats)}): " + (", ".join(feats[:12]) + (" …" if len(feats) > 12 else "")
                                                       if feats else "none"))
    if summary["prediction_shift"]:
        lines.append("prediction shift in: " + ", ".join(summary["prediction_shift"]))
    lines.append("drifted devices: " + (", ".join(summary["drifted_devices"]) or "none")
                 + f"   (camera replaced on: {', '.join(summary['expected_drifted_devices']) or 'none'})")
    c = summary["canary"]
    lines.append(f"canary {c['canary_version']} vs {c['baseline_version']}: {str(c['verdict']).upper()}")
    for r in c["reasons"][:5]:
        lines.append(f"  - {r}")
    conf = summary.get("conformance") or {}
    if conf.get("devices"):
        bad = conf["failing_devices"]
        lines.append(f"golden-set conformance: {conf['passing']} of {conf['devices']} devices compute the cloud's "
                     "outputs" + ("; FAILING: " + ", ".join(
                         f"{d['device']} ({', '.join(f'{k}={v}' for k, v in d['cohort'].items() if k == 'driver')}; "
                         f"max abs diff {d['max_abs_diff']:.3g}, top-1 {d['top1_agreement']:.3f})" for d in bad)
                         if bad else "")
                     + f"   (bad driver on: {', '.join(conf['expected_failing']) or 'none'})")
    reqs = summary["retraining_requests"]
    if reqs:
        first = reqs[0]
        lines.append(f"retraining webhook delivered ({len(reqs)} request(s), signature verified): "
                     + json.dumps({k: first.get(k) for k in ("model", "version", "reason") if k in first}))
    else:
        lines.append("retraining webhook: not fired")
    lines.append("")
    lines.append("The demo's service has stopped with it; `driftline demo --forever` keeps the pages up "
                 "until Ctrl-C.")
    return "\n".join(lines)
