"""The whole pipeline on loopback: a fleet of sidecar processes, Kafka, two service replicas, PostgreSQL,
Prometheus and Alertmanager, with the faults a production deployment meets.

Used by ``tests/test_system.py`` (assertions) and ``bench/bench_system.py`` (figures). Every part is the
real program: ``driftline sidecar`` processes (Kafka transport, disk spool), a Kafka 4.1.1 broker,
``driftline service`` processes in one consumer group on one PostgreSQL database, Prometheus scraping
the replicas with the shipped rules (``for:`` shortened, nothing else changed) and Alertmanager with
the shipped routing. A feeder thread posts rows to every sidecar's ``/v1/observe`` at a steady rate
and counts what each sidecar acknowledged; it also keeps the acknowledged rows, so a "clean run" (the
same rows profiled in one process) can be compared with what the service computed.

What "acknowledged" means: ``/v1/observe`` answered ``accepted: n``. The rows are then in the sidecar's
memory; they are on disk once their window closes (``window.seconds`` later). A SIGKILL before that
loses them, which is why :meth:`System.quiesce` waits for a sidecar's open windows to close before the
tests kill it with a full spool.

Faults are methods: :meth:`restart_broker`, :meth:`pause_broker` (SIGSTOP: the network to the broker
is cut as far as every client can tell, connections stay open and hang), :meth:`kill_replica`,
:meth:`restart_postgres`, :meth:`kill_sidecar`, and the disk filled under a sidecar's spool or under
the database (tmpfs mounts of a fixed size; needs root).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import HarnessError
from .kafka import KafkaBroker
from .ports import free_port, wait_for_port
from .postgres import PostgresServer
from .proc import ManagedProcess
from .prometheus import AlertmanagerServer, PrometheusBinaries, PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("fraud", "churn")
NUMERIC = ("x0", "x1", "x2", "x3")
CITIES = ("oslo", "bergen", "tromso", "stavanger")
WRITE_TOKEN = "system-test-write-token"  # the replicas' api_token: writes need it, reads are open


def rows_of(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """``n`` rows of the fleet's data: four numeric features, one categorical, one score."""
    cols: dict[str, np.ndarray] = {f: rng.normal(i + shift, 1 + 0.5 * i, n) for i, f in enumerate(NUMERIC)}
    cols["city"] = rng.choice(CITIES, n, p=(0.4, 0.3, 0.2, 0.1))
    cols["score"] = 1 / (1 + np.exp(-cols["x0"] + 0.5))
    return cols


def as_ndjson(cols: dict[str, np.ndarray], model: str) -> bytes:
    n = len(cols["score"])
    lines = []
    for j in range(n):
        feats = {f: float(cols[f][j]) for f in NUMERIC}
        feats["city"] = str(cols["city"][j])
        lines.append(json.dumps({"model": model, "features": feats, "outputs": {"score": float(cols["score"][j])}}))
    return "\n".join(lines).encode()


def shortened_rules(for_: str = "2s") -> str:
    """The shipped rules with every ``for:`` set to ``for_`` (and nothing else changed)."""
    text = (ROOT / "alerts" / "driftline-rules.yml").read_text()
    out, n = re.subn(r"(?m)^(\s+for:) \S+$", rf"\g<1> {for_}", text)
    if n != text.count("- alert:"):
        raise HarnessError("every rule should have a for: to shorten")
    return out


