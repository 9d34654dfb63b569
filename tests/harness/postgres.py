"""A throwaway PostgreSQL server on loopback, initialised in a temporary folder.

PostgreSQL refuses to run as root. When the tests run as root (CI does), the server runs as the
``postgres`` system user (created by the Debian package), falling back to ``nobody``; its folder is
then created by the harness outside pytest's root-only temp tree and removed on stop.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.errors import HarnessError, MissingDependencyError
from tests.harness.ports import free_port
from tests.harness.proc import ManagedProcess

__all__ = ["PostgresServer", "find_pg_bin"]

_PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
                      "/usr/lib/postgresql/15/bin")


def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``postgres`` (``$DRIFTLINE_PG_BIN`` overrides)."""
    candidates = [os.environ.get("DRIFTLINE_PG_BIN", ""), *_PG_BIN_CANDIDATES]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "postgres").is_file():
            return Path(folder)
    raise MissingDependencyError("PostgreSQL server binaries (initdb, postgres) not found in "
                                 f"{', '.join(_PG_BIN_CANDIDATES)}; install step: "
                                 "apt-get install -y postgresql (scripts/test.sh does it)")


def _run_as() -> str | None:
    """The user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise MissingDependencyError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer:
    """One PostgreSQL cluster: trust auth, TCP on 127.0.0.1 only, unix socket in its own folder.

    ``dsn`` connects as the superuser ``driftline`` to the database ``postgres``;
    ``new_database(name)`` creates a fresh database and returns its DSN.
    """

    def __init__(self, workdir: Path | str, port: int | None = None, *, start_timeout: float = 60.0,
                 root_parent: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.root_parent = root_parent  # where the cluster lives (a small tmpfs for the disk-full tests)
        self._port_fixed = port is not None
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.user = "driftline"
        self.run_as = _run_as()
        self.startup_seconds: float | None = None
        self._root: Path | None = None
        self._proc: ManagedProcess | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """The libpq URL of ``database`` on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        if self._root is None:
            raise HarnessError("PostgreSQL server not started")
        return self._root / "data"

    def start(self) -> PostgresServer:
        """initdb (first time) and start the server; return once it accepts connections."""
        if self._proc is not None and self._proc.running:
            return self
        bin_dir = find_pg_bin()
        started = time.monotonic()
        if self._root is None:
            self._root = self._make_root()
            self._initdb(bin_dir)
        for attempt in range(3):
            log = self._root / "postgres.log"
            log_offset = log.stat().st_size if log.exists() else 0
            argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self._root}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "shared_buffers=32MB", "-c", "max_connections=100", "-c", "logging_collector=off"]
            # SIGINT is PostgreSQL's "fast" shutdown: SIGTERM would wait for every client to leave.
            self._proc = ManagedProcess(argv, log, user=self.run_as, stop_signal=signal.SIGINT, env=self._env())
            self._proc.start()
            try:
                self._wait_ready(bin_dir, started)
                break
            except HarnessError:
                lost_port = b"could not bind" in log.read_bytes()[log_offset:]
                if not lost_port or self._port_fixed or attempt == 2:
                    raise
                self.port = free_port()  # someone took the port between choosing and binding it
        self.startup_seconds = time.monotonic() - started
        return self

    def kill_server(self, timeout: float = 30.0) -> None:
        """Stop the server but keep its cluster, so :meth:`restart` brings the same data back."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def restart(self) -> PostgresServer:
        """Start the stopped cluster again on the same port."""
        fixed, self._port_fixed = self._port_fixed, True
        try:
            return self.start()
        finally:
            self._port_fixed = fixed

    def new_database(self, name: str) -> str:
        """Create database ``name`` (plain identifier) and return its DSN."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name must be a plain identifier, got {name!r}")
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGKILL after ``timeout``) and removal of the cluster's folder."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.tail(lines) if self._proc is not None else ""

    def _make_root(self) -> Path:
        if self.run_as is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="pg-", dir=self.root_parent or self.workdir))
        # pytest's temp tree is root-only (0700): the server user could not enter it.
        root = Path(tempfile.mkdtemp(prefix="driftline-pg-", dir=self.root_parent))
        info = pwd.getpwnam(self.run_as)
        os.chown(root, info.pw_uid, info.pw_gid)
        return root

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DRIFTLINE_"))}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
        if self.run_as is not None:
            env["HOME"] = str(self._root)
        return env

    def _initdb(self, bin_dir: Path) -> None:
        argv = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                              user=self.run_as, group=self.run_as, env=self._env(), cwd=self._root)
        if proc.returncode != 0:
            raise HarnessError(f"initdb failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")

    def _wait_ready(self, bin_dir: Path, started: float) -> None:
        deadline = started + self.start_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if not self._proc.running:
                raise HarnessError(f"postgres exited with code {self._proc.returncode} during start:\n"
                                   f"{self._proc.tail()}")
            ready = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                                    str(self.port), "-U", self.user, "-t", "2"], check=False,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        if self._proc is not None:
            self._proc.kill()
        raise HarnessError(f"postgres on 127.0.0.1:{self.port} not ready after {self.start_timeout:.0f}s:\n"
                           f"{self.log_tail()}")
