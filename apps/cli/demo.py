"""``driftline demo``: watch a simulated fleet drift, a canary get judged and a retraining webhook fire."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run a simulated edge fleet against a local service (no Kafka, Prometheus or Grafana)",
        description="Starts the service on the embedded defaults (SQLite, HTTP transport) and a fleet of "
        "simulated camera devices, each with a real digits model and the real sidecar. A third of the "
        "devices get a new camera part-way (input drift and prediction shift on those devices only); "
        "a canary model version takes part of the traffic; persistent drift fires a signed retraining "
        "webhook at a local receiver. Prints the URLs to open as soon as the service answers and ends with a "
        "summary; Ctrl-C or SIGTERM ends the traffic early, still prints the summary (exit 130 / 143) and "
        "removes the temporary folder. A port in use is one line and exit 2.")
    p.add_argument("--devices", type=int, default=6, help="number of devices (default 6)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    p.add_argument("--port", type=int, default=8000, help="service port (default 8000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--forever", action="store_true", help="keep running until Ctrl-C or SIGTERM (then the summary)")
    p.add_argument("--bad-canary", action="store_true", help="make the canary version a regressed model")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.add_argument("--window", type=float, default=2.0, help="sidecar window length in seconds (default 2)")
    p.add_argument("--data-dir", help="keep the database and spools here (default: a temporary folder)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from driftline.errors import ConfigError, MissingExtraError

    if args.devices < 2 or args.duration <= 0 or args.window <= 0:
        raise ConfigError("--devices must be >= 2, --duration and --window > 0")
    try:
        import fastapi  # noqa: F401
        import sklearn  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(exc.name or "scikit-learn", "demo") from None
    from ..demo.runner import DemoOptions, run_demo

    return run_demo(DemoOptions(devices=args.devices, duration=args.duration, port=args.port, seed=args.seed,
                                forever=args.forever, bad_canary=args.bad_canary, json=args.json,
                                window_seconds=args.window, data_dir=args.data_dir))
