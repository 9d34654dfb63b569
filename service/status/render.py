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
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#18202c;color:#fff;padding:12px 24px;display:flex;flex-wrap:wrap;gap:16px;align-items:baseline}
header a{color:#9cc3ff;text-decoration:none}
main{padding:16px 24px;max-width:1280px}
h1{font-size:20px;margin:0}h2{font-size:16px;margin:24px 0 8px;overflow-wrap:anywhere}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001}
th,td{padding:6px 10px;border-bottom:1px solid #e5e8ee;text-align:left;overflow-wrap:anywhere}
th{background:#eef1f5;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.ok{background:#dff5e3;color:#17652a}.drift{background:#fde2e1;color:#9b1c1c}
.warn{background:#fff1cc;color:#7a5200}.none{background:#e8ebf0;color:#4a5566}
.heat td.cell{width:22px;min-width:22px;height:20px;padding:0;text-align:center;font-size:10px;color:#0008}
.heat th{padding:4px 2px;font-size:11px;white-space:nowrap}
.heat th.feat{position:sticky;left:0;background:#fff;padding:2px 8px;max-width:220px;overflow-wrap:anywhere;white-space:normal}
.muted{color:#6b7585}.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(640px,100%),1fr));gap:16px}
.card{background:#fff;padding:12px 16px;box-shadow:0 1px 2px #0001;min-width:0}
.notice{border-left:4px solid #c98a00;margin:8px 0}
ul.versions{display:flex;flex-wrap:wrap;gap:4px 18px;list-style:none;padding:0;margin:4px 0 8px}
code{overflow-wrap:anywhere}
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
        "<h2>Models</h2><div class=scroll><table><thead><tr><th>Model</th><th>Versions</th><th>Drift state</th>"
        "<th>Drifted features</th><th>Rows</th><th>Newest window</th><th>Canary</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
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
        "<div class=scroll><table class=heat aria-label='Drift heatmap: features by time'>"
        f"<thead><tr><th>feature \\ time (UTC)</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
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
        "<div class=scroll><table><thead><tr><th>Name</th><th>Type</th><th>State</th><th>KS</th><th>PSI</th><th>JS</th>"
        f"<th>Wasserstein</th><th>χ² p</th><th>TVD</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
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
        "<div class=scroll><table><thead><tr><th>Metric</th><th>Baseline</th><th>Canary</th><th>Effect</th>"
        f"<th>CI</th><th>p</th><th>Status</th></tr></thead><tbody>{''.join(comps)}</tbody></table></div>"
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
        f"<td>{_device_says(d.get('device_verdict'))}</td>"
        f"<td class=num>{d.get('rows', 0):,}</td><td>{_when(d.get('last_window_end'))}</td></tr>"
        for i, d in enumerate(devices, start=1)
    )
    return (
        "<div class=scroll><table><thead><tr><th>#</th><th>Device</th><th>Drift share</th><th>Drifted features</th>"
        f"<th>Device says</th><th>Rows</th><th>Last window</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _device_says(v: Mapping[str, Any] | None) -> str:
    """The device's own verdict on its newest window (judged on the device), beside the service's columns."""
    if not v:
        return "<span class=muted>–</span>"
    word = "drift" if v.get("dataset_drift") else str(v.get("status") or "ok")
    return (f"<span title='judged on the device at {escape(_when(v.get('evaluated_at')))}'>{escape(word)} "
            f"({_fmt(v.get('drift_share'))})</span>")


def _versions_nav(model: str, current: str | None, versions: Sequence[Mapping[str, Any]]) -> str:
    if not versions:
        return ""
    q = quote(model, safe="")
    items = []
    for v in versions:
        name = str(v["version"])
        ref = "reference" if v.get("has_reference") else "no reference"
        label = (f"{escape(name)} <span class=muted>({ref}; {int(v.get('rows') or 0):,} rows, "
                 f"newest window {_when(v.get('last_window_end'))})</span>")
        if name == current:
            items.append(f"<li aria-current=page><b>{label}</b></li>")
        else:
            items.append(f"<li><a href='/models/{q}?version={quote(name, safe='')}'>{label}</a></li>")
    return f"<nav aria-label='Versions'><b>Versions</b><ul class=versions>{''.join(items)}</ul></nav>"


def render_model(
    model: str,
    drift: Mapping[str, Any] | None,
    history: Sequence[Mapping[str, Any]],
    canary: Mapping[str, Any] | None,
    devices: Sequence[Mapping[str, Any]],
    *,
    version: str | None = None,
    versions: Sequence[Mapping[str, Any]] = (),
    problem: tuple[str, str] | None = None,
    experiments: Sequence[Mapping[str, Any]] = (),
    extra: str = "",
    multivariate: Mapping[str, Any] | None = None,
    conformance: Sequence[Mapping[str, Any]] | None = None,
    shadow: Mapping[str, Any] | None = None,
) -> str:
    """One model: drift state, feature-by-time heatmap, prediction shift, canary, devices ranked by drift.

    ``versions`` (the API's ``/versions`` items) become links, so a version that sends data before its
    reference exists never hides the others; ``problem`` (message, what to do) explains an empty page.
    """
    q = quote(model, safe="")
    vq = f"?version={quote(version, safe='')}" if version else ""
    ver = f" version {escape(version)}" if version else ""
    body = [
        f"<h2>{escape(model)}{ver} {_state_badge(drift)}</h2>",
        _versions_nav(model, version, versions),
    ]
    if problem is not None:
        body.append(f"<div class='card notice' role=alert><b>{escape(problem[0])}.</b> "
                    f"<span>{escape(problem[1])}</span></div>")
    body += [
        f"<p class=muted>JSON: <a href='/v1/models/{q}/drift{vq}'>drift</a> · "
        f"<a href='/v1/models/{q}/drift/history{vq}'>history</a> · "
        f"<a href='/v1/models/{q}/devices{vq}'>devices</a> · <a href='/v1/models/{q}/versions'>versions</a> · "
        f"<a href='/v1/models/{q}/canary'>canary</a> · "
        f"<a href='/v1/models/{q}/report.html{vq}'>Evidently report</a></p>",
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
    body.append(extra)  # cards of other rooms (the label-free performance estimate), already escaped HTML
    if multivariate is not None:
        body.append(_multivariate(multivariate))
    if conformance is not None:
        from .conformance import render_conformance

        body.append(render_conformance(conformance))
    body.append(render_shadow(model, shadow))
    return _page(model, "".join(body))


def _multivariate(mv: Mapping[str, Any]) -> str:
    """One row: the newest reconstruction-error verdict (``multivariate.MultivariateState.to_dict()``)."""
    cur = mv.get("current") or {}
    return ("<h2>Multivariate drift (reconstruction)</h2><table><tr><th>status</th><th>mean error</th>"
            "<th>band</th><th>rows</th><th>model</th></tr>"
            f"<tr><td>{escape(str(cur.get('status', '')))}</td><td>{_fmt(cur.get('error_mean'))}</td>"
            f"<td>{_fmt(cur.get('lower'))} – {_fmt(cur.get('upper'))}</td><td>{_fmt(cur.get('rows'))}</td>"
            f"<td>{escape(str(mv.get('model_digest', '')))}</td></tr></table>")


_SHADOW_BADGE = {"ready": "ok", "worse": "drift", "undecided": "warn"}


def render_shadow(model: str, shadow: Mapping[str, Any] | None) -> str:
    """The model page's shadow section: verdict, agreement, paired score difference, per-side health."""
    if not shadow:
        return ("<h2>Shadow model</h2><p class=muted>No shadow pairs. Mirror traffic to a shadow model with "
                "<code>proxy.shadow</code> in the sidecar.</p>")
    verdict = str(shadow.get("verdict", "undecided"))
    s = shadow.get("summary") or {}
    err = shadow.get("error_ratio") or {}
    lat = shadow.get("latency_p99_seconds") or {}
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in shadow.get("reasons", []))
    rows = "".join(
        f"<tr><td>{escape(str(c.get('metric')))}</td><td class=num>{_fmt(c.get('effect'))}</td>"
        f"<td class=num>[{_fmt((c.get('ci') or [None, None])[0])}, {_fmt((c.get('ci') or [None, None])[1])}]</td>"
        f"<td class=num>{_fmt(c.get('tolerance'))}</td><td class=num>{int(c.get('n') or 0):,}</td>"
        f"<td>{escape(str(c.get('status')))}</td></tr>"
        for c in shadow.get("comparisons", []))
    versions = ", ".join(escape(str(v)) for v in shadow.get("shadow_versions", [])) or "?"
    return (
        "<h2>Shadow model</h2><div class=card>"
        f"<p>Verdict <span class='badge {_SHADOW_BADGE.get(verdict, 'warn')}'>{escape(verdict)}</span> · shadow "
        f"version <b>{versions}</b> · {int(s.get('requests', 0)):,} paired requests, {int(s.get('rows', 0)):,} rows"
        f" · {int(s.get('dropped', 0)):,} mirrors dropped · JSON: "
        f"<a href='/v1/models/{quote(model, safe='')}/shadow'>shadow</a></p>"
        f"<p>Label agreement <b>{_fmt(shadow.get('agreement'))}</b> · mean score difference (shadow − live) "
        f"<b>{_fmt(shadow.get('score_diff_mean'))}</b> · error ratio live {_fmt(err.get('live'))} / shadow "
        f"{_fmt(err.get('shadow'))} · p99 latency live {_fmt(lat.get('live'))} s / shadow {_fmt(lat.get('shadow'))} s"
        f"</p><ul>{reasons}</ul>"
        "<table><thead><tr><th>comparison</th><th>effect</th><th>always-valid CI</th><th>tolerance</th><th>n</th>"
        f"<th>status</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
