"""The typed seams inside the service: frozen results behind one snapshot, one ingest classification,
one error root, and a store whose execution API carries its dialect (issue 18)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from driftline.errors import DriftlineError, UnsupportedVersionError, WireFormatError
from driftline.service.errors import BadRequest, LimitExceeded, ServiceError, StoreError, Unprocessable
from driftline.service.evaluation import Evaluator
from driftline.service.ingest import REFUSAL_REASONS, refusal
from driftline.service.kafka_consumer import DEAD_LETTER_REASONS
from driftline.service.retrain.outbox import Outbox
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.service.store import Store
from driftline.wire import decode_envelope, decode_profile
from tests.service_support import envelope, reference_bytes, window


def test_every_service_error_is_a_driftline_error() -> None:
    for cls in (BadRequest, LimitExceeded, StoreError, Unprocessable):
        assert issubclass(cls, ServiceError) and issubclass(cls, DriftlineError)
    assert StoreError.retriable and not Unprocessable.retriable


@pytest.mark.parametrize(("exc", "reason"), [
    (WireFormatError("garbage"), "malformed"),
    (UnsupportedVersionError(9, 2), "unsupported_version"),
    (Unprocessable("rows out of range"), "unprocessable"),
    (LimitExceeded("past a cap"), "unprocessable"),
    (StoreError("database down"), None),
    (RuntimeError("no retriable attribute: taken as retriable, never dropped"), None),
])
def test_one_classification_of_refusals_for_both_transports(exc: BaseException, reason: str | None) -> None:
    assert refusal(exc) == reason
    assert reason is None or reason in REFUSAL_REASONS
    assert DEAD_LETTER_REASONS is REFUSAL_REASONS  # the Kafka labels are the ingest path's reasons


def _evaluated(tmp_path, now: float) -> Evaluator:
    rng = np.random.default_rng(3)
    store = Store(f"sqlite:///{tmp_path / 'seams.sqlite'}")
    store.put_reference("m", "v1", decode_profile(reference_bytes(rng, "m", "v1"), max_bytes=1 << 26,
                                                  instant_ok=True), "uploaded")
    store.ingest(decode_envelope(envelope(window(rng, "m", "v1", start=now - 120, shift=3.0))), "http")
    ev = Evaluator(store, ServiceSettings(database_url="sqlite://",
                                          evaluation=EvaluationSettings(drift_share_threshold=0.3)))
    ev.evaluate_all(now)
    return ev


def test_snapshot_holds_frozen_values_that_a_later_pass_never_changes(tmp_path) -> None:
    now = time.time()
    ev = _evaluated(tmp_path, now)
    try:
        first = ev.snapshot()
        st = first.models[("m", "v1")]
        assert st.drift is not None and st.drift.report.dataset_drift and st.drift_since == now
        with pytest.raises(dataclasses.FrozenInstanceError):
            st.drift_since = None  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            st.drift.report.features[0].drift_detected = False  # type: ignore[misc]
        with pytest.raises(TypeError):
            first.models[("x", "y")] = st  # type: ignore[index]
        ev.evaluate_all(now + 30)
        second = ev.snapshot()
        again = second.models[("m", "v1")]
        assert again is not st and again.evaluated_at == now + 30 and again.drift_since == now  # the run goes on
        assert st.evaluated_at == now  # the first snapshot is unchanged
        # the JSON is made at the edge, from the typed value, and equals what the API answers
        body = st.drift.to_dict()
        assert body["dataset_drift"] is True and body["model"] == "m" and body["reference_source"] == "uploaded"
        assert body["drift_share"] == st.drift.report.shown_share
        assert first.newest_drift("m") is st.drift and first.drift("m", "v2") is None
    finally:
        ev.store.close()


def test_store_execution_api_carries_its_dialect(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'api.sqlite'}")
    try:
        assert store.engine == "sqlite" and not hasattr(store, "_exec") and not hasattr(store, "d")
        Outbox(store)  # declares and creates its own tables, on a store that did not
        Outbox(store)  # ... idempotently
        with store.transaction() as tx:
            tx.execute("INSERT INTO retrain_state (model, last_request_at) VALUES (?, ?)", ("m", 1.0))
        assert store.query("SELECT model, last_request_at FROM retrain_state") == [("m", 1.0)]
        assert store.dialect.sql("a = ? AND b = ?") == "a = ? AND b = ?"
        assert type(store.dialect)("postgresql").sql("a = ? AND b = ?") == "a = %s AND b = %s"
    finally:
        store.close()
