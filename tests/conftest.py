"""Shared fixtures: real Kafka, PostgreSQL and Prometheus binaries, started lazily once per session.

A test that asks for ``kafka_broker``, ``postgres_server`` or ``prometheus_binaries`` gets the
matching marker (kafka / postgres / prometheus) automatically. A missing binary is an error that
names the install step, never a silent skip: CI installs everything through scripts/test.sh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.harness.errors import HarnessError
from tests.harness.gobuilds import GO_BUILDS_MODULES, GO_BUILDS_WAIT_S
from tests.harness.kafka import KafkaBroker
from tests.harness.postgres import PostgresServer
from tests.harness.prometheus import PrometheusBinaries, find_prometheus_binaries

__all__: list[str] = []

# Captured before any test scrubs DRIFTLINE_* (the harness itself reads DRIFTLINE_KAFKA_LIBS).
_HARNESS_ENV = {k: v for k, v in os.environ.items() if k.startswith("DRIFTLINE_")}

# CI explores the same hypothesis examples every run (a failure reproduces); developers keep random ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

_MARKERS = {
    "kafka": "needs a real Kafka broker (started by the suite)",
    "postgres": "needs a real PostgreSQL server (started by the suite)",
    "prometheus": "needs prometheus/promtool/alertmanager binaries",
    "browser": "needs headless chromium",
    "helm": "needs the helm binary",
    "slow": "long-running",
}
FIRST_MODULES = ("test_system.py",)
_FIXTURE_MARKERS = {"kafka_broker": "kafka", "postgres_server": "postgres", "prometheus_binaries": "prometheus"}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
    # the whole-pipeline file (about a third of the suite's time) starts first, so with several workers
    # it runs beside the rest instead of after it; the tests that need helm and the Go harnesses run
    # last, while scripts/test.sh builds them
    first = [i for i in items if i.path.name in FIRST_MODULES]
    late = [i for i in items if i.path.name in GO_BUILDS_MODULES]
    middle = [i for i in items if i.path.name not in GO_BUILDS_MODULES and i.path.name not in FIRST_MODULES]
    for item in late:
        # their first test waits (bounded) for the background Go builds, which a cold cache on a busy
        # machine stretches past the suite's per-test timeout; the wait has its own bound
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(GO_BUILDS_WAIT_S + 300))
    items[:] = first + middle + late


@pytest.fixture(autouse=True)
def _scrub_driftline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from a clean slate: no DRIFTLINE_* settings leak in from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)


def _fail(what: str, exc: HarnessError) -> None:
    pytest.fail(f"{what}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real Kafka 4.1 broker on 127.0.0.1 (``.bootstrap``), shared by the session.

    Tests may ``stop()`` / ``start()`` / ``kill()`` it; it comes back on the same port with the
    same data. Tests should use their own topic names (``create_topic(name, partitions)``).
    """
    libs = _HARNESS_ENV.get("DRIFTLINE_KAFKA_LIBS")
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), libs=Path(libs) if libs else None)
    try:
        try:
            broker.start()
        except HarnessError as exc:
            _fail("Kafka broker did not start", exc)
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 (``.dsn``); ``new_database(name)`` for isolation."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        try:
            server.start()
        except HarnessError as exc:
            _fail("PostgreSQL did not start", exc)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus_binaries() -> PrometheusBinaries:
    """Paths of prometheus, promtool, alertmanager (and amtool when present)."""
    try:
        return find_prometheus_binaries()
    except HarnessError as exc:
        _fail("Prometheus tools missing", exc)
        raise  # unreachable: pytest.fail raises

