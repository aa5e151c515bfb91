"""The /healthz and /metrics listener against slow clients (real sockets, the real server)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

from servers import free_port

from station_bridge.metrics import Metrics, serve


def _get(port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def test_slow_and_silent_clients_never_keep_a_fresh_health_check_from_its_answer():
    """Slowloris: 40 clients that send nothing and 40 that send their headers a byte at a time
    (each byte well within any per-read timeout) against 8 slots: every fresh /healthz is still
    answered at once, and a trickling client is cut at its total deadline, not kept forever."""
    metrics = Metrics()
    port = free_port()
    server = serve(metrics, f"127.0.0.1:{port}", lambda: {"ok": True, "problems": []}, max_connections=8,
                   timeout=2.0)
    stop = threading.Event()
    cut_after: list[float] = []

    def trickle() -> None:
        s = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 10_000:
                if stop.is_set():
                    return
                s.send(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            cut_after.append(time.monotonic() - started)
        finally:
            s.close()

    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(40)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        for _ in range(20):
            started = time.monotonic()
            status, body = _get(port, "/healthz")
            assert status == 200 and json.loads(body)["ok"] is True
            assert time.monotonic() - started < 0.9
            silent.append(socket.create_connection(("127.0.0.1", port)))  # more keep coming
            time.sleep(0.1)
        assert _get(port, "/metrics")[0] == 200
        # Every trickling client was cut (by eviction or its deadline), never kept past its deadline.
        deadline = time.monotonic() + 6
        while len(cut_after) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(cut_after) == len(threads)
        assert max(cut_after) < 2.0 + 1.0
        assert metrics.get("bridge_http_refused_total") > 0
    finally:
        stop.set()
        for s in silent:
            s.close()
        server.shutdown()


def test_a_lone_trickling_client_is_cut_at_its_total_deadline_and_counted():
    metrics = Metrics()
    port = free_port()
    server = serve(metrics, f"127.0.0.1:{port}", lambda: {"ok": False, "problems": ["x"]}, max_connections=4,
                   timeout=1.0)
    s = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    closed = False
    try:
        for byte in b"GET /healthz HTTP/1.1\r\n" + b"X: " + b"a" * 1000:
            try:
                s.send(bytes([byte]))
                closed = s.recv(1, socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed = True
            if closed:
                break
            time.sleep(0.05)
        took = time.monotonic() - started
    finally:
        s.close()
    assert closed
    assert took < 2.5
    assert metrics.get("bridge_http_timeouts_total") == 1
    try:
        _get(port, "/healthz")
    except urllib.error.HTTPError as exc:  # 503: ok is false, the answer tells the truth
        assert exc.code == 503 and json.loads(exc.read())["ok"] is False
    server.shutdown()