def _http(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _cmd() -> list[str]:
    return [sys.executable, "-m", "driftline.apps.cli.main"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}


class _Child:
    """A ``driftline`` subcommand run as a :class:`~tests.harness.proc.ManagedProcess` (own session, log,
    killed with this process); ``kill`` is a crash (SIGKILL of its group), ``stop`` a SIGTERM."""

    def __init__(self, argv: list[str], log: Path, *, cwd: Path, env: dict[str, str]) -> None:
        self.log = log
        self._proc = ManagedProcess(argv, log, cwd=cwd, env=env)

    def start(self) -> None:
        self._proc.start()

    @property
    def running(self) -> bool:
        return self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc.running else None

    def kill(self) -> None:
        self._proc.kill()

    def stop(self, grace: float = 60.0) -> bool:
        return self._proc.stop(grace)


class SidecarProc(_Child):
    """One ``driftline sidecar`` process of the fleet: its device, model, API port and spool."""

    def __init__(self, index: int, device: str, model: str, port: int, config: Path, spool: Path, log: Path) -> None:
        super().__init__([*_cmd(), "sidecar", "--config", str(config)], log, cwd=ROOT, env=_clean_env())
        self.index, self.device, self.model, self.port = index, device, model, port
        self.config, self.spool = config, spool

    def health(self) -> dict[str, Any]:
        status, body = _http(self.port, "GET", "/healthz", timeout=5)
        return json.loads(body) if body else {"status": status}


class Replica(_Child):
    """One ``driftline service`` process; all replicas share the consumer group and the database."""

    def __init__(self, index: int, port: int, env: dict[str, str], log: Path) -> None:
        super().__init__([*_cmd(), "service"], log, cwd=log.parent, env=env)
        self.index, self.port = index, port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class TmpfsMount:
    """A tmpfs of a fixed size: a disk that can be filled to the last byte and emptied again."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.mounted = False
        self._filler = path / ".filler"

    def mount(self) -> TmpfsMount:
        self.path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=1777", "tmpfs", str(self.path)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"cannot mount a {self.size} tmpfs at {self.path} (the disk-full faults need root): "
                               f"{proc.stderr.strip()}")
        self.mounted = True
        return self

    def fill(self) -> int:
        """Write a filler file until the filesystem refuses (ENOSPC); returns its size."""
        written = 0
        try:
            fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError:
            return 0  # already full
        try:
            for size in (1 << 16, 4096, 512):
                chunk = b"\0" * size
                while True:
                    try:
                        n = os.write(fd, chunk)
                    except OSError:
                        break
                    if n <= 0:
                        break
                    written += n
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False


class Feeder:
    """Threads posting ``rows_per_post`` rows to each running sidecar every ``interval`` seconds.

    Counts what each sidecar acknowledged and keeps those rows per model (the clean run's input). A
    sidecar that does not answer is skipped for that round (its rows were never acknowledged, so
    nothing is owed); ``failed_posts`` counts those rounds.
    """

    def __init__(self, sidecars: list[SidecarProc], rows_per_post: int, interval: float, seed: int = 0,
                 threads: int = 4, reuse_payloads: bool = False) -> None:
        self.sidecars = sidecars
        self.rows_per_post = rows_per_post
        self.interval = interval
        self.rngs = {s.device: np.random.default_rng([seed, s.index]) for s in sidecars}
        self.shift: dict[str, float] = dict.fromkeys(MODELS, 0.0)
        self.held: set[str] = set()
        self.inflight: set[str] = set()  # devices with a post on the way (hold waits for its answer)
        self.acked: dict[str, int] = {s.device: 0 for s in sidecars}
        self.kept: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in MODELS}
        self.failed_posts = 0
        self.posts = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = max(1, min(threads, len(sidecars)))
        self.reuse_payloads = reuse_payloads
        self._payloads: dict[str, bytes] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> Feeder:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, args=(self.sidecars[k::self.threads],),
                                          name=f"feeder-{k}", daemon=True) for k in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop feeding; returns once no post is in flight (so the acknowledged counts are final)."""
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self._threads = []

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def hold(self, device: str, timeout: float = 30.0) -> None:
        """Stop feeding one sidecar; returns once its post in flight (if any) has been answered."""
        with self.lock:
            self.held.add(device)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if device not in self.inflight:
                    return
            time.sleep(0.01)
        raise HarnessError(f"a post to {device} still in flight after {timeout:.0f} s")

    def release(self, device: str) -> None:
        with self.lock:
            self.held.discard(device)

    def feed_once(self, s: SidecarProc) -> int:
        """One post to one sidecar; returns the rows it acknowledged (0 if it did not answer)."""
        with self.lock:
            shift = self.shift[s.model]
        if self.reuse_payloads:  # load runs: one payload per sidecar, sent again and again (no clean run)
            if s.device not in self._payloads:
                self._payloads[s.device] = as_ndjson(rows_of(self.rngs[s.device], self.rows_per_post), s.model)
            cols, payload = None, self._payloads[s.device]
        else:
            cols = rows_of(self.rngs[s.device], self.rows_per_post, shift)
            payload = as_ndjson(cols, s.model)
        try:
            status, body = _http(s.port, "POST", "/v1/observe", payload, timeout=10,
                                 headers={"Content-Type": "application/x-ndjson"})
        except OSError:
            status, body = 0, b""
        with self.lock:
            self.posts += 1
            if status != 200:
                self.failed_posts += 1
                return 0
            accepted = int(json.loads(body)["accepted"])
            if accepted != self.rows_per_post:
                raise HarnessError(f"{s.device} accepted {accepted} of {self.rows_per_post} valid rows: {body[:300]!r}")
            self.acked[s.device] += accepted
            if cols is not None:
                self.kept[s.model].append(cols)
            return accepted

    def _run(self, mine: list[SidecarProc]) -> None:
        next_round = time.monotonic()
        while not self._stop.is_set():
            for s in mine:
                with self.lock:
                    held = s.device in self.held
                    if not held:
                        self.inflight.add(s.device)
                if not held:
                    try:
                        if s.running:
                            self.feed_once(s)
                    finally:
                        with self.lock:
                            self.inflight.discard(s.device)
            next_round += self.interval
            self._stop.wait(max(0.0, next_round - time.monotonic()))
            next_round = max(next_round, time.monotonic() - self.interval)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.acked)


class System:
    """All the parts, started in order and stopped in reverse; see the module docstring."""

    def __init__(self, root: Path, broker: KafkaBroker, binaries: PrometheusBinaries, *, sidecars: int = 20,
                 rows_per_post: int = 20, interval: float = 0.5, window_seconds: float = 1.0,
                 small_spool_sidecars: int = 1, tmpfs_spool_sidecars: int = 1, db_on_tmpfs: bool = True,
                 prometheus: bool = True) -> None:
        self.root = root
        self.broker = broker
        self.binaries = binaries
        self.n_sidecars = sidecars
        self.window_seconds = window_seconds
        self.topic = f"driftline.system-{uuid.uuid4().hex[:8]}"
        self.group = f"system-{uuid.uuid4().hex[:8]}"
        self.small_spool = small_spool_sidecars
        self.tmpfs_spool = tmpfs_spool_sidecars
        self.db_on_tmpfs = db_on_tmpfs
        self.with_prometheus = prometheus
        self.mounts: list[TmpfsMount] = []
        self.db_mount: TmpfsMount | None = None
        self.spool_mounts: dict[str, TmpfsMount] = {}
        self.pg: PostgresServer | None = None
        self.dsn = ""
        self.replicas: list[Replica] = []
        self.sidecars: list[SidecarProc] = []
        self.prom: PrometheusServer | None = None
        self.am: AlertmanagerServer | None = None
        self.feeder: Feeder | None = None
        self.references: dict[str, Any] = {}
        self._paused = False
        self._rows_per_post = rows_per_post
        self._interval = interval
        self.model_server: Any = None  # the OIP v2 model server behind one sidecar's proxy
        self.proxy_port = 0

    # ---- start / stop -----------------------------------------------------------------------------
    def start(self) -> System:
        self.root.mkdir(parents=True, exist_ok=True)
        self.broker.create_topic(self.topic, partitions=4)
        self._start_postgres()
        for i in range(2):
            self._add_replica(i)
        for r in self.replicas:
            self._wait_replica(r)
        self._upload_references()
        from tests.sidecar_support import ModelServer

        self.model_server = ModelServer().start()
        for i in range(self.n_sidecars):
            self._add_sidecar(i)
        for s in self.sidecars:
            if not wait_for_port(s.port, 90):
                raise HarnessError(f"sidecar {s.device} did not open its port:\n{s.log.read_text()[-3000:]}")
        if self.with_prometheus:
            self._start_prometheus()
        self.feeder = Feeder(self.sidecars, self._rows_per_post, self._interval).start()
        return self

    def stop(self) -> None:
        if self.feeder is not None:
            self.feeder.stop()
        if self._paused:
            self.resume_broker()
        for s in self.sidecars:
            s.kill()
        for r in self.replicas:
            r.kill()
        for srv in (self.prom, self.am):
            if srv is not None:
                srv.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.model_server is not None:
            self.model_server.stop()
        for m in [*self.spool_mounts.values(), *([self.db_mount] if self.db_mount else [])]:
            m.unmount()

    def _start_postgres(self) -> None:
        parent = None
        if self.db_on_tmpfs:
            self.db_mount = TmpfsMount(Path(f"/tmp/driftline-sysdb-{uuid.uuid4().hex[:8]}"), "192m").mount()
            parent = self.db_mount.path
        self.pg = PostgresServer(self.root / "pg", root_parent=parent).start()
        self.dsn = self.pg.new_database("system")

    def _replica_env(self, port: int) -> dict[str, str]:
        env = _clean_env()
        env.update({
            "DRIFTLINE_DATABASE_URL": self.dsn, "DRIFTLINE_PORT": str(port),
            "DRIFTLINE_KAFKA__ENABLED": "true", "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": f'["{self.broker.bootstrap}"]',
            "DRIFTLINE_KAFKA__TOPIC": self.topic, "DRIFTLINE_KAFKA__GROUP_ID": self.group,
            "DRIFTLINE_KAFKA__RECONNECT_BACKOFF_INITIAL_SECONDS": "0.5",
            "DRIFTLINE_KAFKA__RECONNECT_BACKOFF_MAX_SECONDS": "3",
            "DRIFTLINE_KAFKA__HEALTH_INTERVAL_SECONDS": "2", "DRIFTLINE_KAFKA__REQUEST_TIMEOUT_MS": "4000",
            "DRIFTLINE_EVALUATION__INTERVAL_SECONDS": "2", "DRIFTLINE_EVALUATION__CURRENT_WINDOW_SECONDS": "20",
            "DRIFTLINE_DATABASE_TIMEOUT_SECONDS": "2", "DRIFTLINE_LOG_FORMAT": "text",
            "DRIFTLINE_API_TOKEN": WRITE_TOKEN,
        })
        return env

    def _add_replica(self, i: int) -> None:
        port = free_port()
        (self.root / f"replica-{i}").mkdir(exist_ok=True)
        r = Replica(i, port, self._replica_env(port), self.root / f"replica-{i}" / "service.log")
        r.start()
        self.replicas.append(r)

    def _wait_replica(self, r: Replica, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not r.running:
                raise HarnessError(f"replica {r.index} exited:\n{r.log.read_text()[-3000:]}")
            try:
                if _http(r.port, "GET", "/readyz", timeout=3)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise HarnessError(f"replica {r.index} not ready in {timeout:.0f} s:\n{r.log.read_text()[-3000:]}")

    def _upload_references(self) -> None:
        from driftline.profile import StreamKey, WindowProfile
        from driftline.wire import Envelope, encode_envelope

        for k, model in enumerate(MODELS):
            cols = rows_of(np.random.default_rng([99, k]), 20_000)
            p = WindowProfile(StreamKey.of(model, "1", "reference", "training"), 0.0, 1.0)
            p.update({f: cols[f] for f in (*NUMERIC, "city")}, {"score": cols["score"]})
            body = encode_envelope(Envelope([p], producer={"name": "system-test"}))
            status, text = _http(self.replicas[0].port, "PUT", f"/v1/models/{model}/versions/1/reference", body,
                                 headers={"Authorization": f"Bearer {WRITE_TOKEN}"})
            if status != 200:
                raise HarnessError(f"reference upload for {model}: {status} {text[:300]!r}")
            self.references[model] = p

    def _add_sidecar(self, i: int) -> None:
        device = f"dev-{i:02d}"
        model = MODELS[i % len(MODELS)]
        d = self.root / "sidecars" / device
        d.mkdir(parents=True, exist_ok=True)
        spool = d / "spool"
        max_bytes: int | str = "64MiB"
        if i < self.small_spool:
            max_bytes = 60_000  # room for a few windows: a long outage makes it merge
        elif i < self.small_spool + self.tmpfs_spool:
            mount = TmpfsMount(Path(f"/tmp/driftline-sysspool-{uuid.uuid4().hex[:8]}"), "8m").mount()
            self.spool_mounts[device] = mount
            spool = mount.path / "spool"
        port = free_port()
        cfg = d / "sidecar.yaml"
        proxy: dict[str, Any] = {}
        if i == self.small_spool + self.tmpfs_spool and self.model_server is not None:
            self.proxy_port = free_port()
            proxy = {"proxy": {"enabled": True, "port": self.proxy_port, "upstream": self.model_server.url,
                               "model_version": "1", "timeout_seconds": 10}}
        cfg.write_text(yaml.safe_dump({**proxy,
            "device": device, "model_version": "1",
            "window": {"seconds": self.window_seconds, "lateness_seconds": 0, "tick_seconds": 0.1},
            "spool": {"path": str(spool), "max_bytes": max_bytes},
            "transport": {"kind": "kafka", "kafka": {
                "bootstrap_servers": [self.broker.bootstrap], "topic": self.topic, "request_timeout_ms": 4000,
                "max_block_ms": 2000, "retry_backoff_ms": 100, "extra": {"delivery_timeout_ms": 8000}}},
            "shipper": {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 2, "shutdown_grace_seconds": 60},
            "api": {"port": port},
        }))
        s = SidecarProc(i, device, model, port, cfg, spool, d / "sidecar.log")
        s.start()
        self.sidecars.append(s)

    def _start_prometheus(self) -> None:
        am_port = free_port()
        (self.root / "rules.yml").write_text(shortened_rules())
        (self.root / "am.yml").write_text(yaml.safe_dump({
            "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h",
                      "group_by": ["alertname", "model"]},
            "receivers": [{"name": "null"}]}))
        (self.root / "prom.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.root / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "driftline", "static_configs": [
                {"targets": [f"127.0.0.1:{r.port}" for r in self.replicas]}]}],
        }))
        self.am = AlertmanagerServer(self.root / "am", self.root / "am.yml", am_port, binaries=self.binaries)
        self.am.start()
        self.prom = PrometheusServer(self.root / "prom", self.root / "prom.yml", binaries=self.binaries)
        self.prom.start()

    # ---- faults -----------------------------------------------------------------------------------
    def restart_broker(self) -> None:
        if not self.broker.stop():
            raise HarnessError("broker did not stop")
        self.broker.start()

    def pause_broker(self) -> None:
        """SIGSTOP the broker: every connection to it hangs, as when the network is cut."""
        if self.broker.pid is None:
            raise HarnessError("broker not running")
        os.kill(self.broker.pid, signal.SIGSTOP)
        self._paused = True

    def resume_broker(self) -> None:
        if self.broker.pid is not None:
            os.kill(self.broker.pid, signal.SIGCONT)
        self._paused = False

    def kill_replica(self, i: int) -> None:
        self.replicas[i].kill()

    def start_replica(self, i: int) -> None:
        self.replicas[i].start()
        self._wait_replica(self.replicas[i])

    def restart_postgres(self) -> None:
        assert self.pg is not None
        self.pg.kill_server()
        self.pg.restart()

    # ---- reading ----------------------------------------------------------------------------------
    def stored_rows(self) -> dict[str, int]:
        """Rows the service stored per device (``rows_observed`` of the fleet models' windows), read from PostgreSQL."""
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            cur = conn.execute("SELECT source, SUM(rows_observed) FROM windows WHERE model IN (%s, %s) "
                               "GROUP BY source", MODELS)
            return {str(src): int(n) for src, n in cur.fetchall()}

    def quiesce(self, devices: list[str] | None = None, timeout: float = 120.0) -> None:
        """Wait until the given sidecars (default all running ones) hold no open window and no pending spool file."""
        chosen = [s for s in self.sidecars if s.running and (devices is None or s.device in devices)]
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            busy = []
            for s in chosen:
                try:
                    h = s.health()
                except OSError as exc:
                    busy.append(f"{s.device}: {exc}")
                    continue
                last[s.device] = h
                if (h.get("open_windows") or h.get("buffered_rows") or h.get("unspooled_windows")
                        or h.get("spool", {}).get("pending")):
                    busy.append(s.device)
            if not busy:
                return
            time.sleep(0.3)
        raise HarnessError(f"sidecars not drained in {timeout:.0f} s: {busy}; last health "
                           f"{ {d: last.get(d) for d in busy[:3]} }")

    def checkpoint(self, timeout: float = 180.0) -> dict[str, int]:
        """Stop the feeder, drain every sidecar, and wait until the service stored every acknowledged row.

        Returns the acknowledged counts; raises with both tables if they do not agree in time (a shortfall
        is lost data, an excess double counting). The feeder stays stopped (so the caller can compare
        results on a still fleet); :meth:`resume` starts it again.
        """
        assert self.feeder is not None
        self.feeder.stop()
        self.quiesce(timeout=timeout)
        acked = self.feeder.snapshot()
        deadline = time.monotonic() + timeout
        stored: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                stored = self.stored_rows()
            except Exception as exc:  # noqa: BLE001 - the database may be coming back
                stored = {f"<store error: {exc}>": -1}
            # windows of no rows (a labels-only window, an upload of delayed labels) count nothing
            stored = {d: n for d, n in stored.items() if n}
            if stored == {d: n for d, n in acked.items() if n}:
                return acked
            if any(stored.get(d, 0) > n for d, n in acked.items()):
                break  # more than was acknowledged: counted twice; waiting will not fix it
            time.sleep(0.5)
        diff = {d: (acked.get(d, 0), stored.get(d, 0)) for d in sorted(set(acked) | set(stored))
                if acked.get(d, 0) != stored.get(d, 0)}
        raise HarnessError(f"stored rows differ from acknowledged rows (device: acked, stored): {diff}")

    def resume(self) -> None:
        """Start feeding again after :meth:`checkpoint`."""
        assert self.feeder is not None
        if not self.feeder.running:
            self.feeder.start()

    def firing(self) -> set[tuple[str, str]]:
        """(alertname, model) of every alert Prometheus has firing now."""
        if self.prom is None:
            return set()
        return {(a["labels"]["alertname"], a["labels"].get("model", "")) for a in self.prom.alerts()
                if a["state"] == "firing"}

    def alertmanager_alerts(self) -> set[tuple[str, str]]:
        if self.am is None:
            return set()
        return {(a["labels"]["alertname"], a["labels"].get("model", "")) for a in self.am.alerts()}

    def drift(self, model: str) -> dict[str, Any]:
        """The service's drift of everything the model received (``since=0``), as ``GET .../drift`` answers."""
        status, body = _http(self.replicas[0].port if self.replicas[0].running else self.replicas[1].port,
                             "GET", f"/v1/models/{model}/drift?version=1&since=0", timeout=30)
        if status != 200:
            raise HarnessError(f"drift of {model}: {status} {body[:300]!r}")
        return json.loads(body)

    def clean_report(self, model: str) -> Any:
        """The drift report of the acknowledged rows profiled in this process (the clean run)."""
        from driftline.profile import StreamKey, WindowProfile
        from driftline.service.settings import load_settings
        from driftline.stats.report import compare_profiles

        assert self.feeder is not None
        with self.feeder.lock:
            kept = list(self.feeder.kept[model])
        cur = WindowProfile(StreamKey.of(model, "1", "default", "all"), 0.0, 1.0)
        for cols in kept:
            cur.update({f: cols[f] for f in (*NUMERIC, "city")}, {"score": cols["score"]})
        cfg = _drift_config(load_settings(None), model)
        return compare_profiles(self.references[model], cur, cfg)

    def cpu_and_rss(self) -> dict[str, tuple[float, int]]:
        """CPU seconds and RSS bytes of each part, from /proc (the load figures)."""
        parts: dict[str, int | None] = {"broker": self.broker.pid, "postgres": self.pg._proc.pid if self.pg and  # noqa: SLF001
                                        self.pg._proc else None}  # noqa: SLF001
        for r in self.replicas:
            parts[f"replica-{r.index}"] = r.pid
        for s in self.sidecars:
            parts[s.device] = s.pid
        if self.prom is not None and self.prom._proc is not None:  # noqa: SLF001
            parts["prometheus"] = self.prom._proc.pid  # noqa: SLF001
        children = _children()
        out = {}
        for name, pid in parts.items():
            if pid:
                try:
                    out[name] = _tree_usage(pid, children)
                except OSError:
                    pass
        return out


