"""References without an upload (first rows, same period a week earlier) and retraining payload templates."""

from __future__ import annotations

import json
import time

import numpy as np

from driftline.service.evaluation import Evaluator
from driftline.service.retrain import Dispatcher, render_payload, sign
from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings
from driftline.service.store import Store
from driftline.wire import decode_envelope
from tests.service_support import envelope, window

WEEK = 7 * 86400.0


def store_with(tmp_path, rows: list) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'ref.sqlite'}")
    for p in rows:
        s.ingest(decode_envelope(envelope(p)), "http")
    return s


def test_first_rows_of_a_version_become_its_reference(tmp_path) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    windows = [window(rng, "m", "v1", start=now - 3600 + i * 60, n=200, shift=2.0 if i >= 10 else 0.0)
               for i in range(20)]
    store = store_with(tmp_path, windows)
    settings = ServiceSettings(database_url="sqlite://", evaluation=EvaluationSettings(auto_reference_rows=1000,
                                                                                       drift_share_threshold=0.3))
    ev = Evaluator(store, settings)
    ref, source = ev.reference_for("m", "v1", now - 600, now)
    assert source == "first_window" and ref.rows == 1000  # the first five windows
    rep = ev.drift("m", "v1", since=now - 3600 + 10 * 60, until=now)
    assert rep.reference_source == "first_window" and rep.report.dataset_drift is True
    assert rep.to_dict()["reference_source"] == "first_window" and rep.to_dict()["dataset_drift"] is True
    early = ev.drift("m", "v1", since=now - 3600 + 5 * 60, until=now - 3600 + 10 * 60)
    assert early.report.dataset_drift is False


def test_same_period_a_week_earlier_for_seasonal_traffic(tmp_path) -> None:
    rng = np.random.default_rng(1)
    now = time.time()
    last_week = [window(rng, "m", "v1", start=now - WEEK - 600 + i * 60, n=300, shift=1.0) for i in range(5)]
    this_week = [window(rng, "m", "v1", start=now - 600 + i * 60, n=300, shift=1.0) for i in range(5)]
    store = store_with(tmp_path, last_week + this_week)
    ev = Evaluator(store, ServiceSettings(database_url="sqlite://",
                                          evaluation=EvaluationSettings(seasonal_reference=True)))
    rep = ev.drift("m", "v1", since=now - 700, until=now)
    assert rep.reference_source == "week_ago"
    assert rep.report.dataset_drift is False  # the same season: no drift, although both differ from N(0, 1)


def test_retraining_payload_templates_and_signature() -> None:
    req = {"idempotency_key": "k", "model": "fraud", "version": "v3", "drifted_features": [{"name": "amount"}]}
    gh = render_payload(RetrainTarget(name="gh", url="https://x", kind="github_dispatch"), req)
    assert gh["event_type"] == "driftline-retrain" and gh["client_payload"] == req
    argo = render_payload(RetrainTarget(name="a", url="https://x", kind="argo_workflows"), req)
    assert "model=fraud" in argo["submitOptions"]["parameters"]
    events = render_payload(RetrainTarget(name="e", url="https://x", kind="argo_events"), req)
    assert events["data"] == req
    assert render_payload(RetrainTarget(name="w", url="https://x"), req) == req
    body = json.dumps(req).encode()
    assert sign("s", "1700000000", body) != sign("s", "1700000001", body) != sign("t", "1700000000", body)


def test_deadline_gives_up_and_counts(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'o.sqlite'}")
    clock = [1000.0]
    d = Dispatcher(store, RetrainSettings(targets=[RetrainTarget(name="t", url="http://127.0.0.1:9/none")],
                                          deadline_seconds=60, backoff_initial_seconds=1, timeout_seconds=1, secret="k"),
                   clock=lambda: clock[0])
    assert d.request("m", "v1", "test", "episode-1", {}) == 1
    assert d.request("m", "v1", "test", "episode-1", {}) == 0  # same episode: de-duplicated (cooldown too)
    d.deliver_due()
    assert d.outbox_stats()[0] == 1 and d.results[("m", "t", "retried")] == 1
    clock[0] += 120
    d.deliver_due()
    assert d.outbox_stats()[0] == 0 and d.results[("m", "t", "given_up")] == 1
