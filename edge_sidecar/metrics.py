"""Prometheus metrics of the sidecar: one custom collector that reads live state on every scrape.

Names and labels are those of ``docs/metrics.md`` (``driftline_sidecar_*``). Nothing is cached
between scrapes; the registry is passed in, never the global one, so tests and several sidecars
in one process do not share series. Labels are bounded: streams by ``max_streams``, reasons and
results by fixed lists. The device id is never a label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..promtext import render_text
from .errors import REJECT_REASONS

if TYPE_CHECKING:
    from .hostwatch import HostWatch
    from .monitor import Monitor
    from .proxy import InferenceProxy
    from .shipper import Shipper
    from .spool import Spool

__all__ = ["CLOSE_REASONS", "SidecarCollector", "render", "sidecar_registry"]

CLOSE_REASONS = ("time", "size", "shutdown")


class SidecarCollector(Collector):
    """Builds every ``driftline_sidecar_*`` family from the monitor, spool, shipper and proxy."""

    def __init__(self, monitor: Monitor, spool: Spool | None = None, shipper: Shipper | None = None,
                 proxy: InferenceProxy | None = None) -> None:
        self.monitor = monitor
        self.spool = spool
        self.shipper = shipper
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        snap: dict[str, Any] = self.monitor.snapshot()
        obs = CounterMetricFamily("driftline_sidecar_observations", "Rows observed (exact, before sampling).",
                                  labels=["model", "version", "variant"])
        for (model, version, variant), n in sorted(snap["observed"].items()):
            obs.add_metric([model, version, variant], n)
        yield obs
        rej = CounterMetricFamily("driftline_sidecar_rejected", "Inputs that could not be used.", labels=["reason"])
        for reason in REJECT_REASONS:
            rej.add_metric([reason], snap["rejected"].get(reason, 0))
        yield rej
        closed = CounterMetricFamily("driftline_sidecar_windows_closed", "Windows closed.", labels=["reason"])
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], snap["windows_closed"].get(reason, 0))
        yield closed
        yield CounterMetricFamily("driftline_sidecar_late_rows", "Rows later than the lateness allowance, "
                                  "counted in the current window.", value=snap["late_rows"])
        yield GaugeMetricFamily("driftline_sidecar_open_windows", "Windows being filled.", value=snap["open_windows"])
        if self.spool is not None:
            st = self.spool.stats()
            yield GaugeMetricFamily("driftline_sidecar_spool_bytes", "Bytes in the spool.", value=st.bytes)
            yield GaugeMetricFamily("driftline_sidecar_spool_limit_bytes", "The spool's byte bound.", value=st.limit)
            yield GaugeMetricFamily("driftline_sidecar_spool_pending_windows", "Windows waiting for delivery.",
                                    value=st.pending)
            yield GaugeMetricFamily("driftline_sidecar_spool_oldest_pending_age_seconds",
                                    "Age of the oldest pending window.", value=st.oldest_age_s)
            yield CounterMetricFamily("driftline_sidecar_spool_merged", "Windows merged to make room.",
                                      value=st.merged)
            yield CounterMetricFamily("driftline_sidecar_spool_dropped", "Windows dropped when merging could "
                                      "not make room.", value=st.dropped + snap["windows_dropped"])
            yield CounterMetricFamily("driftline_sidecar_spool_quarantined", "Windows moved to rejected/ (refused "
                                      "by the receiver with a 4xx, or unreadable); kept for inspection.",
                                      value=st.rejected)
        if self.shipper is not None:
            dl = CounterMetricFamily("driftline_sidecar_deliveries", "Delivery attempts.",
                                     labels=["transport", "result"])
            for result in ("ok", "error"):
                dl.add_metric([self.shipper.transport.name, result], self.shipper.deliveries[result])
            yield dl
        if self.proxy is not None:
            pr = CounterMetricFamily("driftline_sidecar_proxy_requests", "Requests through the inference proxy.",
                                     labels=["result"])
            for result in ("ok", "upstream_error"):
                pr.add_metric([result], self.proxy.requests[result])
            yield pr
            shadow = getattr(self.proxy, "shadow", None)
            if shadow is not None:
                mirrors = CounterMetricFamily("driftline_sidecar_shadow_mirrors", "Calls mirrored to the shadow "
                                              "model server, by its answer (error: non-200, timeout, refused).",
                                              labels=["result"])
                for result in ("ok", "error"):
                    mirrors.add_metric([result], shadow.results[result])
                yield mirrors
                yield CounterMetricFamily("driftline_sidecar_shadow_mirrors_dropped", "Mirrors dropped because "
                                          "the shadow queue was full (the caller is never made to wait).",
                                          value=shadow.dropped)
                yield GaugeMetricFamily("driftline_sidecar_shadow_queue", "Mirrors waiting for the shadow worker.",
                                        value=shadow.queued)
        lab = snap.get("labels")
        if lab is not None:  # delayed labels (labels.enabled): see driftline.edge_sidecar.labels
            lt = CounterMetricFamily("driftline_sidecar_labels", "Delayed labels and predictions by result.",
                                     labels=["result"])
            for result in ("joined", "unknown", "rejected"):
                lt.add_metric([result], lab[result])
            yield lt
            pt = CounterMetricFamily("driftline_sidecar_label_predictions", "Predictions remembered for a label, "
                                     "and how those not joined were forgotten.", labels=["result"])
            for result in ("predictions", "expired", "evicted", "replaced", "no_score"):
                pt.add_metric(["remembered" if result == "predictions" else result], lab[result])
            yield pt
            yield GaugeMetricFamily("driftline_sidecar_label_pending_predictions", "Predictions waiting for "
                                    "their label (at most labels.max_pending).", value=lab["pending"])


def sidecar_registry(collector: SidecarCollector) -> CollectorRegistry:
    """A fresh registry: the sidecar's collector plus client_python's process, platform and GC collectors.

    ``process_resident_memory_bytes`` and ``process_cpu_seconds_total`` replace the sidecar's own
    footprint series; the producer report still carries the same numbers to the service.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry`` (:func:`driftline.promtext.render_text`)."""
    return render_text(registry)


class HostWatchCollector(Collector):
    """The watched host process (``watch_pid``): its footprint now, and how often it could not be read."""

    def __init__(self, watch: HostWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterator[Metric]:
        fp = self.watch.read()
        if fp is not None:
            yield GaugeMetricFamily("driftline_sidecar_host_resident_memory_bytes",
                                    "Resident memory of the watched host process.", value=fp.rss_bytes)
            yield CounterMetricFamily("driftline_sidecar_host_cpu_seconds", "CPU seconds of the watched host "
                                      "process (its current life).", value=fp.cpu_seconds)
        yield CounterMetricFamily("driftline_sidecar_host_read_failures", "Readings of the watched host process "
                                  "that failed (pid gone, pid file missing or garbage, no /proc).",
                                  value=self.watch.failures)
