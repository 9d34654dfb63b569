"""The demo scenario, end to end: service, fleet, reference, canary, retraining receiver, live view.

Everything is real: the service is the same FastAPI app ``driftline service`` runs (SQLite, HTTP
ingest), every device runs the sidecar's SDK, spool and HTTP shipper, the models are trained here,
and the retraining webhook is a signed HTTP request to a local receiver.
"""

from __future__ import annotations

import secrets
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import Envelope, encode_envelope

from .api import ApiError, ServiceClient
from .fleet import Device, Fleet, plan_fleet
from .golden import build_golden, device_predict
from .model import FEATURES, load_digits_split, train_models
from .receiver import RetrainReceiver
from .view import render_live, render_summary, summarise

__all__ = ["DemoOptions", "run_demo"]

MODEL = "digits-camera"


@dataclass
class DemoOptions:
    """What ``driftline demo`` was asked to do."""

    devices: int = 6
    duration: float = 60.0
    port: int = 8000
    seed: int = 0
    forever: bool = False
    bad_canary: bool = False
    json: bool = False
    window_seconds: float = 2.0
    rows_per_second: int = 120
    canary_share: float = 0.3
    data_dir: str | None = None


class _ServiceThread:
    """The real service app under uvicorn, in this process, stoppable."""

    def __init__(self, settings: Any) -> None:
        import uvicorn

        from driftline.service.app import create_app

        from ..cli._net import bind_listener

        self.sock = bind_listener(settings.host, settings.port)  # a busy port: ConfigError before anything starts
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host=settings.host, port=settings.port, log_level="error",
                                lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="demo-service",
                                       daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        from driftline.errors import ConfigError

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the demo's service did not start within {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.sock.close()


def _service_settings(opts: DemoOptions, data: Path, receiver: RetrainReceiver, secret: str) -> Any:
    from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings

    return ServiceSettings(
        host="127.0.0.1", port=opts.port, database_url=f"sqlite:///{data / 'driftline.sqlite'}",
        evaluation=EvaluationSettings(current_window_seconds=max(8 * opts.window_seconds, 15.0),
                                      interval_seconds=1.0, history_bucket_seconds=max(opts.window_seconds * 2, 4.0),
                                      min_rows=30, drift_share_threshold=0.3),
        retrain=RetrainSettings(targets=[RetrainTarget(name="local-retrainer", url=receiver.url)], secret=secret,
                                sustained_seconds=4.0, cooldown_seconds=3600.0, backoff_initial_seconds=0.2,
                                backoff_max_seconds=2.0),
    )


def _sidecar(opts: DemoOptions, data: Path, url: str, plan: Any, golden: Path | None = None,
             models: Any = None) -> Any:
    from driftline.edge_sidecar.runner import Sidecar
    from driftline.edge_sidecar.settings import (
        ApiSettings,
        GoldenSettings,
        HttpTransportSettings,
        ProfileSettings,
        ShipperSettings,
        SidecarSettings,
        SpoolSettings,
        TransportSettings,
        WindowSettings,
    )

    settings = SidecarSettings(
        device=plan.device, cohort=plan.cohort, model=MODEL, model_version="v1", variant="baseline",
        window=WindowSettings(seconds=opts.window_seconds, lateness_seconds=opts.window_seconds, tick_seconds=0.2),
        profile=ProfileSettings(categorical=["label"]),
        spool=SpoolSettings(path=data / "spool" / plan.device, fsync=False),
        transport=TransportSettings(kind="http", http=HttpTransportSettings(url=url, timeout_seconds=5)),
        shipper=ShipperSettings(backoff_initial_seconds=0.2, backoff_max_seconds=2.0, shutdown_grace_seconds=3.0),
        api=ApiSettings(port=0),
        golden=GoldenSettings(enabled=golden is not None, paths=[golden] if golden is not None else []),
    )
    if golden is None:
        return Sidecar(settings).start()
    # golden runs go through the device's own inference path (its driver, then its model): the SDK callback
    return Sidecar(settings, golden_predict=device_predict(plan.driver, models),
                   golden_version=lambda _model: "v1").start()


