"""The crash-safe disk spool: closed windows wait here, as envelope files, until a receiver confirms.

Layout under the spool directory::

    pending/   000000000042-<stream>-<id>.dle        one window per envelope file, oldest first
               000000000042-<stream>-<id>.tried.dle  sent once with an unknown outcome
               <file>.merge                          a merge in progress (crash recovery)
    tmp/       files being written (emptied at start)
    rejected/  envelopes the receiver refused for good, and files that do not decode, with a .why

Guarantees:

* A window is written with tmp file + fsync + rename + directory fsync before :meth:`Spool.put`
  returns, so a crash leaves either the whole file or none of it; it is deleted only by
  :meth:`Spool.confirm`.
* The pending bytes stay under ``max_bytes``. To make room the spool merges the two oldest windows
  of one stream into one file (profiles merge with exact totals); only when no merge can make room
  does it drop the oldest window, counting windows and rows dropped and logging it. Windows that
  were sent with an unknown outcome (``tried``) are never merged: the receiver may already hold
  their envelope id, and a merged copy under a new id would count those rows twice.
* A merge writes the merged file and an intent file naming its sources before deleting them; at
  start-up an intent whose merged file exists finishes the merge, one without it is discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from driftline.errors import DriftlineError
from driftline.profile import StreamKey, WindowProfile
from driftline.wire import Envelope, decode_envelope, decode_profile, encode_envelope

from .errors import SpoolError
from .fsutil import atomic_write, fsync_dir
from .ratelog import RateLimitedLog

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["Lease", "Spool", "SpoolEntry", "SpoolStats"]

log = logging.getLogger("driftline.sidecar.spool")
SUFFIX = ".dle"
TRIED = ".tried"
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class SpoolEntry:
    """One pending window file."""

    name: str
    seq: int
    stream: StreamKey
    size: int
    rows: int
    envelope_id: str
    spooled_at: float
    tried: bool = False
    leased: bool = False


@dataclass(frozen=True, slots=True)
class Lease:
    """A window handed to the shipper: its file name, envelope bytes and what the transport needs."""

    name: str
    data: bytes
    envelope_id: str
    model: str
    rows: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    bytes: int
    limit: int
    pending: int
    pending_rows: int
    oldest_age_s: float
    written: int
    merged: int
    dropped: int
    dropped_rows: int
    rejected: int


class Spool:
    """Pending windows on disk with a byte bound; thread-safe (one lock; I/O is per window)."""

    def __init__(
        self,
        path: str | Path,
        max_bytes: int,
        *,
        fsync: bool = True,
        producer: Callable[[], dict[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
        rejected_max_files: int = 1000,
        compress: bool | None = None,
    ) -> None:
        self.root = Path(path)
        self.compress = compress  # encode_envelope's: None compresses when it saves a quarter
        self.max_bytes = int(max_bytes)
        self.fsync = fsync
        self.producer = producer or (lambda: {"name": "driftline-sidecar"})
        self.clock = clock
        self.rejected_max_files = rejected_max_files
        self.pending_dir = self.root / "pending"
        self.tmp_dir = self.root / "tmp"
        self.rejected_dir = self.root / "rejected"
        self._lock = threading.RLock()
        self._ratelog = RateLimitedLog(log)
        self._entries: dict[str, SpoolEntry] = {}
        self._bytes = 0
        self._seq = 0
        self.written = self.merged = self.dropped = self.dropped_rows = self.rejected = 0
        self._lock_fd: int | None = None
        try:
            for d in (self.pending_dir, self.tmp_dir, self.rejected_dir):
                d.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            self._recover()
        except OSError as exc:
            self.close()
            raise SpoolError(f"cannot use spool directory {self.root}: {exc.strerror or exc}") from exc

    def _take_lock(self) -> None:
        """One process per spool directory: two writers would reuse sequence numbers and merge each
        other's files. The kernel drops the lock when the process dies, even by SIGKILL."""
        if fcntl is None:  # pragma: no cover - not POSIX
            return
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolError(f"spool directory {self.root} is in use by another process") from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the directory lock (files stay; a new Spool on the same path picks them up)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- start-up ------------------------------------------------------------------------------
    def _recover(self) -> None:
        for f in self.tmp_dir.iterdir():
            f.unlink(missing_ok=True)
        for intent in sorted(self.pending_dir.glob("*.merge")):
            target = self.pending_dir / intent.name[: -len(".merge")]
            if target.exists():
                for src in json.loads(intent.read_text())["sources"]:
                    (self.pending_dir / src).unlink(missing_ok=True)
            intent.unlink()
        fsync_dir(self.pending_dir, self.fsync)
        for f in sorted(self.pending_dir.glob("*" + SUFFIX)):
            try:
                data = f.read_bytes()
                env = decode_envelope(data, max_bytes=MAX_FILE_BYTES)
                if len(env.profiles) != 1:
                    raise SpoolError(f"holds {len(env.profiles)} profiles, expected 1")
                seq = int(f.name.split("-", 1)[0])
            except (DriftlineError, ValueError, OSError) as exc:
                self._move_aside(f, f"unreadable at start-up: {exc}")
                continue
            prof = env.profiles[0]
            e = SpoolEntry(f.name, seq, prof.key, len(data), prof.rows, env.envelope_id, f.stat().st_mtime,
                           tried=f.name.endswith(TRIED + SUFFIX))
            self._add(e)
            self._seq = max(self._seq, seq)
        if self._entries:
            log.info("spool %s: %d pending windows (%d bytes) from a previous run",
                     self.root, len(self._entries), self._bytes)

    # ---- writing -------------------------------------------------------------------------------
    def put(self, profile: WindowProfile) -> str | None:
        """Write one closed window durably; returns its file name (None if it had to be dropped)."""
        with self._lock:
            data, env_id = self._encode(profile)
            if len(data) > self.max_bytes:
                self._count_drop(1, profile.rows, f"a {len(data)}-byte window exceeds the whole spool bound")
                return None
            while self._bytes + len(data) > self.max_bytes and self._merge_oldest_pair():
                pass
            if self._bytes + len(data) > self.max_bytes:
                absorbed = self._absorb(profile)
                if absorbed is not None:
                    return absorbed
            while self._bytes + len(data) > self.max_bytes:
                victims = [e for e in self._sorted() if not e.leased]
                if not victims:
                    self._count_drop(1, profile.rows, "spool is full of windows being sent")
                    return None
                self._drop(victims[0])
            return self._write(profile.key, data, env_id, profile.rows, self.clock())

    def _encode(self, profile: WindowProfile) -> tuple[bytes, str]:
        env = Envelope([profile], producer=self.producer())
        return encode_envelope(env, compress=self.compress), env.envelope_id

    def _write(self, key: StreamKey, data: bytes, env_id: str, rows: int, spooled_at: float,
               seq: int | None = None, replaces: list[str] | None = None) -> str:
        if seq is None:
            self._seq += 1
            seq = self._seq
        digest = hashlib.blake2b(repr(key).encode(), digest_size=4).hexdigest()
        name = f"{seq:012d}-{digest}-{env_id[:8]}{SUFFIX}"
        try:
            if replaces:
                intent = json.dumps({"sources": replaces}).encode()
                atomic_write(self.tmp_dir, self.pending_dir, name + ".merge", intent, self.fsync)
            atomic_write(self.tmp_dir, self.pending_dir, name, data, self.fsync, mtime=spooled_at)
            if replaces:
                for src in replaces:
                    (self.pending_dir / src).unlink(missing_ok=True)
                    self._remove(src)
                fsync_dir(self.pending_dir, self.fsync)
                (self.pending_dir / (name + ".merge")).unlink()
        except OSError as exc:
            raise SpoolError(f"cannot write {name} in {self.pending_dir}: {exc.strerror or exc}") from exc
        self._add(SpoolEntry(name, seq, key, len(data), rows, env_id, spooled_at))
        self.written += 1
        return name

    # ---- making room ---------------------------------------------------------------------------
    def _mergeable(self) -> dict[StreamKey, list[SpoolEntry]]:
        groups: dict[StreamKey, list[SpoolEntry]] = {}
        for e in self._sorted():
            if not e.leased and not e.tried:
                groups.setdefault(e.stream, []).append(e)
        return groups

    def _merge_oldest_pair(self) -> bool:
        """Merge the two oldest mergeable windows of the stream that has the oldest such pair."""
        pairs = sorted((g[0].seq, g[0], g[1]) for g in self._mergeable().values() if len(g) >= 2)
        for _, a, b in pairs:
            try:
                merged = self._load(a).merge(self._load(b))
            except (DriftlineError, OSError) as exc:
                log.warning("cannot merge spooled windows %s and %s: %s", a.name, b.name, exc)
                continue
            data, env_id = self._encode(merged)
            if len(data) >= a.size + b.size:
                continue
            self._write(a.stream, data, env_id, merged.rows, min(a.spooled_at, b.spooled_at), seq=a.seq,
                        replaces=[a.name, b.name])
            self.merged += 1
            self._ratelog.log(logging.INFO, "merge", "spool full: merged windows %s and %s (%d rows; %d merges "
                              "so far)", a.name, b.name, merged.rows, self.merged)
            return True
        return False

    def _absorb(self, profile: WindowProfile) -> str | None:
        """Merge the incoming window into the oldest mergeable pending window of its stream."""
        for e in self._mergeable().get(profile.key, []):
            try:
                merged = self._load(e).merge(profile)
            except (DriftlineError, OSError):
                continue
            data, env_id = self._encode(merged)
            if self._bytes - e.size + len(data) > self.max_bytes:
                continue
            name = self._write(e.stream, data, env_id, merged.rows, e.spooled_at, seq=e.seq, replaces=[e.name])
            self.merged += 1
            return name
        return None

    def _drop(self, e: SpoolEntry) -> None:
        (self.pending_dir / e.name).unlink(missing_ok=True)
        self._remove(e.name)
        self._count_drop(1, e.rows, f"dropped spooled window {e.name}: merging could not make room")

    def _count_drop(self, windows: int, rows: int, why: str) -> None:
        self.dropped += windows
        self.dropped_rows += rows
        self._ratelog.error("drop", "%s (%d rows lost; %d windows, %d rows dropped so far)", why, rows,
                            self.dropped, self.dropped_rows)

    # ---- the shipper's side ----------------------------------------------------------------------
    def lease(self, n: int) -> list[Lease]:
        """Hand out up to ``n`` of the oldest windows not already out; they stay on disk."""
        out: list[Lease] = []
        with self._lock:
            for e in self._sorted():
                if len(out) >= n:
                    break
                if e.leased:
                    continue
                try:
                    data = (self.pending_dir / e.name).read_bytes()
                except OSError as exc:
                    log.error("spooled window %s vanished: %s", e.name, exc)
                    self._remove(e.name)
                    continue
                e.leased = True
                out.append(Lease(e.name, data, e.envelope_id, e.stream.model, e.rows))
        return out

    def confirm(self, name: str) -> None:
        """The receiver has it: delete the file."""
        with self._lock:
            (self.pending_dir / name).unlink(missing_ok=True)
            self._remove(name)

    def release(self, name: str, *, tried: bool = False) -> None:
        """Delivery failed; keep the file. ``tried``: the receiver may have it (never merge it then)."""
        with self._lock:
            e = self._entries.get(name)
            if e is None:
                return
            e.leased = False
            if tried and not e.tried:
                new = name[: -len(SUFFIX)] + TRIED + SUFFIX
                try:
                    os.replace(self.pending_dir / name, self.pending_dir / new)
                    fsync_dir(self.pending_dir, self.fsync)
                except OSError as exc:
                    log.error("cannot mark %s as tried: %s", name, exc)
                    return
                self._remove(name)
                self._add(replace(e, name=new, tried=True))

    def reject(self, name: str, reason: str) -> None:
        """The receiver refused it for good: move it to ``rejected/`` with the reason next to it."""
        with self._lock:
            path = self.pending_dir / name
            self._remove(name)
            self._move_aside(path, reason)

    def _move_aside(self, path: Path, reason: str) -> None:
        self.rejected += 1
        self._ratelog.error("aside", "spool: moved %s to %s (%d so far): %s", path.name, self.rejected_dir,
                            self.rejected, reason)
        try:
            os.replace(path, self.rejected_dir / path.name)
            (self.rejected_dir / (path.name + ".why")).write_text(reason + "\n")
            kept = sorted(self.rejected_dir.glob("*" + SUFFIX))
            for old in kept[: max(0, len(kept) - self.rejected_max_files)]:
                log.error("spool: deleting old rejected file %s (rejected_max_files)", old.name)
                old.unlink(missing_ok=True)
                (self.rejected_dir / (old.name + ".why")).unlink(missing_ok=True)
        except OSError as exc:
            log.error("spool: cannot move %s aside: %s", path.name, exc)

    # ---- bookkeeping and reading -------------------------------------------------------------------
    def _add(self, e: SpoolEntry) -> None:
        self._entries[e.name] = e
        self._bytes += e.size

    def _remove(self, name: str) -> None:
        e = self._entries.pop(name, None)
        if e is not None:
            self._bytes -= e.size

    def _sorted(self) -> list[SpoolEntry]:
        return sorted(self._entries.values(), key=lambda e: e.seq)

    def _load(self, e: SpoolEntry) -> WindowProfile:
        return decode_profile((self.pending_dir / e.name).read_bytes(), max_bytes=MAX_FILE_BYTES)

    def entries(self) -> list[SpoolEntry]:
        """Pending windows, oldest first (copies)."""
        with self._lock:
            return [replace(e) for e in self._sorted()]

    def profiles(self) -> list[WindowProfile]:
        """Every pending window decoded (tests and the CLI; not for the hot path)."""
        with self._lock:
            return [self._load(e) for e in self._sorted()]

    def stats(self) -> SpoolStats:
        with self._lock:
            now = self.clock()
            oldest = min((e.spooled_at for e in self._entries.values()), default=now)
            return SpoolStats(
                bytes=self._bytes, limit=self.max_bytes, pending=len(self._entries),
                pending_rows=sum(e.rows for e in self._entries.values()), oldest_age_s=max(0.0, now - oldest),
                written=self.written, merged=self.merged, dropped=self.dropped, dropped_rows=self.dropped_rows,
                rejected=self.rejected,
            )
