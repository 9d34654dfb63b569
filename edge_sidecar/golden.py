"""Golden-set conformance runs: the device's model server against the cloud's outputs.

:class:`GoldenRunner` runs every golden set (``driftline golden build``) through the local model
server at start, whenever the served model version changes and every ``interval_seconds``, and
judges the outputs with :func:`driftline.conformance.compare`. The model server is reached through
an Open Inference Protocol v2 upstream (:class:`OipPredictor`, the proxy's upstream by default) or an
SDK callback ``predict(golden, inputs) -> outputs``. Golden runs never pass through the monitor: they
are not live traffic and stay out of the drift windows.

The newest result per golden set becomes the envelope's ``conformance`` key (the shipper stamps it
into every envelope, as it stamps the producer map). A model server that fails, answers nonsense or
hangs past its timeout gives an ``error`` result and a counted reason, never an exception in the
sidecar; the runner thread owns every call to the model server.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from driftline.conformance import CONFORMANCE_TRIGGERS, GoldenSet, compare, read_golden_file
from driftline.errors import DriftlineError

from .errors import SettingsError, SidecarError

__all__ = ["ERROR_REASONS", "GoldenCollector", "GoldenError", "GoldenRunner", "OipPredictor", "Predict", "decode_outputs"]

log = logging.getLogger("driftline.sidecar.golden")

Predict = Callable[[GoldenSet, Mapping[str, np.ndarray]], Mapping[str, Any]]
"""What runs one batch of a golden set's inputs on the device: input tensors in, output tensors out."""
ERROR_REASONS = ("unreachable", "http_status", "bad_response", "callback")
"""Values of the ``reason`` label of ``driftline_sidecar_conformance_errors_total``."""
_OIP = {"bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
        "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "float16": "FP16", "float32": "FP32",
        "float64": "FP64"}
_NP = {v: k for k, v in _OIP.items()}


class GoldenError(SidecarError):
    """A golden run that could not get outputs from the model server; ``reason`` is one of :data:`ERROR_REASONS`."""

    retriable = True

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason if reason in ERROR_REASONS else "bad_response"


