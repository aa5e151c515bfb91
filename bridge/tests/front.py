"""A real HTTP front to a real influxd that answers as a test tells it (a redirect, a 200 that is
not InfluxDB's, a proxy's 400, 503, a slow server, 500 for poison lines): tests and chaos."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Front:
    """Forwards to influxd unless `mode` says otherwise; `mode` can change while running."""

    def __init__(self, upstream: str) -> None:
        self.mode = "forward"
        self.upstream = upstream
        self.posts = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, data: bytes = b"", headers: tuple = ()) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, method: str, body: bytes | None) -> None:
                host, port = front.upstream.split("//")[1].split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                passed = {k: v for k, v in self.headers.items()  # credentials, encodings: as sent
                          if k.lower() in ("authorization", "content-type", "content-encoding", "accept")}
                conn.request(method, self.path, body=body, headers=passed)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                self._send(response.status, data)

            def do_GET(self) -> None:
                self._forward("GET", None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                front.posts += 1
                mode = front.mode
                if mode == "redirect":
                    self._send(307, b"", (("Location", front.upstream + self.path),))
                elif mode == "garbage200":
                    self._send(200, b"\x00\xffnot influxdb")
                elif mode == "empty200":
                    self._send(200)
                elif mode == "proxy400":
                    self._send(400, b"<html><body><h1>400 Bad Request</h1>nginx</body></html>")
                elif mode == "blackhole" and self.path.startswith("/write"):
                    self._send(204)  # acknowledged, never stored
                elif mode == "down":
                    self._send(503, b'{"error":"down"}')
                elif mode == "slow":
                    time.sleep(0.3)
                    self._forward("POST", body)
                elif mode in ("silent_partial", "zero_partial") and b"POISON" in body:
                    # A server or intermediary that stores the other lines and answers a partial
                    # write without saying how many it dropped (no `dropped=N`).
                    kept = b"".join(line + b"\n" for line in body.splitlines() if b"POISON" not in line)
                    if kept:
                        host, port = front.upstream.split("//")[1].split(":")
                        conn = http.client.HTTPConnection(host, int(port), timeout=30)
                        conn.request("POST", self.path, body=kept)
                        conn.getresponse().read()
                        conn.close()
                    self._send(400, b'{"error":"partial write: unable to parse \'zzz\': missing fields"}'
                               if mode == "silent_partial" else
                               b'{"error":"partial write: points beyond retention policy dropped=0"}')
                elif mode == "poison" and b"POISON" in body:
                    self._send(500, b'{"error":"internal error"}')
                else:
                    self._forward("POST", body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