def _reference(model: Any, x: np.ndarray, version: str) -> bytes:
    labels, scores = model.predict(x)
    prof = WindowProfile(StreamKey.of(MODEL, version, "reference", "training"), 0, 0,
                         ProfileConfig(categorical=frozenset({"label"})))
    prof.update({n: x[:, j] for j, n in enumerate(FEATURES)}, {"score": scores, "label": labels.astype(str)})
    return encode_envelope(Envelope([prof], producer={"name": "driftline-demo"}))


def _poll(client: ServiceClient, receiver: RetrainReceiver, devices: list[Device], app: Any = None) -> dict[str, Any]:
    snap: dict[str, Any] = {"model": MODEL, "rows": sum(d.rows for d in devices)}
    snap["windows"] = sum(d.sidecar.shipper.deliveries.get("ok", 0) for d in devices)
    for key, path in (("drift", f"/v1/models/{MODEL}/drift?version=v1"), ("canary", f"/v1/models/{MODEL}/canary"),
                      ("devices", f"/v1/models/{MODEL}/devices?version=v1")):
        try:
            val = client.get(path)
            snap[key] = val["devices"] if key == "devices" else val
        except ApiError:
            snap[key] = None
    snap["conformance"] = _conformance(app)
    snap["retrain_requests"] = len(receiver.requests)
    snap["retrain_payloads"] = [r["payload"] for r in receiver.requests]
    return snap


def _conformance(app: Any) -> list[dict[str, Any]]:
    """The service's golden-set conformance of the model (what its status page shows), read in process."""
    parts = getattr(getattr(app, "state", None), "parts", None)
    if parts is None or parts.conformance is None:
        return []
    from driftline.service.conformance import conformance_summary

    try:
        return conformance_summary(parts.conformance, MODEL, parts.settings.conformance_cohorts)
    except Exception:  # noqa: BLE001 - a busy store leaves this poll without it
        return []


