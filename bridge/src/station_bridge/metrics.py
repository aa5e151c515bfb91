"""Counters and gauges, exposed as Prometheus text on /metrics, with /healthz.

Counters are plain dict entries updated by the stage that owns them (one writer
per key), read by the HTTP thread; no lock is needed for that under the GIL.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HELP = {
    "bridge_received_messages_total": "Messages received from ZMQ, per subscription.",
    "bridge_rejected_messages_total": "Messages refused, per subscription and reason.",
    "bridge_timestamp_fallbacks_total": "Points whose configured time field was missing (receive time used).",
    "bridge_written_points_total": "Points acknowledged by InfluxDB, per destination.",
    "bridge_journaled_points_total": "Points written to the journal, per destination.",
    "bridge_dropped_points_total": "Points dropped, per destination and reason (spool_full, rejected).",
    "bridge_write_errors_total": "Failed write requests, per destination and kind.",
    "bridge_intake_errors_total": "Points the write-ahead intake log could not store (held in memory only).",
    "bridge_intake_bytes": "Bytes in the write-ahead intake log, per destination.",
    "bridge_queue_points": "Points waiting in memory, per destination.",
    "bridge_journal_bytes": "Bytes in the journal, per destination.",
    "bridge_journal_points": "Points in the journal, per destination.",
    "bridge_write_seconds_sum": "Total time of successful write requests, per destination.",
    "bridge_write_seconds_count": "Successful write requests, per destination.",
    "bridge_cache_errors_total": "Failed Redis cache updates.",
    "bridge_cache_updates_total": "Series updated in the Redis cache.",
}

Labels = tuple[tuple[str, str], ...]


def _number(value: float) -> str:
    """Exact for counts (no exponent: 1030175, not 1.03018e+06), repr for the rest."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, Callable[[], dict[Labels, float]]] = {}
        self.started = time.time()

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        self.counters[name][tuple(sorted(labels.items()))] += value

    def get(self, name: str, **labels: str) -> float:
        return self.counters[name].get(tuple(sorted(labels.items())), 0)

    def total(self, name: str) -> float:
        return sum(self.counters[name].values())

    def gauge(self, name: str, read: Callable[[], dict[Labels, float]]) -> None:
        self.gauges[name] = read

    def render(self) -> str:
        out: list[str] = []
        series = {name: dict(values) for name, values in list(self.counters.items())}
        for name, read in self.gauges.items():
            series[name] = read()
        for name in sorted(series):
            kind = "counter" if name.endswith(("_total", "_sum", "_count")) else "gauge"
            out.append(f"# HELP {name} {HELP.get(name, name)}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in sorted(series[name].items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                out.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve(metrics: Metrics, listen: str, health: Callable[[], dict]) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind, status = metrics.render().encode(), "text/plain; version=0.0.4", 200
            elif self.path == "/healthz":
                state = health()
                body = json.dumps(state).encode()
                kind, status = "application/json", 200 if state.get("ok") else 503
            else:
                body, kind, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet: journald gets the bridge's own logs
            pass

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server



Sample = tuple[str, Labels]
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_UNESCAPE = re.compile(r"\\(.)")


def parse(text: str) -> dict[Sample, float]:
    """Prometheus text exposition -> {(name, sorted labels): value}; comments and blank lines skipped.

    The one parser of /metrics for every suite and for `station-bridge validate`. Raises
    ValueError naming the line it cannot read.
    """
    samples: dict[Sample, float] = {}
    for raw in text.split("\n"):  # the format's only line break (a label value may hold \r or U+2028)
        line = raw.strip(" \t")
        if not line or line.startswith("#"):
            continue
        match = _NAME.match(line)
        if not match:
            raise ValueError(f"not a sample: {raw!r}")
        name, pos = match.group(), match.end()
        labels: list[tuple[str, str]] = []
        if line[pos:pos + 1] == "{":
            pos += 1
            while True:
                rest = line[pos:].lstrip()
                if rest.startswith("}"):
                    pos = len(line) - len(rest) + 1
                    break
                label = _LABEL.match(line, pos)
                if not label:
                    raise ValueError(f"bad labels: {raw!r}")
                value = _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), label.group(2))
                labels.append((label.group(1), value))
                pos = label.end()
                if label.group(3) == "}":
                    break
        fields = line[pos:].split()
        if not fields:
            raise ValueError(f"sample without a value: {raw!r}")
        samples[(name, tuple(sorted(labels)))] = float(fields[0])
    return samples
