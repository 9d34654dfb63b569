"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) on loopback.

The jars come from Maven Central through ``scripts/fetch-kafka.sh`` and are cached; the broker runs
as ``java -cp 'libs/*' kafka.Kafka server.properties`` with its data, config and log in one work
directory, so a stopped broker restarts with the same data and ports.

Local use::

    python -m tests.harness.kafka start [--port 9092]   # prints the bootstrap address
    python -m tests.harness.kafka status
    python -m tests.harness.kafka stop
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.harness.errors import HarnessError, MissingDependencyError
from tests.harness.ports import free_port, port_open
from tests.harness.proc import ManagedProcess, log_tail

__all__ = ["KAFKA_VERSION", "KafkaBroker", "default_libs_dir", "ensure_kafka_libs"]

KAFKA_VERSION = "4.1.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-kafka.sh"
JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true")

_LOG4J2 = """\
status = error
name = driftline-test-broker
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d{HH:mm:ss,SSS}] %p %m (%c{1})%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.lifecycle.name = kafka.server.BrokerServer
logger.lifecycle.level = info
"""


def default_libs_dir() -> Path:
    """The jar cache: ``$DRIFTLINE_KAFKA_LIBS`` or ``~/.cache/driftline/kafka-<version>/libs``."""
    env = os.environ.get("DRIFTLINE_KAFKA_LIBS")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "driftline" / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_kafka_libs(libs: Path | None = None) -> Path:
    """Return the jar folder, fetching the jars with Maven first when the cache is incomplete."""
    libs = Path(libs) if libs is not None else default_libs_dir()
    if (libs / ".complete").exists() and (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    for tool in ("java", "mvn", "bash"):
        if shutil.which(tool) is None:
            raise MissingDependencyError(
                f"'{tool}' is not installed; Kafka jars are missing from {libs}. Install step: "
                "apt-get install -y openjdk-17-jre-headless maven && scripts/fetch-kafka.sh")
    proc = subprocess.run(["bash", str(FETCH_SCRIPT), str(libs)], capture_output=True, text=True,
                          timeout=600, check=False)
    if proc.returncode != 0:
        raise MissingDependencyError(f"scripts/fetch-kafka.sh failed:\n{proc.stdout}{proc.stderr}")
    return libs


class KafkaBroker:
    """One Kafka broker process whose data lives in ``workdir`` and survives stop/start.

    ``port`` is the client port (default: a free one); the controller gets a second free port.
    Ports and the cluster id are kept in ``workdir/broker.json`` so a new ``KafkaBroker`` on the
    same folder reuses them.
    """

    def __init__(self, workdir: Path | str, port: int | None = None, *,
                 libs: Path | None = None, start_timeout: float = 90.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Resolved now: tests scrub DRIFTLINE_* from the environment before a later restart.
        self.libs = Path(libs) if libs is not None else default_libs_dir()
        self.start_timeout = start_timeout
        state = self._load_state()
        self._port_fixed = bool(port or state.get("port"))
        self.port = int(port or state.get("port") or free_port())
        self.controller_port = int(state.get("controller_port") or free_port())
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.cluster_id = str(state.get("cluster_id") or _random_cluster_id())
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "server.properties"
        self.log_path = self.workdir / "broker.log"
        self.startup_seconds: float | None = None
        self._proc: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap_servers`` string for clients: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def start(self, *, detach: bool = False) -> KafkaBroker:
        """Start the broker (formatting storage on first use); return once clients can connect.

        ``detach=True`` lets the broker outlive this Python process (``scripts/kafka.sh``). On a
        first start with harness-chosen ports, losing a port to another process between choosing
        and binding it is retried with new ports (twice at most).
        """
        if self.running:
            return self
        libs = ensure_kafka_libs(self.libs)
        java = shutil.which("java")
        if java is None:
            raise MissingDependencyError("'java' is not installed (apt-get install -y openjdk-17-jre-headless)")
        fresh = not (self.data_dir / "meta.properties").exists()
        for attempt in range(3):
            try:
                return self._start_once(java, f"{libs}/*", detach)
            except _PortTaken:
                if not fresh or self._port_fixed or attempt == 2:
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)  # the quorum endpoint is in it
                self.port, self.controller_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _start_once(self, java: str, classpath: str, detach: bool) -> KafkaBroker:
        if port_open(self.port) or port_open(self.controller_port):
            raise _PortTaken(f"port {self.port} or {self.controller_port} is already in use; "
                             "is another broker running (scripts/kafka.sh status)?")
        self._write_config()
        log4j = f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}"
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, classpath, log4j)
        started = time.monotonic()
        self._proc = ManagedProcess([java, *JVM_OPTS, log4j, "-cp", classpath, "kafka.Kafka",
                                     str(self.config_path)], self.log_path, cwd=self.workdir,
                                    detach=detach)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc.start()
        try:
            self._wait_ready(started, log_offset)
        except BaseException:
            self._proc.kill()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (controlled shutdown), SIGKILL after ``timeout``; True when it stopped cleanly."""
        if self._proc is None:
            return True
        return self._proc.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the broker, as in a crash; ``start()`` recovers from the same data."""
        if self._proc is not None:
            self._proc.kill()

    def restart(self) -> KafkaBroker:
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
        """Create a topic (replication 1) and wait until every partition has a leader.

        Creating a topic that already exists is not an error.
        """
        from kafka.errors import TopicAlreadyExistsError

        with self.admin() as admin:
            try:
                admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                                    timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                pass
            admin.wait_for_topics([name], timeout_ms=int(timeout * 1000))

    def admin(self):  # -> kafka.KafkaAdminClient (imported lazily: kafka-python is an extra)
        """A kafka-python admin client on this broker; close it (use it as a context manager)."""
        from kafka import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="driftline-test-harness",
                                request_timeout_ms=10_000, bootstrap_timeout_ms=10_000)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's log (stdout and stderr, log4j2 at WARN)."""
        return log_tail(self.log_path, lines)

    def _wait_ready(self, started: float, log_offset: int) -> None:
        from kafka.errors import KafkaError

        deadline = started + self.start_timeout
        last_error = "port not open yet"
        while time.monotonic() < deadline:
            if self._proc is None or not self._proc.running:
                code = self._proc.returncode if self._proc is not None else None
                if b"Address already in use" in self.log_path.read_bytes()[log_offset:]:
                    raise _PortTaken(f"Kafka broker lost port {self.port} or {self.controller_port} "
                                     f"to another process; log {self.log_path}:\n{self.log_tail()}")
                raise HarnessError(f"Kafka broker exited with code {code} during start; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            if port_open(self.port):
                try:
                    with self.admin() as admin:
                        if admin.describe_cluster().get("brokers"):
                            return
                        last_error = "no registered broker in metadata yet"
                except (KafkaError, OSError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise HarnessError(f"Kafka broker on {self.bootstrap} not ready after {self.start_timeout:.0f}s "
                           f"({last_error}); log {self.log_path}:\n{self.log_tail()}")

    def _format(self, java: str, classpath: str, log4j: str) -> None:
        argv = [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", log4j, "-cp", classpath,
                "kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={self.cluster_id}",
                f"--config={self.config_path}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"kafka StorageTool format failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")

    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a kill() the restarted broker stays fenced until its old registration's session
            # expires (default 9 s); 5 s with 1 s heartbeats keeps that short but tolerant of load.
            "broker.session.timeout.ms": "5000",
            "broker.heartbeat.interval.ms": "1000",
            "log.flush.interval.messages": "1",
        }
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        self.config_path.write_text("# written by tests/harness/kafka.py\n" + text)
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        state = {"port": self.port, "controller_port": self.controller_port,
                 "cluster_id": self.cluster_id}
        (self.workdir / "broker.json").write_text(json.dumps(state, indent=2) + "\n")

    def _load_state(self) -> dict[str, object]:
        try:
            return dict(json.loads((self.workdir / "broker.json").read_text()))
        except (OSError, ValueError):
            return {}


class _PortTaken(HarnessError):
    """The broker could not bind its port: someone else took it."""


def _random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's Uuid).

    Like Kafka's ``Uuid.randomUuid`` it never starts with '-', which a command line would take for
    an option (one id in 64 would).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


if __name__ == "__main__":
    from tests.harness.kafka_cli import main

    sys.exit(main())
