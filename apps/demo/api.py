"""A small client of the service's HTTP API, for the demo (the demo talks to the service only over HTTP)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["ApiError", "ServiceClient"]


class ApiError(Exception):
    """The service answered with an error or could not be reached."""


class ServiceClient:
    """JSON over HTTP with short timeouts; every failure is an :class:`ApiError`."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
        req = urllib.request.Request(self.base_url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise ApiError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"{method} {path}: {exc}") from None
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace")

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def put_json(self, path: str, obj: Any) -> Any:
        return self._request("PUT", path, json.dumps(obj).encode())

    def put_bytes(self, path: str, data: bytes) -> Any:
        return self._request("PUT", path, data, "application/octet-stream")

    def ready(self) -> bool:
        try:
            self._request("GET", "/readyz")
            return True
        except ApiError:
            return False
