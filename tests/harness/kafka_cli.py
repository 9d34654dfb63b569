"""``python -m tests.harness.kafka start|stop|status|fetch``: a Kafka broker for local use.

``scripts/kafka.sh`` calls this. The broker is detached (it outlives the command); its pid, config,
data and log live in ``--state-dir`` (default ``<repo>/.cache/kafka``, gitignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.harness.errors import HarnessError
from tests.harness.kafka import REPO_ROOT, KafkaBroker, ensure_kafka_libs
from tests.harness.proc import pid_alive, terminate_pid

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``start`` / ``stop`` / ``status`` of a broker for local use; state in ``--state-dir``."""
    parser = argparse.ArgumentParser(prog="python -m tests.harness.kafka", description=main.__doc__)
    parser.add_argument("action", choices=["start", "stop", "status", "fetch"])
    parser.add_argument("--port", type=int, default=None, help="client port (default: free port)")
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".cache" / "kafka",
                        help="pid, config, data and log (default: <repo>/.cache/kafka)")
    args = parser.parse_args(argv)
    pid_file = args.state_dir / "broker.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    alive = pid is not None and pid_alive(pid)
    if args.action == "fetch":
        print(ensure_kafka_libs())
        return 0
    if args.action == "status":
        if not alive:
            print("kafka: not running")
            return 1
        print(f"kafka: running, pid {pid}, bootstrap {KafkaBroker(args.state_dir / 'broker').bootstrap}")
        return 0
    if args.action == "stop":
        if alive and pid is not None:
            clean = terminate_pid(pid, timeout=30)
            print("kafka: stopped" if clean else "kafka: killed after 30s")
        else:
            print("kafka: not running")
        pid_file.unlink(missing_ok=True)
        return 0
    if alive:
        print(KafkaBroker(args.state_dir / "broker").bootstrap)
        return 0
    broker = KafkaBroker(args.state_dir / "broker", port=args.port)
    try:
        broker.start(detach=True)
    except HarnessError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    pid_file.write_text(f"{broker.pid}\n")
    print(f"kafka: started in {broker.startup_seconds:.1f}s, pid {broker.pid}, "
          f"data {broker.data_dir}, log {broker.log_path}", file=sys.stderr)
    print(broker.bootstrap)
    return 0
