"""Leaks and latency regressions per device, from the footprint every envelope carries.

Each accepted envelope's producer map holds the sidecar's footprint (``rss_bytes``, ``cpu_seconds``,
``started_at``), and with ``watch_pid`` the host process's (``host_*``, edge_sidecar/hostwatch.py);
each window with inference latency gives its p95. :meth:`DeviceHealth.observe` turns them into
samples of bounded series, :meth:`DeviceHealth.refresh` (the background pass) writes them to the
``device_samples`` table this module owns and, on the leader, fits the trends
(:mod:`driftline.trends`) that :class:`DeviceHealthCollector` exposes.

* **Restart.** Samples live in the store for ``horizon_seconds``; a restarted service reads them back
  on its first pass, so trends and alerts survive it (nothing is lost but the samples queued in the
  last pass interval, which the next envelopes replace).
* **Second replica.** Every replica writes the samples it ingested (one row per device, series and
  sample time: an envelope delivered twice or a producer map stamped on several envelopes is one
  sample); only the leader (service/fleet.py) fits and exposes them.
* **Hostile or broken devices.** Numbers that do not parse are skipped and counted; a sample time far
  from the receive time is replaced by the receive time; a series takes at most one sample per
  ``min_sample_interval_seconds``; at most ``max_devices`` devices are tracked and at most
  ``max_samples`` newest samples per series are kept, thinned evenly to ``fit_points`` for the
  fit (Theil-Sen costs n² pairs); at most ``exposed_devices`` devices get
  series on ``/metrics`` (flagged ones first), the rest are counted.
* **Restarts of a device.** A leak is a trend within one life of a process: only samples of the
  newest ``started_at`` are fitted, so a restart (memory back to its floor) is not a negative leak.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from driftline.trends import (
    LatencyRegression,
    Trend,
    latency_regression,
    leak_decision,
    rate_series,
    theil_sen,
)

from .store import Store

__all__ = ["DEVICE_SAMPLES_DDL", "DeviceHealth", "DeviceHealthCollector", "DeviceHealthSnapshot",
           "FootprintHealth", "LatencyHealth"]

log = logging.getLogger("driftline.service.device_health")

DEVICE_SAMPLES_DDL = [
    """CREATE TABLE IF NOT EXISTS device_samples (
        device TEXT NOT NULL, series TEXT NOT NULL, model TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
        life DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION NOT NULL, value2 DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device, series, model, at))""",
    "CREATE INDEX IF NOT EXISTS device_samples_by_at ON device_samples (at)",
]
INSERT = ("INSERT INTO device_samples (device, series, model, at, life, value, value2) VALUES (?, ?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (device, series, model, at) DO NOTHING")
PROCESSES = ("sidecar", "host")  # footprint series: the sidecar itself, the watched host process
MAX_NAME = 128
FUTURE_SLACK_SECONDS = 300.0  # a sample time this far ahead of the receive time is the device's clock, not data


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True, slots=True)
class FootprintHealth:
    """One process of one device: memory and CPU-use trends over its current life, and the decisions."""

    device: str
    process: str
    memory: Trend
    cpu: Trend
    leak: bool
    cpu_creep: bool
    last_at: float


@dataclass(frozen=True, slots=True)
class LatencyHealth:
    """One model on one device: its recent window p95s against the preceding ones."""

    device: str
    model: str
    result: LatencyRegression
    last_at: float


@dataclass(frozen=True, slots=True)
class DeviceHealthSnapshot:
    """What the last pass found; what the collector reads (immutable, swapped whole)."""

    footprints: tuple[FootprintHealth, ...] = ()
    latencies: tuple[LatencyHealth, ...] = ()
    devices: int = 0
    exposed: frozenset[str] = frozenset()
    at: float = 0.0

    def flagged(self) -> list[str]:
        """Devices with a suspected leak, CPU creep or latency regression (sorted)."""
        out = {f.device for f in self.footprints if f.leak or f.cpu_creep}
        out |= {lat.device for lat in self.latencies if lat.result.regressed}
        return sorted(out)


@dataclass
class _Queue:
    rows: list[tuple[str, str, str, float, float, float, float]] = field(default_factory=list)
    last: dict[tuple[str, str, str], float] = field(default_factory=dict)


class DeviceHealth:
    """Samples in (every replica), trends out (the leader); see the module docstring for the bounds."""

    def __init__(self, store: Store, settings: Any, is_leader: Any = None) -> None:
        self.store = store
        self.s = settings  # service.settings.DeviceHealthSettings
        self.is_leader = is_leader or (lambda: True)
        self.snapshot = DeviceHealthSnapshot()
        self.skipped: Counter[str] = Counter()  # why samples were not taken: malformed, rate, devices
        self._q = _Queue()
        self._lock = threading.Lock()
        self._next_fit = 0.0
        store.create_tables(DEVICE_SAMPLES_DDL)

    # ---- in: samples from accepted envelopes ---------------------------------------------------------
    def observe(self, profiles: Iterable[Any], producer: Mapping[str, Any] | None, now: float | None = None) -> None:
        """Queue the footprint samples of one accepted envelope and the latency p95 of each of its windows."""
        if not self.s.enabled:
            return
        now = time.time() if now is None else now
        producer = producer or {}
        profiles = list(profiles)
        device = str(producer.get("device") or next((p.key.source for p in profiles if p.key.source), ""))
        rows: list[tuple[str, str, str, float, float, float, float]] = []
        if device and len(device) <= MAX_NAME:
            at = _finite(producer.get("sampled_at"))
            if at is None or not now - self.s.horizon_seconds < at <= now + FUTURE_SLACK_SECONDS:
                at = now
            for process, prefix in (("sidecar", ""), ("host", "host_")):
                rss = _finite(producer.get(f"{prefix}rss_bytes"))
                cpu = _finite(producer.get(f"{prefix}cpu_seconds"))
                if producer.get(f"{prefix}rss_bytes") is None and producer.get(f"{prefix}cpu_seconds") is None:
                    continue  # this producer does not report that process (the SDK's spool map, no watch_pid)
                if rss is None or cpu is None or rss < 0 or cpu < 0:
                    self.skipped["malformed"] += 1
                    continue
                life = _finite(producer.get(f"{prefix}started_at")) or 0.0
                rows.append((device, process, "", at, life, rss, cpu))
        for p in profiles:
            rt = p.runtime
            src = p.key.source
            if rt is None or not src or src == "*" or len(src) > MAX_NAME or rt.latency_ms.is_empty():
                continue
            p95 = rt.latency_quantile(0.95)
            if math.isfinite(p95) and math.isfinite(p.end):
                rows.append((src, "latency", p.key.model, float(p.end), 0.0, p95, rt.latency_quantile(0.5)))
        if rows:
            self._enqueue(rows)

    def _enqueue(self, rows: list[tuple[str, str, str, float, float, float, float]]) -> None:
        gap = self.s.min_sample_interval_seconds
        with self._lock:
            q = self._q
            for row in rows:
                key = row[:3]
                last = q.last.get(key)
                if last is not None and abs(row[3] - last) < gap:
                    self.skipped["rate"] += 1
                    continue
                if last is None and len(q.last) >= self.s.max_devices * 4:
                    self.skipped["devices"] += 1
                    continue
                q.last[key] = row[3] if last is None else max(last, row[3])
                q.rows.append(row)
            if len(q.rows) > self.s.max_queued_samples:  # the store is down for long: keep the newest
                self.skipped["queue"] += len(q.rows) - self.s.max_queued_samples
                q.rows = q.rows[-self.s.max_queued_samples:]

    def flush(self) -> int:
        """Write the queued samples (one transaction); on failure they are queued again."""
        with self._lock:
            rows, self._q.rows = self._q.rows, []
        if not rows:
            return 0
        try:
            with self.store.transaction() as conn:
                for row in rows:
                    conn.execute(INSERT, row)
        except Exception:
            with self._lock:
                self._q.rows = (rows + self._q.rows)[-self.s.max_queued_samples:]
            raise
        return len(rows)

    # ---- out: trends on the leader ------------------------------------------------------------------
    def refresh(self, now: float | None = None, *, force: bool = False) -> bool:
        """Flush; on the leader, every ``interval_seconds``, prune old samples and fit every series.

        Returns whether a fit ran.
        """
        if not self.s.enabled:
            return False
        now = time.time() if now is None else now
        cutoff = now - self.s.horizon_seconds
        with self._lock:  # forget rate-limit marks of series that aged out (every replica)
            self._q.last = {k: v for k, v in self._q.last.items() if v >= cutoff}
        self.flush()
        if not self.is_leader():
            return False
        if not force and now < self._next_fit:
            return False
        self._next_fit = now + self.s.interval_seconds
        self.store.execute("DELETE FROM device_samples WHERE at < ?", (cutoff,))
        rows = self.store.query("SELECT device, series, model, at, life, value, value2 FROM device_samples "
                                "WHERE at >= ? ORDER BY device, series, model, at", (cutoff,))
        self.snapshot = self.fit(rows, now)
        return True

    def fit(self, rows: Iterable[tuple[Any, ...]], now: float) -> DeviceHealthSnapshot:
        """Trends of every series in ``rows`` (device, series, model, at, life, value, value2), bounded."""
        s = self.s
        groups: dict[tuple[str, str, str], list[tuple[float, float, float, float]]] = {}
        for device, series, model, at, life, value, value2 in rows:
            groups.setdefault((str(device), str(series), str(model)), []).append(
                (float(at), float(life), float(value), float(value2)))
        newest: dict[str, float] = {}
        for (device, _, _), pts in groups.items():
            newest[device] = max(newest.get(device, 0.0), pts[-1][0])
        tracked = set(sorted(newest, key=lambda d: -newest[d])[: s.max_devices])
        foot: list[FootprintHealth] = []
        lats: list[LatencyHealth] = []
        for (device, series, model), pts in groups.items():
            if device not in tracked:
                continue
            pts.sort()
            if series in PROCESSES:
                life = pts[-1][1]
                cur = _thin([p for p in pts if p[1] == life][-s.max_samples:], s.fit_points)
                t = [p[0] for p in cur]
                mem = theil_sen(t, [p[2] for p in cur], s.confidence)
                rt, rate = rate_series(t, [p[3] for p in cur])
                cpu = theil_sen(rt, rate, s.confidence)
                foot.append(FootprintHealth(device, series, mem, cpu,
                                            leak_decision(mem, s.leak_min_bytes_per_hour, s.leak_min_samples),
                                            leak_decision(cpu, s.cpu_min_cores_per_hour, s.leak_min_samples),
                                            pts[-1][0]))
            elif series == "latency":
                cur = pts[-s.max_samples:]
                res = latency_regression([p[2] for p in cur], recent=s.latency_recent_windows,
                                         min_baseline=s.latency_min_baseline, max_baseline=s.latency_max_baseline,
                                         alpha=s.latency_alpha, min_increase=s.latency_min_increase)
                if res is not None:
                    lats.append(LatencyHealth(device, model, res, cur[-1][0]))
        score: dict[str, tuple[int, float]] = {}
        for f in foot:
            flag = int(f.leak or f.cpu_creep)
            lower = f.memory.lower if math.isfinite(f.memory.lower) else -math.inf
            score[f.device] = max(score.get(f.device, (0, -math.inf)), (flag, lower))
        for lat in lats:
            score[lat.device] = max(score.get(lat.device, (0, -math.inf)), (int(lat.result.regressed), -math.inf))
        ranked = sorted(score, key=lambda d: (-score[d][0], -score[d][1], d))
        return DeviceHealthSnapshot(tuple(foot), tuple(lats), len(tracked),
                                    frozenset(ranked[: s.exposed_devices]), now)


def _thin(pts: list[Any], k: int) -> list[Any]:
    """At most ``k`` points evenly spread over the series, first and last kept: Theil-Sen costs n^2."""
    if len(pts) <= k:
        return pts
    step = (len(pts) - 1) / (k - 1)
    return [pts[round(i * step)] for i in range(k)]


def _num(v: float) -> float:
    return v if math.isfinite(v) else math.nan


class DeviceHealthCollector:
    """The ``driftline_device_*`` series of the last fit, read at scrape time; only on the leader."""

    def __init__(self, health: DeviceHealth, exposes: Any = None) -> None:
        self.health = health
        self.exposes = exposes or (lambda: True)

    def collect(self) -> Iterator[Metric]:
        h = self.health
        if not h.s.enabled:
            return
        skipped = CounterMetricFamily("driftline_device_health_skipped_samples", "Footprint and latency samples "
                                      "not taken, by reason (malformed, rate, devices, queue)", labels=["reason"])
        for reason in ("malformed", "rate", "devices", "queue"):
            skipped.add_metric([reason], h.skipped.get(reason, 0))
        yield skipped
        if not self.exposes():
            return
        snap = h.snapshot
        shown = snap.exposed
        devs = GaugeMetricFamily("driftline_device_health_devices", "Devices with recent samples: exposed "
                                 "per device (flagged first) or only counted", labels=["state"])
        devs.add_metric(["exposed"], len(shown))
        devs.add_metric(["omitted"], max(snap.devices - len(shown), 0))
        yield devs
        lab = ["device", "process"]
        slope = GaugeMetricFamily("driftline_device_memory_slope_bytes_per_hour", "Theil-Sen slope of resident "
                                  "memory over the process's current life", labels=lab)
        lower = GaugeMetricFamily("driftline_device_memory_slope_lower_bytes_per_hour", "Lower confidence bound "
                                  "of the memory slope (a leak when above the configured rate)", labels=lab)
        upper = GaugeMetricFamily("driftline_device_memory_slope_upper_bytes_per_hour", "Upper confidence bound "
                                  "of the memory slope", labels=lab)
        cpu = GaugeMetricFamily("driftline_device_cpu_slope_cores_per_hour", "Theil-Sen slope of CPU use (cores) "
                                "over the process's current life", labels=lab)
        samples = GaugeMetricFamily("driftline_device_trend_samples", "Samples the footprint trends were fit on",
                                    labels=lab)
        leak = GaugeMetricFamily("driftline_device_leak_suspected", "1 when the slope's lower bound exceeds the "
                                 "minimum rate (resource: memory or cpu)", labels=[*lab, "resource"])
        for f in snap.footprints:
            if f.device not in shown:
                continue
            key = [f.device, f.process]
            slope.add_metric(key, _num(f.memory.slope))
            lower.add_metric(key, _num(f.memory.lower))
            upper.add_metric(key, _num(f.memory.upper))
            cpu.add_metric(key, _num(f.cpu.slope))
            samples.add_metric(key, f.memory.n)
            leak.add_metric([*key, "memory"], float(f.leak))
            leak.add_metric([*key, "cpu"], float(f.cpu_creep))
        yield from (slope, lower, upper, cpu, samples, leak)
        ratio = GaugeMetricFamily("driftline_device_latency_p95_ratio", "Median of the recent windows' latency p95 "
                                  "over the preceding windows' median", labels=["device", "model"])
        reg = GaugeMetricFamily("driftline_device_latency_regression", "1 when the recent windows' latency p95s "
                                "exceed the preceding ones (rank test and minimum increase)",
                                labels=["device", "model"])
        for lat in snap.latencies:
            if lat.device not in shown:
                continue
            ratio.add_metric([lat.device, lat.model], _num(lat.result.ratio))
            reg.add_metric([lat.device, lat.model], float(lat.result.regressed))
        yield from (ratio, reg)
