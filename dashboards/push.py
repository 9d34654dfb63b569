"""Upload the dashboards through Grafana's HTTP API (folder, overwrite, API token from the environment).

Plain HTTP with httpx: ``GET/POST /api/folders`` and ``POST /api/dashboards/db``. (grafana-client 5
pulls urllib3-future, whose .pth file replaces urllib3 in site-packages at every interpreter start;
we keep it out of Driftline's environments.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from driftline.errors import DriftlineError

__all__ = ["GrafanaError", "push_dashboards"]


class GrafanaError(DriftlineError):
    """Grafana refused or could not be reached; the message says which and what to do."""


def push_dashboards(url: str, token: str | None, dashboards: Mapping[str, str], *, folder: str = "Driftline",
                    overwrite: bool = True, timeout: float = 10.0) -> list[str]:
    """Create the folder if needed and upload every dashboard; returns the uploaded dashboards' URLs."""
    import httpx

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    base = url.rstrip("/")
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as c:
            folders = _ok(c.get("/api/folders"), "list folders")
            uid = next((f["uid"] for f in folders if f.get("title") == folder), None)
            if uid is None:
                uid = _ok(c.post("/api/folders", json={"title": folder}), f"create folder {folder!r}")["uid"]
            urls = []
            for name, text in dashboards.items():
                body = {"dashboard": json.loads(text), "folderUid": uid, "overwrite": overwrite,
                        "message": "driftline dashboards push"}
                res = _ok(c.post("/api/dashboards/db", json=body), f"upload {name}")
                urls.append(base + str(res.get("url", "")))
            return urls
    except httpx.HTTPError as exc:
        raise GrafanaError(f"cannot reach Grafana at {base}: {exc}") from None


def _ok(resp, what: str):  # type: ignore[no-untyped-def]
    if resp.status_code in (401, 403):
        raise GrafanaError(f"Grafana refused to {what} (HTTP {resp.status_code}): check the API token in "
                           "GRAFANA_TOKEN (or DRIFTLINE_GRAFANA_TOKEN) and its permissions")
    if resp.status_code == 412 or resp.status_code == 409:
        raise GrafanaError(f"Grafana refused to {what} (HTTP {resp.status_code}): a dashboard with that uid or "
                           "title exists; use --overwrite")
    if resp.status_code >= 400:
        raise GrafanaError(f"Grafana failed to {what}: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        return resp.json()
    except ValueError:
        raise GrafanaError(f"Grafana answered {what} with something that is not JSON") from None
