"""HTTP transport: ``POST {url}/v1/ingest`` with the envelope bytes, one keep-alive connection.

The contract with the service: 200 (``accepted`` or ``duplicate``) confirms; 408, 429, 5xx and
network errors are retried later; any other 4xx is a permanent rejection. Standard library only
(``http.client``), so an edge device needs no HTTP client package.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import DeliveryRejected, SettingsError, TransportError
from . import Outgoing

__all__ = ["HttpTransport", "ingest_path"]

log = logging.getLogger("driftline.sidecar.transport")
RETRY_STATUSES = {408, 429}


def ingest_path(prefix: str) -> str:
    """The ingest endpoint under a base URL path (``/v1/ingest`` unless the URL already names it)."""
    prefix = prefix.rstrip("/")
    return prefix if prefix.endswith("/v1/ingest") else prefix + "/v1/ingest"


class HttpTransport:
    """Sends envelopes to the Driftline service; owned by the shipper's thread (not thread-safe)."""

    name = "http"

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0,
                 ca_file: str | Path | None = None, verify: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"transport.http.url must be an http(s) URL, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = ingest_path(parts.path)
        self.timeout = timeout
        self.headers = {"Content-Type": "application/octet-stream", "User-Agent": "driftline-sidecar"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if not verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._conn: http.client.HTTPConnection | None = None
        self._reused = False  # the open connection has carried a request before

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        if self._conn.sock is None:
            try:
                self._conn.connect()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return self._conn

    def _post(self, item: Outgoing) -> None:
        for attempt in (1, 2):
            conn = self._connect()
            reused = self._reused
            try:
                conn.request("POST", self.path, body=item.data, headers=self.headers)
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 1:  # the server closed an idle keep-alive connection: retry once
                    continue
                raise TransportError(f"POST {self.path}: {exc}", maybe_delivered=True) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(f"POST {self.path}: {exc}", maybe_delivered=True) from exc
            self._reused = True
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            self._check(resp.status, body, item)
            return

    def _check(self, status: int, body: bytes, item: Outgoing) -> None:
        if status == 200:
            return
        detail = _detail(body)
        if status in RETRY_STATUSES or status >= 500 or status < 400:
            raise TransportError(f"service answered {status}: {detail}")
        raise DeliveryRejected(f"service rejected envelope {item.envelope_id} with {status}: {detail}", status)

    def send(self, batch: list[Outgoing]) -> list[TransportError | None]:
        """POST each envelope in order; after a retriable failure the rest are not attempted."""
        results: list[TransportError | None] = []
        for i, item in enumerate(batch):
            try:
                self._post(item)
                results.append(None)
            except DeliveryRejected as exc:
                results.append(exc)
            except TransportError as exc:
                results.append(exc)
                results.extend(TransportError("not attempted after an earlier failure", attempted=False)
                               for _ in batch[i + 1 :])
                break
        return results

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:  # pragma: no cover
                pass
            self._conn = None
        self._reused = False


def _detail(body: bytes) -> str:
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            return str(obj.get("detail") or obj.get("error") or obj)[:300]
    except (ValueError, UnicodeDecodeError):
        pass
    return body[:300].decode("utf-8", "replace") or "(empty body)"

