"""Helpers for service tests: envelopes made from numpy data, and a real service on a loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import Envelope, encode_envelope
from tests.harness.ports import free_port

__all__ = ["envelope", "reference_bytes", "running_service", "serving", "window"]

PCFG = ProfileConfig(categorical=frozenset({"label", "city"}))


def window(rng: np.random.Generator, model: str, version: str, *, variant: str = "baseline", device: str = "d1",
           start: float, length: float = 60.0, n: int = 300, shift: float = 0.0, score_shift: float = 0.0,
           latency: float = 3.0, site: str = "oslo") -> WindowProfile:
    p = WindowProfile(StreamKey.of(model, version, variant, device, {"site": site}), start, start + length, PCFG)
    score = np.clip(rng.beta(5, 2, n) + score_shift, 0, 1)
    p.update({"a": rng.normal(shift, 1, n), "b": rng.exponential(1, n), "city": rng.choice(["x", "y"], n)},
             {"score": score, "label": (score > 0.5).astype(int)}, latency_ms=rng.gamma(4, latency / 4, n))
    return p


def envelope(*profiles: WindowProfile, device: str = "d1") -> bytes:
    return encode_envelope(Envelope(list(profiles), producer={"name": "test", "device": device, "spool_pending": "1",
                                                            "spool_oldest_age_s": "2.5", "rss_bytes": "1000",
                                                            "cpu_seconds": "0.5"}))


def reference_bytes(rng: np.random.Generator, model: str, version: str, n: int = 5000) -> bytes:
    return envelope(window(rng, model, version, variant="reference", device="training", start=0.0, n=n))


@contextmanager
def running_service(settings: Any) -> Iterator[str]:
    """The real app under uvicorn on 127.0.0.1; yields its base URL."""
    from driftline.service.app import create_app

    with serving(create_app(settings), settings) as url:
        yield url


@contextmanager
def serving(app: Any, settings: Any) -> Iterator[str]:
    """Serve an app built by the caller (who can then reach ``app.state.parts``); yields its base URL."""
    import uvicorn

    settings.port = settings.port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="error"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one series in a Prometheus text exposition, keyed by their sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {tuple(sorted(s.labels.items())): s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}
