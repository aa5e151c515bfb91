"""Probes the lab containers' InfluxDB on their network address, unauthenticated, in a tight loop.

Started in the background by prepare.yml before the first install, stopped by the verifier
(tests/test_no_auth_off_window.py), which reads what it saw. Every probe is a query and a write
without credentials; the only acceptable answers are 401 or no connection at all. Anything else
(200/204 with auth off, 403 "create admin user first" or a 404 write while auth is on with no
admin yet) is InfluxDB answering without auth on the network.

Usage: prober.py OUT_DIR CONTAINER [CONTAINER...]; writes OUT_DIR/prober.json every second and
exits when OUT_DIR/prober.stop appears or after --max-seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import time
from pathlib import Path


def address(container: str) -> str:
    out = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                          container], capture_output=True, text=True, check=True).stdout.split()
    return out[0]


def probe(host: str, method: str, path: str) -> tuple[str, str]:
    """(outcome, detail): 'closed', or the HTTP status and the start of the body."""
    conn = http.client.HTTPConnection(host, 8086, timeout=0.5)
    try:
        conn.request(method, path, body=b"probe value=1" if "write" in path else b"",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        return str(response.status), response.read(200).decode("utf-8", "replace")
    except OSError as exc:
        return "closed", type(exc).__name__
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("containers", nargs="+")
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stop, report = args.out / "prober.stop", args.out / "prober.json"
    stop.unlink(missing_ok=True)
    targets = {name: address(name) for name in args.containers}
    state = {"pid": os.getpid(), "targets": targets, "probes": 0, "stopped": False,
             "outcomes": {name: {} for name in targets}, "unauthenticated": []}
    started = last_write = time.monotonic()
    while not stop.exists() and time.monotonic() - started < args.max_seconds:
        for name, ip in targets.items():
            for method, path in (("POST", "/query?q=SHOW+DATABASES"), ("POST", "/write?db=_internal")):
                outcome, detail = probe(ip, method, path)
                counts = state["outcomes"][name]
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome not in ("closed", "401") and len(state["unauthenticated"]) < 100:
                    state["unauthenticated"].append({"container": name, "path": path, "status": outcome,
                                                     "body": detail, "at": round(time.monotonic() - started, 3)})
        state["probes"] += 1
        if time.monotonic() - last_write > 1:
            report.write_text(json.dumps(state))
            last_write = time.monotonic()
        time.sleep(0.01)
    state["stopped"] = True
    report.write_text(json.dumps(state))


if __name__ == "__main__":
    main()
