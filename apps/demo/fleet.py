"""The simulated fleet: camera devices, each with a real model and a real sidecar shipping to the service."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .golden import BAD_DRIVER, GOOD_DRIVER, apply_driver
from .model import FEATURES, DigitModel, camera_change

__all__ = ["Device", "DevicePlan", "Fleet", "plan_fleet"]

SITES = ["oslo", "lima", "pune", "kyoto"]


@dataclass(frozen=True)
class DevicePlan:
    """What one device does in the scenario."""

    device: str
    site: str
    hardware: str
    camera_change_at: float | None  # seconds after start, or None
    driver: str = GOOD_DRIVER  # the camera driver (apps/demo/golden.py): one device's quantises a pixel

    @property
    def cohort(self) -> dict[str, str]:
        return {"site": self.site, "hardware": self.hardware, "driver": self.driver}


def plan_fleet(n_devices: int, duration: float) -> list[DevicePlan]:
    """Deterministic roles: a third of the fleet (at least one device) gets a new camera part-way; the
    last device's camera driver quantises a pixel (caught by its first golden-set run)."""
    n = max(n_devices, 2)
    n_camera = max(1, n // 3)
    return [
        DevicePlan(
            device=f"cam-{i + 1:02d}",
            site=SITES[i % len(SITES)],
            hardware="cam-v2" if i < n_camera else "cam-v1",
            camera_change_at=round(duration * 0.3, 1) if i < n_camera else None,
            driver=BAD_DRIVER if i == n - 1 else GOOD_DRIVER,  # the last device: no camera change, a bad driver
        )
        for i in range(n)
    ]


@dataclass
class Device:
    """One device: serves images through its models and reports every inference to its sidecar.

    A share of requests (``canary_share``) goes to the canary version, so both arms see the same
    devices and the same camera changes.
    """

    plan: DevicePlan
    models: dict[str, DigitModel]
    images: np.ndarray
    sidecar: object  # driftline.edge_sidecar.Sidecar
    rng: np.random.Generator
    canary_share: float = 0.3
    rows: int = 0
    camera_active: bool = False
    errors: list[str] = field(default_factory=list)

    def step(self, elapsed: float, batch: int) -> None:
        idx = self.rng.integers(0, len(self.images), batch)
        x = self.images[idx]
        at = self.plan.camera_change_at
        self.camera_active = at is not None and elapsed >= at
        if self.camera_active:
            x = camera_change(x, self.rng)
        x = apply_driver(self.plan.driver, x)
        to_canary = self.rng.random(batch) < self.canary_share
        for version, variant, mask in (("v1", "baseline", ~to_canary), ("v2", "canary", to_canary)):
            if not mask.any():
                continue
            xs = x[mask]
            model = self.models[version]
            t0 = time.perf_counter()
            labels, scores = model.predict(xs)
            per_row = (time.perf_counter() - t0) * 1000.0 / len(xs)
            latency_ms = per_row + 2.0 + model.extra_latency_ms + self.rng.gamma(2.0, 0.5, len(xs))
            self.sidecar.monitor.observe(  # type: ignore[attr-defined]
                {name: xs[:, j] for j, name in enumerate(FEATURES)},
                {"score": scores, "label": labels.astype(str)},
                model_version=version, variant=variant, latency_ms=latency_ms,
            )
        self.rows += batch


class Fleet:
    """Runs every device on one thread at a steady rate until stopped."""

    def __init__(self, devices: list[Device], rows_per_second: int = 100, tick: float = 0.25) -> None:
        self.devices = devices
        self.batch = max(1, int(rows_per_second * tick))
        self.tick = tick
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-fleet", daemon=True)

    def start(self) -> Fleet:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            elapsed = time.monotonic() - self.started
            for d in self.devices:
                try:
                    d.step(elapsed, self.batch)
                except Exception as exc:  # a device failing must not stop the demo
                    d.errors.append(f"{type(exc).__name__}: {exc}")
            next_tick += self.tick
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.devices)
