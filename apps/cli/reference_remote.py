"""``driftline reference upload`` / ``reference list``: put reference profiles on a running service and see them.

Drift needs a reference per model version; without one the service answers 404 for that version.
These commands talk to the service's HTTP API with the standard library only (no extra needed):

    driftline reference upload ref.dlp --model fraud --version v3 --to http://localhost:8000
    driftline reference list --to http://localhost:8000
    driftline reference build train.parquet --model fraud --version v3 --out ref.dlp --upload http://localhost:8000

Exit codes: 0 done, 2 input the user can fix (a file that is not a profile, a bad URL, a refused
token, a service that rejects the profile), 1 the service could not be reached or failed (retry later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

from driftline.errors import ConfigError, DriftlineError

__all__ = ["ServiceUnavailable", "add_upload_options", "register", "upload_after_build"]

TOKEN_ENV = "DRIFTLINE_API_TOKEN"
TIMEOUT_S = 30.0


class ServiceUnavailable(DriftlineError):
    """The service could not be reached or answered 5xx: worth retrying, so exit 1 rather than 2."""


def _guard(func: Any) -> Any:
    """A service that may come back is exit 1 (one line); everything else goes to the CLI's exit 2."""
    def run(*args: Any) -> int:
        try:
            return int(func(*args))
        except ServiceUnavailable as exc:
            print(f"driftline: error: {exc}", file=sys.stderr)
            return 1
    return run


def _add_remote(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, metavar="URL", help="the service, e.g. http://localhost:8000")
    p.add_argument("--token", help=f"bearer token for write endpoints (default: ${TOKEN_ENV})")


def register(rsub: argparse._SubParsersAction) -> None:
    """Add ``upload`` and ``list`` under ``driftline reference``."""
    u = rsub.add_parser(
        "upload", help="upload a reference profile file to the service for one model version",
        description="Upload a file written by `driftline reference build` as the reference of MODEL "
        "version VERSION (PUT /v1/models/{model}/versions/{version}/reference). Replaces an earlier "
        f"reference of that version. The token comes from --token or ${TOKEN_ENV}.")
    u.add_argument("file", help="reference profile file (.dlp)")
    u.add_argument("--model", help="model name (default: the one stored in the file)")
    u.add_argument("--version", dest="model_version", help="model version (default: the one stored in the file)")
    _add_remote(u)
    u.set_defaults(func=_upload)
    ls = rsub.add_parser(
        "list", help="list every model version on the service and whether it has a reference",
        description="Every model version the service holds data or a reference for, newest data first, "
        "with its reference (source, rows, upload time) or what to run when it has none.")
    ls.add_argument("--to", required=True, metavar="URL", help="the service, e.g. http://localhost:8000")
    ls.add_argument("--model", help="only this model")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("--token", help=f"bearer token, if reads need one (default: ${TOKEN_ENV})")
    ls.set_defaults(func=_list)


def add_upload_options(build: argparse.ArgumentParser) -> None:
    """``reference build --upload URL [--token T]``: upload the file right after writing it."""
    build.add_argument("--upload", metavar="URL", type=_url_arg,  # checked before the (long) profiling starts
                       help="also upload the written reference to this service")
    build.add_argument("--token", help=f"bearer token for --upload (default: ${TOKEN_ENV})")


@_guard
def upload_after_build(args: argparse.Namespace, path: str) -> int:
    """The ``--upload`` step of ``reference build``: same checks and messages as ``reference upload``."""
    return _run_upload(path, args.model, args.model_version, args.upload, args.token)


# ---- the commands ------------------------------------------------------------------------------------
@_guard
def _upload(args: argparse.Namespace) -> int:
    return _run_upload(args.file, args.model, args.model_version, args.to, args.token)