class _Stop:
    """SIGINT and SIGTERM end the traffic early: the demo still prints its summary and cleans up.

    Outside the traffic loop (training, shutdown) a signal interrupts at once; a second signal
    always does, so a stuck shutdown can still be cut short.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.in_traffic = False
        self._previous: dict[int, Any] = {}

    def install(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        first = self.signal is None
        self.signal = signum if first else self.signal
        if not (first and self.in_traffic):
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return 0 if self.signal is None else 128 + int(self.signal)


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the scenario; returns the exit code.

    Ctrl-C or SIGTERM during traffic ends it early with the summary (exit 130 / 143); at any time the
    fleet, the service and the temporary folder are cleaned up.
    """
    stop = _Stop().install()
    tmp = None
    if opts.data_dir:
        data = Path(opts.data_dir)
        data.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="driftline-demo-", ignore_cleanup_errors=True)
        data = Path(tmp.name)
    receiver: RetrainReceiver | None = None
    service: _ServiceThread | None = None
    devices: list[Device] = []
    fleet: Fleet | None = None
    base = f"http://127.0.0.1:{opts.port}"
    urls = {"status page": f"{base}/", "model page": f"{base}/models/{MODEL}", "API docs": f"{base}/docs",
            "drift (JSON)": f"{base}/v1/models/{MODEL}/drift", "canary (JSON)": f"{base}/v1/models/{MODEL}/canary",
            "metrics": f"{base}/metrics"}
    tty = err.isatty()
    try:
        secret = secrets.token_hex(16)
        receiver = RetrainReceiver(secret).start()
        service = _ServiceThread(_service_settings(opts, data, receiver, secret))  # ConfigError if the port is busy
        length = "until Ctrl-C or SIGTERM" if opts.forever else f"{opts.duration:.0f}s"
        print(f"driftline demo: {opts.devices} camera devices, {length}, "
              f"{'bad' if opts.bad_canary else 'harmless'} canary; data in {data}"
              + ("" if opts.data_dir else " (removed at the end)"), file=err, flush=True)
        service.start()
        print(f"service running: {urls['status page']}", file=err, flush=True)
        print("Open these while the demo runs" + (" (until Ctrl-C):" if opts.forever else
                                                  f" ({opts.duration:.0f}s of traffic; --forever keeps it up):"),
              file=err, flush=True)
        for name, url in urls.items():
            print(f"  {name:<14} {url}", file=err, flush=True)
        x_train, y_train, x_serve, _ = load_digits_split(opts.seed)
        models = train_models(x_train, y_train, opts.seed, opts.bad_canary)
        client = ServiceClient(base)
        golden = build_golden(models["v1"], MODEL, x_serve, data / "golden-v1.dlg")
        for version, m in models.items():
            client.put_bytes(f"/v1/models/{MODEL}/versions/{version}/reference", _reference(m, x_train, version))
        client.put_json(f"/v1/models/{MODEL}/canary", {
            "baseline_version": "v1", "canary_version": "v2", "score_output": "score", "label_output": "label",
            "min_rows": 1500, "min_duration_seconds": min(20.0, opts.duration / 3)})
        plans = plan_fleet(opts.devices, opts.duration)
        rng = np.random.default_rng(opts.seed)
        for plan in plans:
            sc = _sidecar(opts, data, base, plan, golden, models)
            devices.append(Device(plan, models, x_serve, sc, np.random.default_rng(rng.integers(1 << 31)),
                                  canary_share=opts.canary_share))
        fleet = Fleet(devices, rows_per_second=opts.rows_per_second).start()
        start = time.monotonic()
        snap: dict[str, Any] = {}
        last_line = 0.0
        stop.in_traffic = True
        while (opts.forever or time.monotonic() - start < opts.duration) and not stop.requested:
            time.sleep(0.5)
            elapsed = time.monotonic() - start
            snap = _poll(client, receiver, devices, service.app)
            camera_on = any(d.camera_active for d in devices)
            snap["phase"] = "camera replaced" if camera_on else "stable traffic"
            line = render_live(snap, elapsed, None if opts.forever else opts.duration)
            if tty:
                print("\r" + line, end="", file=err, flush=True)
            elif elapsed - last_line >= 5:
                print(line, file=err, flush=True)
                last_line = elapsed
        stop.in_traffic = False
        if tty:
            print(file=err)
        if stop.requested:
            print(f"\n{signal.Signals(stop.signal or signal.SIGINT).name}: stopping the fleet; summary of "
                  f"{time.monotonic() - start:.0f}s of traffic follows", file=err, flush=True)
        fleet.stop()
        for d in devices:
            d.sidecar.stop(grace=3.0)
        time.sleep(1.5)
        service.app.state.background.run_once()
        snap = _poll(client, receiver, devices, service.app)
        snap["expected_drifted_devices"] = [p.device for p in plans if p.camera_change_at is not None]
        snap["expected_nonconforming_devices"] = [p.device for p in plans if p.driver != plans[0].driver]
        summary = summarise(snap, urls)
        if opts.json:
            import json

            print(json.dumps(summary, indent=2), file=out, flush=True)
        else:
            print(render_summary(summary), file=out, flush=True)
        return stop.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the fleet and the service", file=err)
        return stop.exit_code or 130
    finally:
        stop.in_traffic = False
        try:
            if fleet is not None:
                fleet.stop()
            for d in devices:
                try:
                    d.sidecar.stop(grace=0.5)
                except Exception:  # stopping twice is fine; nothing else may block shutdown
                    pass
            if service is not None:
                service.stop()
            if receiver is not None:
                receiver.stop()
        finally:
            if tmp is not None:
                tmp.cleanup()
            stop.restore()
