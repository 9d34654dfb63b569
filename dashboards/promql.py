"""Read the PromQL inside dashboard JSON: every query, the metric names it uses, and Grafana's variables.

Pure text functions, no Prometheus: tests use them to check queries against the metric catalogue and
to run them on a real Prometheus with the template variables filled in the way Grafana would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Query", "expand", "label_values_selector", "metric_names", "queries"]

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]*)"')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\b(offset)\s+-?[0-9a-zA-Z_$]+")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$__\w+|\$\w+|\[\[[^\]]*\]\]")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                       "unless", "offset", "atan2", "inf", "nan", "Inf", "NaN", "start", "end"})


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard: where it is and whether Grafana runs it instant or over a range."""

    dashboard: str
    where: str
    expr: str
    instant: bool


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords, label names or variables).

    >>> sorted(metric_names('sum by (model) (rate(a_total{x="y"}[5m])) / on (model) b > bool 0.5'))
    ['a_total', 'b']
    """
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("{}", text)
    while _BRACKETS.search(text):
        text = _BRACKETS.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    for m in _IDENT.finditer(text):
        ident, call = m.group(1), m.group(2)
        if call or ident in _KEYWORDS:
            continue  # a function or aggregation called with "(", or a keyword
        names.add(ident)
    return names


def label_values_selector(query: str) -> str | None:
    """The series selector inside Grafana's ``label_values(selector, label)``; None for other queries."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*", query, flags=re.S)
    return m.group(1).strip() if m else None


def queries(name: str, dashboard: Mapping[str, Any]) -> list[Query]:
    """Every panel target and every query variable of a dashboard's JSON, rows included."""
    out: list[Query] = []
    panels = list(dashboard.get("panels") or [])
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels") or [])
        for t in panel.get("targets") or []:
            if t.get("expr"):
                out.append(Query(name, f"panel {panel.get('title')!r} ({t.get('refId') or 'A'})", t["expr"],
                                 bool(t.get("instant")) and not t.get("range")))
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") == "query":
            q = var["query"]
            text = q.get("query", "") if isinstance(q, dict) else q
            out.append(Query(name, f"variable {var['name']!r}", text, True))
    return out


def expand(expr: str, values: Mapping[str, str], *, step_seconds: float, scrape_seconds: float,
           range_seconds: float) -> str:
    """Fill in template variables as Grafana would before sending a query to Prometheus.

    ``$__rate_interval`` follows Grafana's rule, max(interval + scrape interval, 4 x scrape
    interval); ``$__interval`` is the step; ``$__range`` the dashboard's time range. Unknown
    variables are left alone, so Prometheus refuses the query and the caller sees which.
    """
    builtins = {
        "__rate_interval": f"{int(max(step_seconds + scrape_seconds, 4 * scrape_seconds))}s",
        "__interval": f"{int(step_seconds)}s",
        "__interval_ms": str(int(step_seconds * 1000)),
        "__range": f"{int(range_seconds)}s",
        "__range_s": str(int(range_seconds)),
    }
    table = {**builtins, **values}

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        inner = token[2:-1] if token.startswith("${") else token[2:-2] if token.startswith("[[") else token[1:]
        key = inner.split(":", 1)[0]
        return table.get(key, token)

    return _VARIABLE.sub(sub, expr)