def _drift_config(settings: Any, model: str) -> Any:
    from driftline.stats.report import DriftConfig

    ev = settings.evaluation
    return DriftConfig(alpha=ev.alpha, min_rows=ev.min_rows, drift_share_threshold=ev.drift_share_threshold,
                       thresholds={**DriftConfig().thresholds, **ev.thresholds},
                       critical_features=frozenset(ev.critical_features.get(model, [])))


def _children() -> dict[int, list[int]]:
    """ppid -> pids of every live process (one scan of /proc)."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out.setdefault(ppid, []).append(int(entry))
    return out


def _tree_usage(pid: int, children: dict[int, list[int]]) -> tuple[float, int]:
    """CPU seconds and RSS of a process and its live descendants (PostgreSQL's backends, the JVM's threads
    are in the process itself). RSS of a process tree counts shared pages once per process."""
    cpu, rss = _proc_usage(pid)
    for child in children.get(pid, []):
        try:
            c, r = _tree_usage(child, children)
        except OSError:
            continue
        cpu, rss = cpu + c, rss + r
    return cpu, rss


def _proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system, including waited-for children) and RSS of one process."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    cpu = (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tck
    rss = int(f[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` (bounded, ``tests.sidecar_support.wait_until``); raise naming ``what`` if it never holds."""
    from tests.sidecar_support import wait_until as poll

    if not poll(cond, timeout):
        raise HarnessError(f"{what}: not within {timeout:.0f} s")
