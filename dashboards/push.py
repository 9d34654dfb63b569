"""Upload the dashboards through Grafana's HTTP API with ``grafana-client`` (folder, overwrite, token).

Calls: ``GET /api/folders`` and, when the folder is missing, ``POST /api/folders``; then one
``POST /api/dashboards/db`` per dashboard. Every failure becomes one :class:`GrafanaError` whose
message says what happened and what to do.

``grafana-client`` is pinned below 4: from 4.0 it depends on niquests, whose urllib3-future
replaces the urllib3 package of the whole environment (requests, pip, ...); 3.x uses requests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import GrafanaError

__all__ = ["push_dashboards"]


def _api(url: str, token: str | None, timeout: float) -> Any:
    try:
        from grafana_client import GrafanaApi
    except ImportError:
        from driftline.errors import MissingExtraError

        raise MissingExtraError("grafana-client", "dashboards") from None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GrafanaError(f"--grafana-url must look like http://grafana:3000, not {url!r}")
    prefix = parts.path.strip("/")
    return GrafanaApi(token, host=parts.hostname, port=parts.port, protocol=parts.scheme,
                      url_path_prefix=f"{prefix}/" if prefix else "", timeout=timeout)


def push_dashboards(url: str, token: str | None, dashboards: Mapping[str, str], *, folder: str = "Driftline",
                    overwrite: bool = False, timeout: float = 10.0) -> list[str]:
    """Create ``folder`` if needed and upload every dashboard into it; returns the dashboards' URLs."""
    import requests
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

    base = url.rstrip("/")
    api = _api(url, token, timeout)
    step = "list folders"
    try:
        found = api.folder.get_all_folders()
        uid = next((f["uid"] for f in found if f.get("title") == folder), None)
        if uid is None:
            step = f"create folder {folder!r}"
            uid = api.folder.create_folder(folder)["uid"]
        urls = []
        for name, text in dashboards.items():
            step = f"upload dashboard {name}"
            res = api.dashboard.update_dashboard({"dashboard": json.loads(text), "folderUid": uid,
                                                  "overwrite": overwrite, "message": "driftline dashboards push"})
            urls.append(base + str(res.get("url", "")))
        return urls
    except GrafanaUnauthorizedError:
        raise GrafanaError(f"Grafana at {base} refused to {step} (HTTP 401): set a valid API token in "
                           "GRAFANA_TOKEN or DRIFTLINE_GRAFANA_TOKEN") from None
    except GrafanaClientError as exc:
        code = exc.status_code
        if code == 403:
            raise GrafanaError(f"Grafana at {base} refused to {step} (HTTP 403): the token's service account "
                               "needs the Editor role (or folder write permission)") from None
        if code in (409, 412):
            raise GrafanaError(f"Grafana at {base} refused to {step} (HTTP {code}): a dashboard with that uid or "
                               "title exists; pass --overwrite to replace it") from None
        raise GrafanaError(f"Grafana at {base} refused to {step} (HTTP {code}): {exc.message}") from None
    except GrafanaException as exc:
        raise GrafanaError(f"Grafana at {base} failed to {step}: {exc.message}") from None
    except requests.exceptions.RequestException as exc:
        reason = type(exc).__name__
        raise GrafanaError(f"cannot reach Grafana at {base} ({reason}); check --grafana-url") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise GrafanaError(f"{base} answered {step} with something that is not Grafana's API") from None
