"""Spool and shipper inside the application process: ``Monitor.configure(..., service_url=...)``, no sidecar.

The same crash-safe spool and at-least-once shipper as ``driftline sidecar``, owned by the monitor and
opened by :meth:`Monitor.start`. Each process takes its own spool directory under ``spool_dir`` (``0``, ``1``, ... : the first one no
live process holds), so several workers of one app never share files, and a restarted worker picks
up and delivers what a dead one left behind.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from driftline import __version__
from driftline.profile import WindowProfile
from driftline.settings import state_dir

from .errors import SpoolError
from .resources import footprint
from .shipper import Shipper
from .spool import Spool
from .transport import transport_from_url

__all__ = ["EmbeddedDelivery", "default_spool_dir", "producer_map"]

log = logging.getLogger("driftline.sidecar.embedded")
MAX_SLOTS = 64


def default_spool_dir() -> Path:
    """The SDK's spool root: ``<state>/sdk/spool`` (see :func:`driftline.settings.state_dir`)."""
    return state_dir("sdk") / "spool"


def producer_map(name: str, device: str, spool: Spool) -> dict[str, str]:
    """The envelope producer map: who sent it, and the backlog and footprint of the sender right now."""
    st = spool.stats()
    fp = footprint()
    return {
        "name": name,
        "version": __version__,
        "device": device,
        "spool_pending": str(st.pending),
        "spool_oldest_age_s": f"{st.oldest_age_s:.1f}",
        "rss_bytes": str(fp.rss_bytes),
        "cpu_seconds": f"{fp.cpu_seconds:.3f}",
        "started_at": f"{fp.started_at:.2f}",
        "sampled_at": f"{time.time():.3f}",  # when the footprint was read: the time axis of its trend
    }


class EmbeddedDelivery:
    """A spool slot, a transport from a URL (``http(s)://`` or ``kafka://host:port/topic``) and a shipper."""

    def __init__(self, url: str, *, token: str | None = None, spool_dir: str | Path | None = None,
                 max_bytes: int = 64 * 1024 * 1024, device: str = "") -> None:
        transport = transport_from_url(url, token=token)
        base = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        self.device = device
        self.spool = self._open_slot(base, max_bytes)
        self.shipper = Shipper(self.spool, transport, producer=lambda: producer_map(
            "driftline-sdk", self.device, self.spool)).start()

    def _open_slot(self, base: Path, max_bytes: int) -> Spool:
        last: SpoolError | None = None
        for slot in range(MAX_SLOTS):
            try:
                return Spool(base / str(slot), max_bytes, producer=lambda: {"name": "driftline-sdk",
                                                                           "device": self.device})
            except SpoolError as exc:
                last = exc
        raise SpoolError(f"no free spool slot under {base} ({MAX_SLOTS} in use): {last}")

    def sink(self, profile: WindowProfile, reason: str) -> None:
        self.spool.put(profile)
        self.shipper.wake()

    def close(self, grace: float = 2.0) -> bool:
        """Give the shipper ``grace`` seconds, stop it and release the slot; True when nothing is left."""
        empty = self.shipper.drain(grace) if grace > 0 else self.spool.stats().pending == 0
        self.shipper.stop()
        self.spool.close()
        if not empty:
            log.info("%d windows stay in %s for the next start", self.spool.stats().pending, self.spool.root)
        return empty
