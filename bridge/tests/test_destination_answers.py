"""Answers of a destination that are not InfluxDB's own refusals (a redirect, a 200 with a garbage
or empty body, a 5xx for one poison line): real bridge process, real influxd behind a real HTTP
front that answers as told."""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from harness import BridgeProcess, quiet_ledger, wait_for

from station_bridge.demo import publish
from station_bridge.metrics import total, value


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
                conn.request(method, self.path, body=body)
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
                elif mode == "down":
                    self._send(503, b'{"error":"down"}')
                elif mode == "slow":
                    time.sleep(0.3)
                    self._forward("POST", body)
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


@pytest.fixture()
def front(own_influxd) -> Iterator[Front]:
    f = Front(own_influxd.url)
    yield f
    f.server.shutdown()
    f.server.server_close()


@pytest.mark.parametrize("mode", ["redirect", "garbage200", "empty200", "proxy400"])
def test_an_answer_that_is_not_a_refusal_keeps_the_points_and_fails_visibly(tmp_path, own_influxd, front, endpoint,
                                                                             mode):
    """A 307 (not followed: a POST is not re-sent elsewhere), a 200 from something that is not
    InfluxDB's /write, a 400 without InfluxDB's JSON error (a proxy's): the points are kept
    (pending, retried), the destination is failing, and once the real server answers again
    every point lands. They were bisected line by line and dropped as `rejected` (InfluxDB
    never refused them)."""
    front.mode = mode
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint, destination={"url": front.url}).start()
    sent = publish(endpoint, "kraken_tick", 200, rate=0, duration=20)
    wait_for(lambda: bridge.health()[0] == 503, 15, "the destination failing")
    samples = bridge.samples()
    assert total(samples, "bridge_dropped_points_total", destination="local") == 0
    assert value(samples, "bridge_pending_points", destination="local") == sent
    assert value(samples, "bridge_write_errors_total", destination="local",
                 kind={"redirect": "http_307", "proxy400": "http_400"}.get(mode, "http_200")) > 0
    assert front.posts < 20  # retried with backoff, not bisected
    front.mode = "forward"
    samples = quiet_ledger(bridge)
    assert own_influxd.count("tick", "ticks") == sent
    assert value(samples, "bridge_written_points_total", destination="local") == sent
    assert bridge.stop() == 0


def test_a_poison_line_that_gets_500_forever_is_isolated_and_stops_blocking_the_rest(tmp_path, own_influxd, front,
                                                                                       endpoint):
    """One instrument's points make the server answer 500 whatever happens (a poison line): the
    journal is delivered in order, so without isolation nothing after it would ever land. After
    POISON_AFTER failed attempts the batch is split: the poison lines (500 alone, again and again,
    while the rest is stored) are dropped `poison` and dead-lettered, everything else lands."""
    front.mode = "poison"
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint,
                           destination={"url": front.url, "batch_size": 20, "max_backoff": "1s"}).start()
    sent = publish(endpoint, "kraken_tick", 90, rate=0, duration=20, instruments=["A", "POISON", "B"])
    samples = quiet_ledger(bridge, timeout=60)
    poison = value(samples, "bridge_dropped_points_total", destination="local", reason="poison")
    written = value(samples, "bridge_written_points_total", destination="local")
    assert poison == sent // 3 and written == sent - poison
    assert total(samples, "bridge_dropped_points_total", destination="local") == poison
    assert own_influxd.count("tick", "ticks") == written
    dead = (tmp_path / "dead" / "local.jsonl").read_text()
    assert dead.count('"reason": "poison"') == poison and "POISON" in dead
    assert bridge.stop() == 0


def test_a_server_that_fails_everything_with_500_is_not_poison(tmp_path, own_influxd, front, endpoint):
    """Every line gets 500 (the server is broken, not a line): isolation gives up within its budget,
    nothing is dropped, the points wait and land once the server works again."""
    front.mode = "poison"
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint,
                           destination={"url": front.url, "batch_size": 20, "max_backoff": "1s"}).start()
    sent = publish(endpoint, "kraken_tick", 60, rate=0, duration=20, instruments=["POISON"])
    wait_for(lambda: front.posts > 40, 30, "isolation attempts")
    samples = bridge.samples()
    assert total(samples, "bridge_dropped_points_total", destination="local") == 0
    assert value(samples, "bridge_pending_points", destination="local") == sent
    front.mode = "forward"
    samples = quiet_ledger(bridge, timeout=30)
    assert value(samples, "bridge_written_points_total", destination="local") == sent
    assert own_influxd.count("tick", "ticks") == sent
    assert bridge.stop() == 0


def test_a_journal_that_refuses_writes_does_not_drop_what_an_up_destination_can_take(tmp_path, own_influxd, front,
                                                                                      endpoint):
    """The journal directory turns unwritable mid-run (`chattr +i`: EPERM even for root, as a
    read-only remount or lost permissions) while older points wait in it and the destination is
    back (slow: it drains for seconds). New batches went to the journal behind the old ones,
    were refused and dropped `journal_error` although the destination could take them; now they
    are delivered at once (out of order) and nothing is dropped."""
    front.mode = "down"
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint,
                           destination={"url": front.url, "batch_size": 50, "max_backoff": "1s"}).start()
    first = publish(endpoint, "kraken_tick", 600, rate=0, duration=20)
    wait_for(lambda: bridge.value("bridge_journaled_points_total", destination="local") == first, 15,
             "everything journaled")
    directory = tmp_path / "journal" / "local"
    subprocess.run(["chattr", "+i", str(directory)], check=True)
    try:
        front.mode = "slow"  # back, 0.3 s per request: the journal takes seconds to drain
        later = publish(endpoint, "kraken_tick", 400, rate=200, duration=20, start_seq=first)
        samples = quiet_ledger(bridge, timeout=60)
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    assert total(samples, "bridge_dropped_points_total", destination="local") == 0
    assert value(samples, "bridge_written_points_total", destination="local") == first + later
    assert own_influxd.count("tick", "ticks") == first + later
    assert bridge.stop() == 0
