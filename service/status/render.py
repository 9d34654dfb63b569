"""Pure HTML renderers for the status page: dicts in (the API's own JSON shapes), a page out.

Everything is escaped; colours carry no information that the text does not also carry, so the page
reads the same in a screen reader, a text browser or a screenshot.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

__all__ = ["render_index", "render_model"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#18202c;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline}
header a{color:#9cc3ff;text-decoration:none}
main{padding:16px 24px;max-width:1400px}
h1{font-size:20px;margin:0}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001}
th,td{padding:6px 10px;border-bottom:1px solid #e5e8ee;text-align:left;white-space:nowrap}
th{background:#eef1f5;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.ok{background:#dff5e3;color:#17652a}.drift{background:#fde2e1;color:#9b1c1c}
.warn{background:#fff1cc;color:#7a5200}.none{background:#e8ebf0;color:#4a5566}
.heat td.cell{width:26px;height:20px;padding:0;text-align:center;font-size:10px;color:#0008}
.heat th.feat{position:sticky;left:0;background:#fff}
.muted{color:#6b7585}.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
.card{background:#fff;padding:12px 16px;box-shadow:0 1px 2px #0001}
"""


def _page(title: str, body: str, refresh_s: int | None = 10) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'>{refresh}"
        f"<title>{escape(title)} · Driftline</title><style>{_CSS}</style></head><body>"
        "<header><h1>Driftline</h1><a href='/'>Models</a><a href='/docs'>API</a>"
        "<a href='/metrics'>Metrics</a></header>"
        f"<main>{body}</main></body></html>"
    )


def _when(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}g}"
    return escape(str(v))


def _state_badge(drift: Mapping[str, Any] | None) -> str:
    if not drift:
        return "<span class='badge none'>no reference</span>"
    status = str(drift.get("status", ""))
    if status == "insufficient_data":
        return "<span class='badge none'>insufficient data</span>"
    if drift.get("dataset_drift"):
        return f"<span class='badge drift'>DRIFT {drift.get('drift_share', 0):.0%}</span>"
    return f"<span class='badge ok'>stable {drift.get('drift_share', 0):.0%}</span>"


def _verdict_badge(verdict: str | None) -> str:
    cls = {"promote": "ok", "rollback": "drift", "continue": "warn", "inconclusive": "warn"}.get(verdict or "", "none")
    return f"<span class='badge {cls}'>{escape(verdict or 'no canary')}</span>"