class OipPredictor:
    """Golden inputs to ``POST /v2/models/{model}/versions/{version}/infer`` as JSON tensors; also reads
    the served versions from ``GET /v2/models/{model}`` (the metadata) to notice a version change."""

    def __init__(self, upstream: str, timeout: float = 30.0, max_response_bytes: int = 64 * 1024 * 1024) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise SettingsError(f"golden.upstream must be an http:// URL, got {upstream!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
                resp = conn.getresponse()
                data = resp.read(self.max_response_bytes + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise GoldenError(f"model server {self.host}:{self.port} unreachable: {exc or 'timeout'}",
                                  "unreachable") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise GoldenError(f"model server answered {resp.status} to {method} {path}", "http_status")
        if len(data) > self.max_response_bytes:
            raise GoldenError(f"model server answer is over {self.max_response_bytes} bytes", "bad_response")
        try:
            return json.loads(data)
        except ValueError:
            raise GoldenError("model server answer is not JSON", "bad_response") from None

    def __call__(self, golden: GoldenSet, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = []
        for name, arr in inputs.items():
            kind = "BYTES" if arr.dtype.kind in "OUS" else _OIP.get(arr.dtype.name)
            if kind is None:
                raise GoldenError(f"input {name!r} has dtype {arr.dtype}, which OIP v2 cannot carry", "callback")
            data = [str(v) for v in arr.ravel()] if kind == "BYTES" else arr.ravel().tolist()
            tensors.append({"name": name, "shape": list(arr.shape), "datatype": kind, "data": data})
        path = (f"/v2/models/{quote(golden.model, safe='')}/versions/{quote(golden.model_version, safe='')}/infer")
        doc = self._call("POST", path, json.dumps({"id": f"golden-{golden.digest}", "inputs": tensors}).encode())
        return decode_outputs(doc)

    def served_version(self, model: str) -> str | None:
        """The served versions (and platform) of ``model`` as one string; None when unknown."""
        doc = self._call("GET", f"/v2/models/{quote(model, safe='')}")
        if not isinstance(doc, dict):
            raise GoldenError("model metadata is not a JSON object", "bad_response")
        return json.dumps([doc.get("versions"), doc.get("platform")], sort_keys=True, default=str)[:512]


def decode_outputs(doc: Any) -> dict[str, np.ndarray]:
    """An OIP v2 JSON response's output tensors as arrays (shape and datatype as the server said)."""
    outs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outs, list):
        raise GoldenError("inference answer has no 'outputs' list", "bad_response")
    result: dict[str, np.ndarray] = {}
    for t in outs[:64]:
        try:
            name, shape, kind, data = t["name"], [int(d) for d in t["shape"]], t["datatype"], t["data"]
            if kind == "BYTES":
                arr = np.array([str(v) for v in np.asarray(data, dtype=object).ravel()], dtype=object)
            else:
                arr = np.asarray(data, dtype=_NP[kind]).ravel()
            result[str(name)] = arr.reshape(shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise GoldenError(f"inference answer has a malformed output tensor: {exc}", "bad_response") from None
    return result


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    try:
        return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    except ValueError:  # batches disagree on trailing dims: the shape check reports it
        return np.empty((0,))


class GoldenRunner:
    """Runs golden sets on a schedule in one thread; the newest result of each set is kept for envelopes."""

    def __init__(self, goldens: Sequence[GoldenSet], predict: Predict, *, interval: float = 3600.0,
                 check_seconds: float = 30.0, batch_size: int = 64, cohort: Mapping[str, str] | None = None,
                 served_version: Callable[[str], str | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.goldens = list(goldens)
        self.predict = predict
        self.interval = interval
        self.check_seconds = check_seconds
        self.batch_size = batch_size
        self.cohort = dict(cohort or {})
        self.served_version = served_version
        self.clock = clock
        self.runs: Counter[str] = Counter()  # pass / fail / error
        self.errors: Counter[str] = Counter()  # by ERROR_REASONS
        self.triggers: Counter[str] = Counter()
        self.last_run_at: float | None = None
        self._versions: dict[str, str | None] = {}
        self._results: dict[str, dict[str, Any]] = {}  # digest -> newest wire entry
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Any, predict: Predict | None = None,
                      served_version: Callable[[str], str | None] | None = None) -> GoldenRunner:
        """The runner ``Sidecar`` builds: golden files read now (a bad file is a :class:`SettingsError`)."""
        g = settings.golden
        try:
            goldens = [read_golden_file(p, max_bytes=int(g.max_bytes)) for p in g.paths]
        except DriftlineError as exc:
            raise SettingsError(f"golden.paths: {exc}") from None
        if predict is None:
            oip = OipPredictor(g.upstream or settings.proxy.upstream, timeout=g.timeout_seconds)
            predict, served_version = oip, served_version or oip.served_version
        return cls(goldens, predict, interval=g.interval_seconds, check_seconds=g.check_seconds,
                   batch_size=g.batch_size, cohort=settings.cohort, served_version=served_version)

    # ---- one run ---------------------------------------------------------------------------------
    def run_one(self, golden: GoldenSet, trigger: str) -> dict[str, Any]:
        """Run one golden set now and keep its result; returns the wire entry (never raises; ``{}`` when
        the runner stopped part-way, which keeps no result)."""
        assert trigger in CONFORMANCE_TRIGGERS
        now = self.clock()
        try:
            collected: dict[str, list[np.ndarray]] = {}
            for i in range(0, golden.cases, self.batch_size):
                if self._stop.is_set():  # stopping: no more requests, and a half run is no result
                    return {}
                batch = {k: v[i : i + self.batch_size] for k, v in golden.inputs.items()}
                try:
                    out = self.predict(golden, batch)
                except GoldenError:
                    raise
                except Exception as exc:  # noqa: BLE001 - an SDK callback's failure is counted, not raised
                    raise GoldenError(f"predict callback failed: {type(exc).__name__}: {exc}", "callback") from None
                if not isinstance(out, Mapping):
                    raise GoldenError(f"predict returned {type(out).__name__}, expected a mapping", "callback")
                for k, v in out.items():
                    collected.setdefault(str(k), []).append(np.asarray(v))
            actual = {k: _concat(v) for k, v in collected.items()}
            result = compare(golden, actual)
            entry = result.to_wire(golden, trigger=trigger, evaluated_at=now, cohort=self.cohort)
            outcome = "pass" if result.passed else "fail"
            if not result.passed:
                log.warning("golden set %s (%s %s) failed conformance: %s", golden.name, golden.model,
                            golden.model_version, "; ".join(result.reasons))
        except GoldenError as exc:
            self.errors[exc.reason] += 1
            outcome = "error"
            entry = {"model": golden.model, "model_version": golden.model_version, "golden": golden.name[:128],
                     "digest": golden.digest, "trigger": trigger, "evaluated_at": float(now), "passed": False,
                     "cases": golden.cases, "error": str(exc)[:256],
                     "cohort": [[k, v] for k, v in sorted(self.cohort.items())][:32]}
            log.warning("golden set %s could not run: %s", golden.name, exc)
        with self._lock:
            self.runs[outcome] += 1
            self.triggers[trigger] += 1
            self.last_run_at = now
            self._results[golden.digest] = entry
        return entry

    def run_all(self, trigger: str) -> list[dict[str, Any]]:
        return [self.run_one(g, trigger) for g in self.goldens if not self._stop.is_set()]

    def entries(self) -> list[dict[str, Any]]:
        """The newest result of each golden set (what the shipper stamps into envelopes)."""
        with self._lock:
            return [dict(e) for e in self._results.values()]

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"sets": len(self.goldens), "runs": dict(self.runs), "errors": dict(self.errors),
                    "last_run_at": self.last_run_at,
                    "results": [{k: e.get(k) for k in ("model", "model_version", "golden", "passed", "error",
                                                       "max_abs_diff", "top1_agreement", "trigger")}
                                for e in self._results.values()]}

    # ---- the schedule ----------------------------------------------------------------------------
    def _version_changed(self) -> bool:
        if self.served_version is None:
            return False
        changed = False
        for model in sorted({g.model for g in self.goldens}):
            try:
                now = self.served_version(model)
            except GoldenError as exc:
                self.errors[exc.reason] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - an SDK callback's failure is counted, not raised
                self.errors["callback"] += 1
                log.warning("served-version callback failed: %s", exc)
                continue
            if model in self._versions and now != self._versions[model]:
                changed = True
            self._versions[model] = now
        return changed

    def _run(self) -> None:
        self._version_changed()  # the versions served at start
        self.run_all("start")
        last = time.monotonic()
        while not self._stop.wait(min(self.check_seconds, self.interval)):
            try:
                if self._version_changed():
                    self.run_all("version_change")
                    last = time.monotonic()
                elif time.monotonic() - last >= self.interval:
                    self.run_all("schedule")
                    last = time.monotonic()
            except Exception:  # noqa: BLE001 - the loop outlives any bug in one round
                log.exception("golden run round failed")

    def start(self) -> GoldenRunner:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="driftline-golden", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the schedule; a call hanging in the model server is left to its own timeout (daemon thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class GoldenCollector:
    """``driftline_sidecar_conformance_*``: runs by result, errors by reason, the newest outcome per set."""

    def __init__(self, runner: GoldenRunner) -> None:
        self.runner = runner

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        r = self.runner
        runs = CounterMetricFamily("driftline_sidecar_conformance_runs", "Golden-set runs by result.",
                                   labels=["result"])
        errors = CounterMetricFamily("driftline_sidecar_conformance_errors", "Golden-set runs that could not "
                                     "get outputs from the model server, by reason.", labels=["reason"])
        passed = GaugeMetricFamily("driftline_sidecar_conformance_passed", "1 when the newest run of the golden "
                                   "set passed, 0 when it failed or could not run.", labels=["model", "version"])
        with r._lock:
            for result in ("pass", "fail", "error"):
                runs.add_metric([result], r.runs.get(result, 0))
            for reason in ERROR_REASONS:
                errors.add_metric([reason], r.errors.get(reason, 0))
            for e in r._results.values():
                passed.add_metric([e["model"], e["model_version"]], 1.0 if e.get("passed") else 0.0)
        yield from (runs, errors, passed)
