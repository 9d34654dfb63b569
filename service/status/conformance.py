"""The status page's golden-set conformance section: does each device compute what the cloud computes?"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["render_conformance"]


def _num(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return "inf" if math.isinf(v) else f"{v:.3g}"


def render_conformance(items: Sequence[Mapping[str, Any]]) -> str:
    """``conformance_summary`` items (one per model version) as a table, failing devices and cohorts below."""
    if not items:
        return ("<h2>Golden-set conformance</h2><p class=muted>No device has reported a golden-set run "
                "(sidecar setting <code>golden.enabled</code>).</p>")
    rows, details = [], []
    for it in items:
        bad = int(it.get("fail", 0)) + int(it.get("error", 0))
        badge = ("<span class='badge drift'>MISMATCH</span>" if it.get("fail") else
                 "<span class='badge warn'>errors</span>" if bad else "<span class='badge ok'>conforms</span>")
        rows.append(f"<tr><td>{escape(str(it['version']))}</td><td>{badge}</td><td class=num>{it.get('devices', 0)}</td>"
                    f"<td class=num>{it.get('pass', 0)}</td><td class=num>{it.get('fail', 0)}</td>"
                    f"<td class=num>{it.get('error', 0)}</td><td class=num>{_num(it.get('max_abs_diff'))}</td>"
                    f"<td class=num>{_num(it.get('min_top1_agreement'))}</td></tr>")
        cohorts = ", ".join(f"{escape(c['cohort_label'])}={escape(c['cohort_value'])} ({c['devices']})"
                            for c in it.get("failing_cohorts", []))
        devs = "".join(
            f"<li><b>{escape(str(d['device']))}</b> {escape(d['result'])}"
            + (f": {escape(str(d['error']))}" if d.get("error") else
               f": max abs diff {_num(d.get('max_abs_diff'))}, top-1 {_num(d.get('top1_agreement'))}, "
               f"score KS {_num(d.get('score_ks'))}")
            + (f" <span class=muted>({escape(', '.join(f'{k}={v}' for k, v in d.get('cohort', {}).items()))})</span>"
               if d.get("cohort") else "") + "</li>"
            for d in it.get("failing_devices", []))
        if devs:
            details.append(f"<p><b>Version {escape(str(it['version']))}</b>"
                           + (f" · failing cohorts: {cohorts}" if cohorts else "") + f"</p><ul>{devs}</ul>")
    return ("<h2>Golden-set conformance</h2><div class=scroll><table><thead><tr><th>Version</th><th>State</th>"
            "<th>Devices</th><th>Pass</th><th>Fail</th><th>Could not run</th><th>Max abs diff</th>"
            f"<th>Min top-1 agreement</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            + "".join(details))
