"""station_stack.station.http_status against a real HTTP server on loopback (in-process module run)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

SEEN: list[tuple[str, str, dict]] = []


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        SEEN.append(("GET", self.path, {}))
        if self.path == "/ping":
            self._answer(204, b"")
        elif self.path == "/healthz":
            self._answer(503, json.dumps({"problems": [{"part": "subscription"}]}).encode())
        else:
            self._answer(200, b"not json")

    def do_POST(self):  # noqa: N802
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        SEEN.append(("POST", self.path, form))
        self._answer(401, json.dumps({"error": "unable to parse authentication credentials"}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    SEEN.clear()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_a_wanted_status_with_a_json_body_is_returned_parsed(run, server):
    result = run("http_status", {"url": server + "/healthz", "status_code": [200, 503]})
    assert not result.get("failed") and not result["changed"]
    assert result["status"] == 503 and result["json"] == {"problems": [{"part": "subscription"}]}


def test_a_status_not_wanted_fails_and_still_reports_it(run, server):
    result = run("http_status", {"url": server + "/ping"})
    assert result["failed"] and result["status"] == 204 and "204" in result["msg"]
    result = run("http_status", {"url": server + "/ping", "status_code": [204]}, check=True)
    assert not result.get("failed") and "json" not in result


def test_post_sends_the_form(run, server):
    result = run("http_status", {"url": server + "/query", "method": "POST", "body": {"q": "SHOW DATABASES"},
                                 "status_code": [200, 401, 403]})
    assert result["status"] == 401 and not result.get("failed")
    assert SEEN == [("POST", "/query", {"q": ["SHOW DATABASES"]})]


def test_no_answer_is_status_minus_one(run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("http_status", {"url": "http://127.0.0.1:%d/ping" % port, "timeout": 2})
    assert result["failed"] and result["status"] == -1 and "No answer" in result["msg"]