def render_index(models: Sequence[Mapping[str, Any]]) -> str:
    """The landing page: every model with its drift state, newest data and canary verdict."""
    if not models:
        body = ("<h2>No models yet</h2><p class=muted>Point a sidecar at this service "
                "(<code>POST /v1/ingest</code>) or run <code>driftline demo</code>.</p>")
        return _page("Models", body)
    rows = []
    for m in models:
        name = str(m["name"])
        drift = m.get("drift")
        drifted = [f["name"] for f in (drift or {}).get("features", []) if f.get("drift_detected")]
        canary = m.get("canary") or {}
        rows.append(
            f"<tr><td><a href='/models/{quote(name, safe='')}'>{escape(name)}</a></td>"
            f"<td>{escape(', '.join(m.get('versions', [])))}</td>"
            f"<td>{_state_badge(drift)}</td>"
            f"<td>{escape(', '.join(drifted[:6]) + (' …' if len(drifted) > 6 else '')) or '–'}</td>"
            f"<td class=num>{m.get('rows', 0):,}</td><td>{_when(m.get('last_window_end'))}</td>"
            f"<td>{_verdict_badge(canary.get('verdict'))}</td></tr>"
        )
    body = (
        "<h2>Models</h2><table><thead><tr><th>Model</th><th>Versions</th><th>Drift state</th>"
        "<th>Drifted features</th><th>Rows</th><th>Newest window</th><th>Canary</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _page("Models", body)


def _heat_colour(score: float | None, detected: bool) -> str:
    if score is None or not math.isfinite(score):
        return "#eef1f5"
    x = max(0.0, min(1.0, score / 0.3))  # KS distance 0.3 and above is full colour
    if detected:
        return f"rgba(214,40,40,{0.35 + 0.65 * x:.2f})"
    return f"rgba(40,120,214,{0.08 + 0.4 * x:.2f})"


def _heatmap(history: Sequence[Mapping[str, Any]], limit: int = 40) -> str:
    """Features down, time across; each cell says its score in its tooltip and marks drift with '!'."""
    windows = list(history)[-limit:]
    if not windows:
        return "<p class=muted>No history yet.</p>"
    names: list[str] = []
    for w in windows:
        for f in list(w.get("features", [])) + list(w.get("outputs", [])):
            if f["name"] not in names:
                names.append(f["name"])
    head = "".join(
        f"<th title='{escape(_when(w.get('start')))}'>{dt.datetime.fromtimestamp(w['start'], dt.UTC):%H:%M}</th>"
        if i % 5 == 0 else "<th></th>"
        for i, w in enumerate(windows)
    )
    lookup = [{f["name"]: f for f in list(w.get("features", [])) + list(w.get("outputs", []))} for w in windows]
    body = []
    for name in names:
        cells = []
        for w, feats in zip(windows, lookup, strict=True):
            f = feats.get(name)
            score = (f or {}).get("scores", {}).get("ks")
            detected = bool((f or {}).get("drift_detected"))
            tip = f"{name} at {_when(w.get('start'))}: KS {_fmt(score)}" + (" (drift)" if detected else "")
            cells.append(
                f"<td class=cell style='background:{_heat_colour(score, detected)}' "
                f"title='{escape(tip)}'>{'!' if detected else ''}</td>"
            )
        body.append(f"<tr><th class=feat>{escape(name)}</th>{''.join(cells)}</tr>")
    return (
        "<table class=heat aria-label='Drift heatmap: features by time'>"
        f"<thead><tr><th>feature \\ time (UTC)</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "<p class=muted>Cell colour: KS distance; red with '!' where the decision rule flags drift.</p>"
    )


def _scores_table(items: Sequence[Mapping[str, Any]], kind: str) -> str:
    if not items:
        return f"<p class=muted>No {kind}.</p>"
    rows = []
    for f in sorted(items, key=lambda f: (not f.get("drift_detected"), str(f.get("name")))):
        s = f.get("scores", {})
        state = "drift" if f.get("drift_detected") else ("none" if f.get("status") == "insufficient_data" else "ok")
        label = "drift" if f.get("drift_detected") else str(f.get("status", "ok")).replace("_", " ")
        rows.append(
            f"<tr><td>{escape(str(f['name']))}</td><td>{escape(str(f.get('type', '')))}</td>"
            f"<td><span class='badge {state}'>{escape(label)}</span></td>"
            + "".join(f"<td class=num>{_fmt(s.get(k))}</td>" for k in ("ks", "psi", "jensen_shannon", "wasserstein",
                                                                       "chi2_p_value", "tvd"))
            + "</tr>"
        )
    return (
        "<table><thead><tr><th>Name</th><th>Type</th><th>State</th><th>KS</th><th>PSI</th><th>JS</th>"
        f"<th>Wasserstein</th><th>χ² p</th><th>TVD</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _canary(canary: Mapping[str, Any] | None) -> str:
    if not canary:
        return "<p class=muted>No canary experiment. Create one with <code>PUT /v1/models/{model}/canary</code>.</p>"
    rows_ = canary.get("rows", {})
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in canary.get("reasons", []))
    comps = []
    for c in canary.get("comparisons", []):
        ci = c.get("ci") or c.get("effect_ci") or [None, None]
        comps.append(
            f"<tr><td>{escape(str(c.get('metric')))}</td><td class=num>{_fmt(c.get('baseline'))}</td>"
            f"<td class=num>{_fmt(c.get('canary'))}</td><td class=num>{_fmt(c.get('effect'))}</td>"
            f"<td class=num>[{_fmt(ci[0])}, {_fmt(ci[1])}]</td><td class=num>{_fmt(c.get('p_value'))}</td>"
            f"<td>{escape(str(c.get('status', '')))}</td></tr>"
        )
    return (
        f"<p>Verdict {_verdict_badge(canary.get('verdict'))} · baseline "
        f"<b>{escape(str(canary.get('baseline_version', '?')))}</b> ({rows_.get('baseline', 0):,} rows) vs canary "
        f"<b>{escape(str(canary.get('canary_version', '?')))}</b> ({rows_.get('canary', 0):,} rows)</p>"
        f"<ul>{reasons}</ul>"
        "<table><thead><tr><th>Metric</th><th>Baseline</th><th>Canary</th><th>Effect</th><th>CI</th>"
        f"<th>p</th><th>Status</th></tr></thead><tbody>{''.join(comps)}</tbody></table>"
    )


def _experiments(experiments: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    """One row per rollout (newest first): who started it, the versions, status, and its gate calls."""
    if not experiments:
        return "<p class=muted>No rollouts yet: a controller's first gate call starts one.</p>"
    rows = []
    for e in list(experiments)[:limit]:
        hist = e.get("history") or []
        calls = ", ".join(f"{escape(str(h.get('gate')))}:{escape(str(h.get('verdict')))}" for h in hist[-8:])
        rows.append(
            f"<tr><td><code>{escape(str(e.get('rollout')))}</code></td><td>{escape(str(e.get('controller')))}</td>"
            f"<td>{escape(str(e.get('baseline_version')))} → {escape(str(e.get('canary_version')))}</td>"
            f"<td>{_when(e.get('started_at'))}</td><td>{escape(str(e.get('status')))}</td>"
            f"<td class=num>{len(hist)}</td><td>{calls or '–'}</td></tr>")
    return ("<table><thead><tr><th>Rollout</th><th>Controller</th><th>Versions</th><th>Started</th><th>Status</th>"
            f"<th>Gate calls</th><th>Latest calls</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _devices(devices: Sequence[Mapping[str, Any]]) -> str:
    if not devices:
        return "<p class=muted>No devices reported yet.</p>"
    rows = "".join(
        f"<tr><td>{i}</td><td>{escape(str(d.get('device')))}</td><td class=num>{_fmt(d.get('drift_share'))}</td>"
        f"<td>{escape(', '.join(d.get('drifted_features', [])[:5]))}</td>"
        f"<td class=num>{d.get('rows', 0):,}</td><td>{_when(d.get('last_window_end'))}</td></tr>"
        for i, d in enumerate(devices, start=1)
    )
    return (
        "<table><thead><tr><th>#</th><th>Device</th><th>Drift share</th><th>Drifted features</th>"
        f"<th>Rows</th><th>Last window</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_model(
    model: str,
    drift: Mapping[str, Any] | None,
    history: Sequence[Mapping[str, Any]],
    canary: Mapping[str, Any] | None,
    devices: Sequence[Mapping[str, Any]],
    *,
    version: str | None = None,
    experiments: Sequence[Mapping[str, Any]] = (),
) -> str:
    """One model: drift state, feature-by-time heatmap, prediction shift, canary, devices ranked by drift."""
    q = quote(model, safe="")
    ver = f" version {escape(version)}" if version else ""
    body = [
        f"<h2>{escape(model)}{ver} {_state_badge(drift)}</h2>",
        f"<p class=muted>JSON: <a href='/v1/models/{q}/drift'>drift</a> · "
        f"<a href='/v1/models/{q}/drift/history'>history</a> · <a href='/v1/models/{q}/devices'>devices</a> · "
        f"<a href='/v1/models/{q}/canary'>canary</a> · <a href='/v1/models/{q}/report.html'>Evidently report</a></p>",
        "<h2>Feature drift over time</h2>",
        _heatmap(history),
        "<div class=grid><div class=card><h2>Prediction shift</h2>",
        _scores_table((drift or {}).get("outputs", []), "model outputs"),
        "</div><div class=card><h2>Canary</h2>",
        _canary(canary),
        "</div></div>",
        "<h2>Canary experiments</h2>",
        _experiments(experiments),
        "<h2>Devices ranked by drift</h2>",
        _devices(devices),
        "<h2>Features</h2>",
        _scores_table((drift or {}).get("features", []), "features"),
    ]
    issues = ((drift or {}).get("data_quality") or {}).get("issues", [])
    items = "".join(
        f"<li><b>{escape(str(i.get('signal', '')).replace('_', ' '))}</b>: {escape(str(i.get('column', '')))}"
        + "".join(f" · {escape(str(k))} {_fmt(v)}" for k, v in i.items() if k not in ("signal", "column", "role"))
        + "</li>"
        for i in issues
    )
    body.append(f"<h2>Data quality</h2><ul>{items or '<li>no data-quality issues</li>'}</ul>")
    return _page(model, "".join(body))
