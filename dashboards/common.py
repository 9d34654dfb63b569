"""Small builders shared by the dashboards: panels with units, thresholds and links, laid out in rows."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

__all__ = ["DS", "Layout", "base_dashboard", "link", "prom", "render", "stat_panel", "table_panel", "ts_panel"]

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
MODEL_UID = "driftline-model"


def prom(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS)
    return q.instant() if instant else q.range()


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps])


def link(title: str, url: str) -> dashboard.DashboardLink:
    return dashboard.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(url).keep_time(True).include_vars(True)


def model_link() -> dashboard.DashboardLink:
    return link("Model detail", f"/d/{MODEL_UID}/driftline-model-detail?var-model=${{__field.labels.model}}")


def report_link() -> dashboard.DashboardLink:
    return link("Evidently report", "${service_url}/v1/models/${model}/report.html")


class Layout:
    """Places panels left to right in a 24-column grid, wrapping to new rows."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0

    def at(self, w: int, h: int) -> dm.GridPos:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = dm.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos


def ts_panel(title: str, query: prometheus.Dataquery, *, unit: str = "short", pos: dm.GridPos,
             desc: str = "", th: dashboard.ThresholdsConfig | None = None,
             links: list[dashboard.DashboardLink] | None = None) -> timeseries.Panel:
    p = timeseries.Panel().title(title).description(desc).unit(unit).with_target(query).grid_pos(pos).datasource(DS)
    if th is not None:
        p = p.thresholds(th).thresholds_style(dashboard_thresholds_style())
    if links:
        p = p.links(links)
    return p


def dashboard_thresholds_style() -> Any:
    from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
    from grafana_foundation_sdk.models.common import GraphTresholdsStyleMode

    return GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.LINE)


def stat_panel(title: str, query: prometheus.Dataquery, *, unit: str = "short", pos: dm.GridPos, desc: str = "",
               th: dashboard.ThresholdsConfig | None = None) -> stat.Panel:
    p = stat.Panel().title(title).description(desc).unit(unit).with_target(query).grid_pos(pos).datasource(DS)
    return p.thresholds(th) if th is not None else p


def table_panel(title: str, query: prometheus.Dataquery, *, pos: dm.GridPos, desc: str = "",
                links: list[dashboard.DashboardLink] | None = None) -> table.Panel:
    p = table.Panel().title(title).description(desc).unit("none").with_target(query.format(prometheus_format_table()))
    p = p.grid_pos(pos).datasource(DS)
    return p.links(links) if links else p


def prometheus_format_table() -> Any:
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

    return PromQueryFormat.TABLE


def base_dashboard(uid: str, title: str, description: str, *, model_vars: bool = False) -> dashboard.Dashboard:
    d = (dashboard.Dashboard(title).uid(uid).description(description).tags(["driftline"]).refresh("30s")
         .time("now-6h", "now").timezone("browser")
         .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
         .with_variable(dashboard.TextBoxVariable("service_url").label("Driftline service URL")
                        .default_value("http://driftline:8000")))
    if model_vars:
        d = d.with_variable(dashboard.QueryVariable("model").label("Model").datasource(DS)
                            .query("label_values(driftline_observations_total, model)").refresh(
                                dm.VariableRefresh.ON_TIME_RANGE_CHANGED))
        d = d.with_variable(dashboard.QueryVariable("version").label("Version").datasource(DS)
                            .query('label_values(driftline_observations_total{model="$model"}, version)').refresh(
                                dm.VariableRefresh.ON_TIME_RANGE_CHANGED))
    return d.link(link("Driftline status page", "${service_url}/"))


def render(d: dashboard.Dashboard) -> str:
    """Deterministic JSON of a dashboard (sorted keys, trailing newline)."""
    return json.dumps(d.build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"
