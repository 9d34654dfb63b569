"""``driftline replay DATA --model M --version V --to URL``: feed a log file through the sidecar pipeline.

The same windowing, spool and transport as a live sidecar: backfill of historical prediction logs
(``--time-column``: rows are windowed by their own time, and the data's clock decides when a window
closes) or load generation (no time column: rows are stamped now). Exit 0 when every window was
delivered, 2 on input the user can fix (unreadable file, bad time column, a receiver that rejects
the envelopes), 1 when the receiver could not be reached in time (windows stay in the spool).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from driftline.datafiles import DataFile
from driftline.errors import DataFileError, DriftlineError

from ._args import add_profile_config_args, column_list, profile_config_from_args
from .progress import ProgressBar

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a CSV, Parquet or JSON Lines log through windowing, spool and transport",
        description="Feed a data file through the sidecar's windowing, spool and transport: backfill "
        "historical prediction logs or generate load. --to http://host:port posts to the service's "
        "/v1/ingest; --to kafka://host:port/topic produces to Kafka.",
    )
    p.add_argument("data", help="a .csv, .parquet or .jsonl file")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--version", required=True, dest="model_version", help="model version")
    p.add_argument("--variant", default="default", help="traffic variant, e.g. baseline or canary")
    p.add_argument("--device", default="replay", help="device id stamped on the windows (default: replay)")
    p.add_argument("--time-column", metavar="C",
                   help="column with event times (epoch seconds or ISO-8601); without it rows are stamped now")
    p.add_argument("--window", type=float, default=60.0, metavar="SECONDS", help="window length (default 60)")
    p.add_argument("--lateness", type=float, default=None, metavar="SECONDS",
                   help="lateness allowance for out-of-order rows (default: one window)")
    p.add_argument("--max-rows", type=int, default=1_000_000, help="close a window at this many rows")
    p.add_argument("--exclude", type=column_list, default=[], metavar="COLS", help="columns to ignore")
    p.add_argument("--to", required=True, metavar="URL", help="http://host:port or kafka://host:port/topic")
    p.add_argument("--token", help="bearer token for the HTTP ingest endpoint")
    p.add_argument("--spool", metavar="DIR", help="spool directory (default: a new temporary directory)")
    p.add_argument("--spool-max-bytes", type=int, default=256 * 1024 * 1024, metavar="N")
    p.add_argument("--batch-rows", type=int, default=65536, help="rows read per batch")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for the receiver after the last row (default 120)")
    add_profile_config_args(p)
    p.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from driftline.edge_sidecar.errors import SidecarError
    from driftline.edge_sidecar.monitor import Monitor
    from driftline.edge_sidecar.shipper import Shipper
    from driftline.edge_sidecar.spool import Spool
    from driftline.edge_sidecar.transport import transport_from_url

    if not getattr(args, "verbose", 0):  # the summary line reports drops and rejections; -v shows the detail
        logging.getLogger("driftline.sidecar").setLevel(logging.CRITICAL)
    if not args.window > 0 or args.batch_rows < 1 or args.max_rows < 1:
        raise DataFileError("--window, --batch-rows and --max-rows must be positive")
    data = DataFile(args.data)
    transport = transport_from_url(args.to, token=args.token)
    spool_dir = Path(args.spool) if args.spool else Path(tempfile.mkdtemp(prefix="driftline-replay-"))
    spool = Spool(spool_dir, args.spool_max_bytes, producer=lambda: {"name": "driftline-replay",
                                                                     "device": args.device})
    shipper = Shipper(spool, transport, backoff_initial=0.2, backoff_max=5.0).start()
    watermark = [-math.inf]
    clock = (lambda: watermark[0]) if args.time_column else time.time
    outputs, skip = set(args.output), set(args.exclude)

    def sink(profile, reason):  # noqa: ANN001 - the monitor's Sink signature
        spool.put(profile)
        shipper.wake()

    # strict and driven by hand (tick() per batch, the data's clock): no thread, nothing to start
    monitor = Monitor.configure(
        model=args.model, model_version=args.model_version, variant=args.variant, device=args.device,
        profile=profile_config_from_args(args), window_seconds=args.window, max_rows=args.max_rows,
        lateness_seconds=args.window if args.lateness is None else args.lateness, strict=True, background=False,
        sink=sink, clock=clock)
    rows = 0
    seen: set[str] = set()
    try:
        with ProgressBar(data.total, f"replaying {data.path.name}", unit=data.unit) as bar:
            for cols, done in data.batches(args.batch_rows):
                n = len(next(iter(cols.values()))) if cols else 0
                seen.update(cols)
                times = _times(cols, args.time_column, rows) if args.time_column else None
                clock_rows = None
                if times is not None and times.size:
                    # The data's own clock: each row is judged against the newest time seen so far.
                    clock_rows = np.maximum(np.maximum.accumulate(times), watermark[0])
                    watermark[0] = float(clock_rows[-1])
                feats = {k: v for k, v in cols.items() if k not in outputs and k not in skip}
                outs = {k: v for k, v in cols.items() if k in outputs}
                try:
                    monitor.observe(feats, outs or None, event_time=times, processing_time=clock_rows)
                except SidecarError as exc:
                    raise DataFileError(f"{data.path}: rows {rows + 1}-{rows + n}: {exc}") from None
                monitor.tick()
                rows += n
                bar.update_to(done)
                if shipper.rejected:
                    break  # the receiver refuses our envelopes (a bad token, say): no point reading on
        missing = outputs - seen
        if missing and rows:
            raise DataFileError(f"{data.path}: output column(s) not found: {', '.join(sorted(missing))}")
        monitor.close()
        delivered = shipper.drain(args.timeout) if not shipper.rejected else False
    finally:
        shipper.stop()
    st = spool.stats()
    snap = monitor.snapshot()
    closed = sum(snap["windows_closed"].values())
    if st.rejected:
        raise DriftlineError(f"the receiver at {args.to} rejected the envelopes ({shipper.last_rejection}); "
                             f"refused windows are in {spool.rejected_dir}, the rest in {spool.pending_dir}")
    if not delivered:
        print(f"driftline: error: {st.pending} windows ({st.pending_rows} rows) not delivered to {args.to} "
              f"within {args.timeout:.0f}s ({shipper.last_error}); they stay in {spool_dir}", file=sys.stderr)
        return 1
    if not args.spool:
        _remove_tree(spool_dir)
    dropped = f", DROPPED {st.dropped} windows ({st.dropped_rows} rows): spool too small" if st.dropped else ""
    print(f"replayed {rows} rows of {data.path.name} as {closed} windows to {args.to} "
          f"(late rows {snap['late_rows']}, windows merged in the spool {st.merged}{dropped})")
    return 0


def _times(cols: dict[str, np.ndarray], column: str, offset: int) -> np.ndarray:
    from driftline.edge_sidecar.inputs import event_time_array

    if column not in cols:
        raise DataFileError(f"time column {column!r} not found (columns: {', '.join(sorted(cols))})")
    values = cols.pop(column)
    times = event_time_array(values, len(values))
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        first = int(bad[0])
        raise DataFileError(f"time column {column!r}: {bad.size} values are not timestamps "
                            f"(first at data row {offset + first + 1}: {values[first]!r})")
    return times


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
