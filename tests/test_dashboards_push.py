"""``driftline dashboards push`` over real loopback HTTP: a stdlib stand-in for the Grafana API calls it
makes (Grafana itself has no Debian package and cannot be installed here), a server that answers 401
or 403 to everything, and a closed port. Errors are one line on stderr and exit 2."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driftline.apps.cli.main import main
from driftline.dashboards import DASHBOARDS, checked_in
from tests.harness.ports import free_port


class FakeGrafana:
    """``GET/POST /api/folders`` and ``POST /api/dashboards/db`` as Grafana answers them, recording requests.

    ``status`` forces every answer (401, 403, ...); a dashboard upload without ``overwrite`` for a uid
    that exists answers 412 like Grafana's version check.
    """

    def __init__(self, token: str = "tok", status: int | None = None, prefix: str = "") -> None:
        self.requests: list[tuple[str, str, dict | None, str | None]] = []
        self.folders: list[dict] = [{"id": 1, "uid": "other", "title": "Other"}]
        self.dashboards: dict[str, dict] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, obj: object) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                outer.requests.append((self.command, self.path, body, self.headers.get("Authorization")))
                path = self.path.removeprefix(prefix)
                if status is not None:
                    return self._reply(status, {"message": "forced"})
                if self.headers.get("Authorization") != f"Bearer {token}":
                    return self._reply(401, {"message": "invalid API key"})
                if (self.command, path) == ("GET", "/api/folders"):
                    return self._reply(200, outer.folders)
                if (self.command, path) == ("POST", "/api/folders"):
                    folder = {"id": len(outer.folders) + 1, "uid": f"f{len(outer.folders)}", "title": body["title"]}
                    outer.folders.append(folder)
                    return self._reply(200, folder)
                if (self.command, path) == ("POST", "/api/dashboards/db"):
                    uid = body["dashboard"]["uid"]
                    if uid in outer.dashboards and not body.get("overwrite"):
                        return self._reply(412, {"message": "A dashboard with the same uid already exists",
                                                 "status": "name-exists"})
                    outer.dashboards[uid] = body
                    return self._reply(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1})
                return self._reply(404, {"message": "not found"})

            do_GET = do_POST = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_token_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    g = FakeGrafana()
    yield g
    g.close()


def push(*args: str) -> int:
    return main(["dashboards", "push", *args])


def test_push_creates_the_folder_and_uploads_every_dashboard(grafana: FakeGrafana, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", "tok")
    assert push("--grafana-url", grafana.url, "--folder", "ML monitoring") == 0
    calls = [(m, p) for m, p, _, _ in grafana.requests]
    assert calls == [("GET", "/api/folders"), ("POST", "/api/folders")] + [("POST", "/api/dashboards/db")] * len(DASHBOARDS)
    assert all(auth == "Bearer tok" for *_, auth in grafana.requests)
    folder = next(f for f in grafana.folders if f["title"] == "ML monitoring")
    shipped = {json.loads(t)["uid"]: json.loads(t) for t in checked_in().values()}
    assert set(grafana.dashboards) == set(shipped) == {f"driftline-{n}" for n in DASHBOARDS}
    for uid, body in grafana.dashboards.items():
        assert body["dashboard"] == shipped[uid] and body["folderUid"] == folder["uid"]
        assert body["overwrite"] is False
    out = capsys.readouterr().out.split()
    assert out == [f"{grafana.url}/d/driftline-{n}/x" for n in DASHBOARDS]

    grafana.requests.clear()  # again: the folder is found, and existing dashboards need --overwrite
    assert push("--grafana-url", grafana.url, "--folder", "ML monitoring") == 2
    err = capsys.readouterr().err
    assert "HTTP 412" in err and "--overwrite" in err and err.count("\n") == 1
    assert ("POST", "/api/folders") not in [(m, p) for m, p, _, _ in grafana.requests]
    assert push("--grafana-url", grafana.url, "--folder", "ML monitoring", "--overwrite") == 0
    assert all(body["overwrite"] is True for body in grafana.dashboards.values())
    assert len(grafana.folders) == 2


def test_push_reads_the_other_token_variable_and_a_sub_path(monkeypatch, capsys) -> None:
    g = FakeGrafana(token="second", prefix="/grafana")
    try:
        monkeypatch.setenv("DRIFTLINE_GRAFANA_TOKEN", "second")
        assert push("--grafana-url", g.url) == 0
        assert {p for _, p, _, _ in g.requests} == {"/grafana/api/folders", "/grafana/api/dashboards/db"}
        assert [f["title"] for f in g.folders] == ["Other", "Driftline"]
    finally:
        g.close()


@pytest.mark.parametrize(("status", "hint"), [(401, "GRAFANA_TOKEN"), (403, "Editor role")])
def test_push_refused_says_why_in_one_line(status: int, hint: str, monkeypatch, capsys) -> None:
    g = FakeGrafana(status=status)
    try:
        monkeypatch.setenv("GRAFANA_TOKEN", "whatever")
        assert push("--grafana-url", g.url) == 2
    finally:
        g.close()
    err = capsys.readouterr().err
    assert err.startswith("driftline: error: ") and err.count("\n") == 1
    assert f"HTTP {status}" in err and hint in err and "Traceback" not in err
    assert [(m, p) for m, p, _, _ in g.requests] == [("GET", "/api/folders")]  # stopped at the first refusal


def test_push_without_a_token_is_refused_by_grafana(grafana: FakeGrafana, capsys) -> None:
    assert push("--grafana-url", grafana.url) == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert grafana.requests[0][3] is None  # no Authorization header was invented


def test_push_to_a_closed_port_or_a_bad_url(capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert push("--grafana-url", url, "--timeout", "3") == 2
    err = capsys.readouterr().err
    assert f"cannot reach Grafana at {url}" in err and err.count("\n") == 1
    assert push("--grafana-url", "grafana:3000") == 2
    assert "must look like http://" in capsys.readouterr().err