def _run_upload(path: str, model: str | None, version: str | None, to: str, token: str | None) -> int:
    from driftline.wire import read_profile_file

    base = service_url(to)
    prof = read_profile_file(path)  # DataFileError (exit 2) when it is not a profile file
    model = model or prof.key.model
    version = version or prof.key.model_version
    for what, value in (("--model", model), ("--version", version)):
        if not value or not value.strip():
            raise ConfigError(f"{what} is empty and the file does not name one")
    with open(path, "rb") as fh:
        body = fh.read()
    answer = _request("PUT", f"{base}/v1/models/{quote(model, safe='')}/versions/{quote(version, safe='')}/reference",
                      body, token)
    outputs = answer.get("outputs") or []
    print(f"uploaded {path} as the reference of {model} {version} to {base}: {answer.get('rows', prof.rows)} rows, "
          f"{len(answer.get('features') or [])} features, {len(outputs)} outputs"
          + (f" ({', '.join(outputs)})" if outputs else ""))
    print(f"drift: {base}/v1/models/{quote(model, safe='')}/drift?version={quote(version, safe='')}  "
          f"page: {base}/models/{quote(model, safe='')}?version={quote(version, safe='')}")
    return 0


@_guard
def _list(args: argparse.Namespace) -> int:
    base = service_url(args.to)
    names = [m["name"] for m in _request("GET", f"{base}/v1/models", None, args.token).get("models", [])]
    if args.model is not None:
        names = [n for n in names if n == args.model]
        if not names:
            raise ConfigError(f"the service at {base} has no data and no reference for model {args.model!r}")
    out = []
    for name in names:
        found = _request("GET", f"{base}/v1/models/{quote(name, safe='')}/versions", None, args.token)
        for v in found.get("versions", []):
            out.append({"model": name, "default": v["version"] == found.get("default"), **v})
    if args.json:
        print(json.dumps({"versions": out}, indent=2))
        return 0
    if not out:
        print(f"no models on {base} yet: upload a reference with `driftline reference upload` or start a sidecar")
        return 0
    rows = [("MODEL", "VERSION", "REFERENCE", "REF ROWS", "DATA ROWS", "NEWEST WINDOW")]
    for v in out:
        ref = v.get("reference")
        rows.append((v["model"], v["version"] + (" *" if v["default"] else ""),
                     ref["source"] if ref else ("derived" if v.get("has_reference") else "none"),
                     f"{ref['rows']:,}" if ref else "-", f"{v.get('rows', 0):,}", _when(v.get("last_window_end"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("* the version drift and the model page show by default")
    missing = [v for v in out if not v.get("has_reference")]
    for v in missing:
        print(f"{v['model']} {v['version']} has no reference: driftline reference build TRAINING_FILE "
              f"--model {v['model']} --version {v['version']} --out ref.dlp --upload {base}")
    return 0


# ---- HTTP ---------------------------------------------------------------------------------------------
def service_url(text: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; anything else is a one-line error."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--to/--upload must be an http:// or https:// URL of the service, not {text!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{text!r} has a port that is not a number") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"{text!r}: give the service's base URL, without ?query or #fragment")
    return text.strip().rstrip("/")


def _url_arg(text: str) -> str:
    try:
        return service_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _request(method: str, url: str, body: bytes | None, token: str | None) -> dict[str, Any]:
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    headers = {"Accept": "application/json", "User-Agent": "driftline-cli"}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - the scheme is checked
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        message = _error_text(exc)
        if exc.code == 401:
            hint = "give --token" if not token else "the token was refused"
            raise ConfigError(f"{method} {url}: 401 {message} ({hint}, or set ${TOKEN_ENV})") from None
        if exc.code >= 500:
            raise ServiceUnavailable(f"{method} {url}: the service failed with {exc.code}: {message}") from None
        raise ConfigError(f"{method} {url}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceUnavailable(f"cannot reach the service at {url}: {reason}") from None
    try:
        return json.loads(raw or b"{}")  # type: ignore[no-any-return]
    except ValueError:
        raise ServiceUnavailable(f"{method} {url} answered something that is not JSON; is this a Driftline "
                                 "service?") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(exc.read() or b"{}")
    except ValueError:
        return exc.reason or ""
    if not isinstance(data, dict):
        return str(data)[:200]
    text = str(data.get("error") or data.get("detail") or exc.reason or "")
    if data.get("error") and isinstance(data.get("detail"), str) and data["detail"]:
        text += f": {data['detail']}"
    return text


def _when(ts: float | None) -> str:
    import datetime as dt

    if ts is None:
        return "no data yet"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

