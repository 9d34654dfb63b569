"""Small builders shared by the dashboards: queries, panels with units and thresholds, links, variables.

Every panel gets a unit, a description, a stable id and (where it helps) data links: to the model
detail dashboard, to the service's Evidently report (``/v1/models/{model}/report.html``) and to its
status page (``/`` and ``/models/{model}``). ``${service_url}`` is a dashboard variable whose default
the Helm chart replaces with the service's public URL.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from .thresholds import ALERTS

__all__ = ["DEFAULT_SERVICE_URL", "DS", "MODEL_UID", "Board", "alert_steps", "link", "mapping", "model_links",
           "prom", "render", "stat_panel", "steps", "table_panel", "timeline_panel", "ts_panel"]

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
MODEL_UID = "driftline-model"
DEFAULT_SERVICE_URL = "http://localhost:8000"  # `kubectl port-forward`; the chart substitutes its public URL
Panel = Any  # a panel builder of any visualisation


def prom(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A",
         table_format: bool = False) -> prometheus.Dataquery:
    """A Prometheus target on the dashboard's data source variable."""
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS).ref_id(ref)
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q.instant() if instant else q.range()


def steps(*pairs: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds: ``(None, base colour), (value, colour), ...``."""
    return dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in pairs])


def alert_steps(alert: str, color: str = "red") -> dashboard.ThresholdsConfig:
    """Green below the value at which ``alert`` fires, ``color`` from there on."""
    return steps((None, "green"), (ALERTS[alert].step, color))


def mapping(values: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    """Value -> (text, colour) mappings, e.g. verdict codes to words."""
    return [dm.ValueMap(options={k: dm.ValueMappingResult(text=t, color=c, index=i)
                                 for i, (k, (t, c)) in enumerate(values.items())})]


def link(title: str, url: str, *, new_tab: bool = False) -> dashboard.DashboardLink:
    """A link that carries the time range and the dashboard's variables."""
    return (dashboard.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(url).keep_time(True)
            .include_vars(True).target_blank(new_tab))


def model_links(model: str = "${__field.labels.model}", version: str | None = "${__field.labels.version}",
                ) -> list[dashboard.DashboardLink]:
    """Data links from a series (or table row) to the model detail dashboard, the report and the status page."""
    detail = f"/d/{MODEL_UID}/driftline-model-detail?var-model={model}"
    query = ""
    if version is not None:
        detail += f"&var-version={version}"
        query = f"?version={version}"
    return [
        link(f"Model detail: {model}", detail + "&${datasource:queryparam}&${service_url:queryparam}"
             "&${__url_time_range}"),
        link("Evidently drift report", f"${{service_url}}/v1/models/{model}/report.html{query}", new_tab=True),
        link("Driftline status page", f"${{service_url}}/models/{model}{query}", new_tab=True),
    ]


def _common(p: Panel, title: str, desc: str, unit: str, th: dashboard.ThresholdsConfig | None,
            links: list[dashboard.DashboardLink] | None) -> Panel:
    p = p.title(title).description(desc).unit(unit).datasource(DS)
    if th is not None:
        p = p.thresholds(th)
    return p.data_links(links) if links else p


def ts_panel(title: str, *targets: prometheus.Dataquery, unit: str, desc: str,
             th: dashboard.ThresholdsConfig | None = None, links: list[dashboard.DashboardLink] | None = None,
             ) -> timeseries.Panel:
    """A time series; thresholds, when given, are drawn as dashed lines."""
    p = timeseries.Panel()
    for t in targets:
        p = p.with_target(t)
    p = _common(p, title, desc, unit, th, links)
    p = p.legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST).placement(
        cm.LegendPlacement.BOTTOM).show_legend(True))
    if th is not None:
        p = p.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.DASHED))
    return p


def stat_panel(title: str, target: prometheus.Dataquery, *, unit: str, desc: str,
               th: dashboard.ThresholdsConfig | None = None, names: bool = False,
               maps: list[dm.ValueMapping] | None = None, no_value: str | None = None) -> stat.Panel:
    """A single number (or, with ``names``, the legend text of each series, e.g. a version or a source)."""
    p = _common(stat.Panel().with_target(target), title, desc, unit, th, None)
    p = p.color_mode(cm.BigValueColorMode.BACKGROUND if th is not None or maps else cm.BigValueColorMode.NONE)
    p = p.graph_mode(cm.BigValueGraphMode.NONE).reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]))
    if names:
        p = p.text_mode(cm.BigValueTextMode.NAME)
    if maps:
        p = p.mappings(maps)
    return p.no_value(no_value) if no_value is not None else p


def timeline_panel(title: str, target: prometheus.Dataquery, *, desc: str, maps: list[dm.ValueMapping],
                   ) -> statetimeline.Panel:
    """States over time (drift flags, canary verdicts), coloured by value mappings."""
    p = _common(statetimeline.Panel().with_target(target), title, desc, "none", None, None)
    return p.mappings(maps).show_value(cm.VisibilityMode.NEVER).merge_values(True)


def table_panel(title: str, *targets: prometheus.Dataquery, desc: str, unit: str = "none",
                th: dashboard.ThresholdsConfig | None = None,
                links: list[dashboard.DashboardLink] | None = None) -> table.Panel:
    """Instant queries as a table: one row per series, labels as columns, the Time column hidden."""
    p = table.Panel()
    for t in targets:
        p = p.with_target(t)
    p = _common(p, title, desc, unit, th, links)
    p = p.with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
    return p.with_transformation(dm.DataTransformerConfig(id_val="organize", options={
        "excludeByName": {"Time": True}, "renameByName": {"Value": "value", "Value #A": "value",
                                                          "Value #B": "p-value"}}))


class Board:
    """A dashboard being built: rows of panels with stable ids, sizes in grid units (24 wide)."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.d = (dashboard.Dashboard(title).uid(uid).description(description).tags(["driftline"])
                  .refresh("1m").time("now-6h", "now").timezone("browser").editable()
                  .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
                  .with_variable(dashboard.TextBoxVariable("service_url").label("Driftline service URL")
                                 .default_value(DEFAULT_SERVICE_URL)))
        self._id = 0

    def variable(self, name: str, label: str, query: str, *, include_all: bool = False) -> Board:
        """A query variable filled from ``label_values(...)``."""
        v = (dashboard.QueryVariable(name).label(label).datasource(DS).query(query)
             .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        if include_all:
            v = v.include_all(True).all_value(".*").multi(True)
        self.d = self.d.with_variable(v)
        return self

    def links(self, *links: dashboard.DashboardLink) -> Board:
        for lk in links:
            self.d = self.d.link(lk)
        return self

    def row(self, title: str) -> Board:
        self._id += 1
        self.d = self.d.with_row(dashboard.Row(title).id(self._id))
        return self

    def add(self, panel: Panel, w: int, h: int) -> Board:
        self._id += 1
        self.d = self.d.with_panel(panel.id(self._id).span(w).height(h))
        return self

    def build(self) -> dashboard.Dashboard:
        return self.d


def render(d: dashboard.Dashboard | Board) -> str:
    """Deterministic JSON of a dashboard (sorted keys, two-space indent, trailing newline)."""
    if isinstance(d, Board):
        d = d.build()
    return json.dumps(d.build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"
