"""The real-infrastructure harness itself: PostgreSQL, Prometheus tools, loopback ports."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.harness.ports import free_port, port_open
from tests.harness.postgres import PostgresServer
from tests.harness.prometheus import AlertmanagerServer, PrometheusBinaries, PrometheusServer


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert not port_open(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_open(port)


def test_postgres_accepts_connections(postgres_server: PostgresServer) -> None:
    import psycopg

    dsn = postgres_server.new_database("harness_check")
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        assert conn.execute("SELECT current_database(), count(*) FROM t").fetchone() == ("harness_check", 2)
    with psycopg.connect(postgres_server.dsn, connect_timeout=10) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert "harness_check" in names


def test_promtool_runs(prometheus_binaries: PrometheusBinaries) -> None:
    out = subprocess.run([str(prometheus_binaries.promtool), "--version"], capture_output=True,
                         text=True, timeout=30, check=True)
    assert "promtool, version" in out.stdout + out.stderr


def test_prometheus_scrapes_itself_and_alertmanager(prometheus_binaries: PrometheusBinaries,
                                                    tmp_path: Path) -> None:
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
    alertmanager = AlertmanagerServer(tmp_path / "am", am_config, binaries=prometheus_binaries)
    prom_port = free_port()
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: self\n    static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]\n"
        f"  - job_name: alertmanager\n    static_configs: [{{targets: ['127.0.0.1:{alertmanager.port}']}}]\n"
    )
    prometheus = PrometheusServer(tmp_path / "prom", prom_config, port=prom_port, binaries=prometheus_binaries)
    try:
        alertmanager.start()
        prometheus.start()
        up = prometheus.wait_for('up{job="alertmanager"} == 1', timeout=60)
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{alertmanager.port}"
        assert alertmanager.alerts() == []
    finally:
        prometheus.stop()
        alertmanager.stop()


@pytest.mark.parametrize("bad", ["not: [valid", "scrape_configs: 3\n"])
def test_promtool_rejects_a_bad_config(prometheus_binaries: PrometheusBinaries, tmp_path: Path, bad: str) -> None:
    config = tmp_path / "bad.yml"
    config.write_text(bad)
    proc = subprocess.run([str(prometheus_binaries.promtool), "check", "config", str(config)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0


def test_kafka_cluster_ids_are_valid_and_never_look_like_options() -> None:
    import base64

    from tests.harness.kafka import _random_cluster_id

    ids = {_random_cluster_id() for _ in range(3000)}
    assert len(ids) == 3000
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
