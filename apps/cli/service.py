"""``driftline service``: run the cloud service (embedded defaults: SQLite, HTTP ingest, port 8000)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from ._net import bind_listener

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="run the cloud service",
                       description="Run the Driftline service. Settings come from --config (YAML), then "
                       "DRIFTLINE_* environment variables; see service/config.example.yaml. Prints its URL "
                       "once it answers; a port in use is one line and exit 2. SIGTERM or Ctrl-C stops it.")
    p.add_argument("--config", help="YAML settings file")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="listen beyond loopback without api_token (writes open to anyone who reaches the port)")
    p.add_argument("--check", action="store_true", help="validate the settings, print them, and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from driftline.errors import MissingExtraError

    try:
        import uvicorn

        from driftline.service.app import create_app
        from driftline.service.settings import exposure_problem, load_settings
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "service") from None
    settings = load_settings(args.config, host=args.host, port=args.port, insecure=args.insecure)
    problem = exposure_problem(settings) or settings.kafka.security_problem()
    if problem is not None:
        print(f"driftline service: {problem}", file=sys.stderr)
        return 2
    if args.check:
        print(settings.model_dump_json(indent=2))
        return 0
    if settings.insecure and settings.api_token is None:
        print(f"driftline service: WARNING: --insecure: listening on {settings.host} with no api_token; anyone who "
              "reaches the port can write windows, references and canaries", file=sys.stderr, flush=True)
    if settings.log_format == "json":
        import logging

        from driftline.service.observability import configure_logging

        configure_logging("json", logging.getLogger().level)
    sock = bind_listener(settings.host, settings.port)  # a busy port: one line, exit 2, before any URL
    log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                           log_level="warning", timeout_graceful_shutdown=10, log_config=log_config))
    from driftline.service.process import tune_gc

    tune_gc(settings.gc_young_objects)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    announce = threading.Thread(target=_announce, daemon=True, args=(
        server, f"driftline service on http://{host}:{settings.port} (store {settings.database_url.split('@')[-1]}, "
        f"kafka {'on' if settings.kafka.enabled else 'off'}); status page /, API /docs, metrics /metrics"))
    announce.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


def _announce(server: Any, line: str) -> None:
    """Print the URL once the server answers on it (not before, so a failed start never announces one)."""
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        print(line, file=sys.stderr, flush=True)
