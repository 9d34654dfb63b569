"""``driftline sidecar --config FILE``: run the edge sidecar until SIGTERM."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sidecar",
        help="run the edge sidecar: capture, window, spool and ship observations",
        description="Run the edge sidecar next to a model server: the local observe API, the optional "
        "Open Inference Protocol v2 proxy, tumbling windows, the crash-safe spool and delivery over HTTP "
        "or Kafka. Settings come from the YAML file, overridden by DRIFTLINE_* environment variables "
        "(nested keys with __, e.g. DRIFTLINE_SPOOL__MAX_BYTES=32MiB). SIGTERM flushes the open windows "
        "to the spool and exits 0. The spool defaults to the sidecar's state directory: "
        "$XDG_STATE_HOME/driftline/sidecar/spool when XDG_STATE_HOME is set, else /var/lib/driftline/sidecar/spool "
        "as root, else ~/.local/state/driftline/sidecar/spool (set spool.path to choose; GET /healthz shows it). "
        "GET /healthz says \"degraded\" with a reason while deliveries fail.",
    )
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings file (see docs/sidecar.md)")
    p.add_argument("--check", action="store_true",
                   help="validate the settings, print them as JSON (secrets hidden) and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from driftline.edge_sidecar.settings import load_settings

    settings = load_settings(args.config)
    if args.check:
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
        return 0
    from driftline.edge_sidecar.runner import Sidecar

    return Sidecar(settings).run()
