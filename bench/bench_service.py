"""Service throughput: envelopes/s from a real Kafka broker into SQLite, drift at 1,000 features, /metrics at
10,000 series. Prints figures against the goals; not a test. Needs the Kafka jars (scripts/fetch-kafka.sh).

Run: ``python bench/bench_service.py [--envelopes 3000]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftline.profile import StreamKey, WindowProfile  # noqa: E402
from driftline.stats import compare_profiles  # noqa: E402
from driftline.wire import Envelope, encode_envelope  # noqa: E402


def bench_kafka(n: int, tmp: Path) -> None:
    import httpx
    from kafka import KafkaProducer

    from driftline.service.settings import EvaluationSettings, KafkaSettings, ServiceSettings
    from tests.harness.kafka import KafkaBroker
    from tests.service_support import running_service

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(50)]
    payloads = []
    for i in range(n):
        p = WindowProfile(StreamKey.of(f"model-{i % 20}", "v1", "baseline", f"dev-{i % 100}"), i, i + 60)
        p.update(rng.normal(size=(100, 50)), feature_names=names)
        payloads.append((p.key.model.encode(), encode_envelope(Envelope([p]))))
    broker = KafkaBroker(tmp / "kafka").start()
    try:
        broker.create_topic("bench", partitions=1)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        for key, value in payloads:
            producer.send("bench", key=key, value=value)
        producer.flush()
        s = ServiceSettings(database_url=f"sqlite:///{tmp / 'bench.sqlite'}", port=0,
                            kafka=KafkaSettings(enabled=True, bootstrap_servers=[broker.bootstrap], topic="bench",
                                                max_poll_records=500),
                            evaluation=EvaluationSettings(interval_seconds=3600))
        t0 = time.perf_counter()
        first: tuple[float, int] | None = None
        with running_service(s) as url:
            while True:
                done = sum(m["windows"] for m in httpx.get(f"{url}/v1/models").json()["models"])
                now = time.perf_counter()
                if first is None and done > 0:
                    first = (now, done)
                if done >= n or now - t0 > 600:
                    break
                time.sleep(0.05)
        start_s = first[0] - t0 if first else float("nan")
        rate = (done - first[1]) / (now - first[0]) if first and now > first[0] else float("nan")
        print(f"kafka -> merge -> SQLite: {done} envelopes (50 features): {rate:,.0f} envelopes/s once consuming "
              f"(start-up and group join {start_s:.1f} s; one consumer thread; goal >= 2,000/s per core)")
    finally:
        broker.stop()


def bench_drift() -> None:
    rng = np.random.default_rng(1)
    names = [f"f{i}" for i in range(1000)]
    a = WindowProfile(StreamKey.of("m", "v"), 0, 1).update(rng.normal(size=(5000, 1000)), feature_names=names)
    b = WindowProfile(StreamKey.of("m", "v"), 0, 1).update(rng.normal(size=(5000, 1000)), feature_names=names)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        compare_profiles(a, b)
        times.append(time.perf_counter() - t0)
    print(f"drift of one model with 1,000 features: {min(times) * 1e3:.0f} ms (best of 5; goal <= 200 ms)")


def _state(model: str, version: str, features: int, scores: tuple[str, ...], issues: tuple[str, ...] = ()) -> object:
    """A model version's newest result as the evaluator keeps it: a frozen report of ``features`` columns."""
    from driftline.service.results import DriftResult, ModelState
    from driftline.stats import ColumnResult, DriftConfig, DriftReport

    cols = tuple(ColumnResult(name=f"f{i}", kind="numeric", status="ok", method="ks", threshold=0.1,
                              scores=dict.fromkeys(scores, 0.01)) for i in range(features))
    report = DriftReport(cols, (), tuple({"signal": s} for s in issues), 0, 0, DriftConfig())
    return ModelState(model, version, DriftResult(model, version, None, 0.0, 1.0, "uploaded", 1, report), "uploaded")


def bench_metrics(tmp: Path) -> None:
    from driftline.promtext import render_text as generate_latest  # what /metrics serves
    from driftline.service.app import open_parts
    from driftline.service.settings import ServiceSettings

    parts = open_parts(ServiceSettings(database_url=f"sqlite:///{tmp / 'm.sqlite'}"))
    scores = ("ks", "psi", "jensen_shannon", "wasserstein", "hellinger")
    for m in range(7):  # 7 models x 250 features x (5 scores + detected + critical + missing) ~ 14,000 series
        parts.evaluator._states[(f"model-{m}", "v1")] = _state(f"model-{m}", "v1", 250, scores)  # as a pass would
    series = sum(1 for line in generate_latest(parts.registry).decode().splitlines() if not line.startswith("#"))
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        generate_latest(parts.registry)
        times.append(time.perf_counter() - t0)
    print(f"/metrics scrape at {series:,} series: {min(times) * 1e3:.0f} ms (best of 10; goal <= 100 ms)")


def bench_metrics_at_caps(tmp: Path) -> None:
    """The default caps (limits.*) all reached at once: the largest /metrics the service can be made to hold."""
    from driftline.promtext import render_text as generate_latest  # what /metrics serves
    from driftline.service.app import open_parts
    from driftline.service.settings import ServiceSettings
    from driftline.stats import SCORE_METHODS

    settings = ServiceSettings(database_url=f"sqlite:///{tmp / 'caps.sqlite'}")
    lim = settings.limits
    parts = open_parts(settings)
    signals = ("missing_column", "new_column", "type_change", "missing_spike", "nan_spike", "out_of_range",
               "new_categories", "cardinality_change", "constant", "invalid_values")
    versions = [(f"model-{m}", f"v{v}") for m in range(lim.max_models) for v in range(lim.max_versions_per_model)]
    per_state = -(-lim.max_feature_series // len(versions))
    n_features = 0
    for model, version in versions:
        take = min(per_state, lim.max_feature_series - n_features)
        n_features += take
        parts.evaluator._states[(model, version)] = _state(model, version, take, SCORE_METHODS, signals)
    st = parts.stats
    now = time.time()
    for m in range(lim.max_models):
        model = f"model-{m}"
        for v in range(lim.max_versions_per_model):
            for variant in ("baseline", "canary"):
                st.observations[(model, f"v{v}", variant)] = 1000
                st.windows[(model, f"v{v}", variant)] = 10
            st.last_end[(model, f"v{v}")] = now
        st.lag[model] = 1.0
        for label in range(lim.max_cohort_labels):
            for value in range(lim.max_cohort_values):
                st.cohort_rows[(model, f"l{label}", f"c{value}")] = value + 1
                st.cohort_last_end[(model, f"l{label}", f"c{value}")] = now
    series = sum(1 for line in generate_latest(parts.registry).decode().splitlines() if not line.startswith("#"))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        generate_latest(parts.registry)
        times.append(time.perf_counter() - t0)
    print(f"/metrics at the default caps ({lim.max_models} models x {lim.max_versions_per_model} versions, "
          f"{lim.max_feature_series} feature series, {lim.max_cohort_labels} x {lim.max_cohort_values} cohort values): "
          f"{series:,} series, {min(times) * 1e3:.0f} ms (best of 5; goal <= 1000 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envelopes", type=int, default=3000)
    ap.add_argument("--skip-kafka", action="store_true")
    args = ap.parse_args()
    bench_drift()
    with tempfile.TemporaryDirectory() as tmp:
        bench_metrics(Path(tmp))
        bench_metrics_at_caps(Path(tmp))
        if not args.skip_kafka:
            bench_kafka(args.envelopes, Path(tmp))


if __name__ == "__main__":
    main()
