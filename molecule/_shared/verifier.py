"""Shared by the scenarios' testinfra verifiers: the station's InfluxDB, and re-running converge.

Requests run on the station itself (`docker exec` through testinfra) against its
loopback, the way a local bridge or Grafana reaches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ADMIN = ("admin", "molecule-admin-pw")
WRITER = ("bridge", "molecule-writer-pw")
READER = ("grafana", "molecule-reader-pw")

# Runs on the station: one HTTP request, prints status and body as JSON.
_HTTP = r"""
import base64, json, sys, urllib.error, urllib.parse, urllib.request
a = json.loads(sys.argv[1])
url = a["url"] + ("?" + urllib.parse.urlencode(a["params"]) if a["params"] else "")
body = a["body"].encode() if a["body"] is not None else None
req = urllib.request.Request(url, data=body, method=a["method"])
if a["auth"]:
    tok = base64.b64encode(("%s:%s" % tuple(a["auth"])).encode()).decode()
    req.add_header("Authorization", "Basic " + tok)
try:
    with urllib.request.urlopen(req, timeout=15) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(json.dumps({"status": status, "body": text}))
"""


@dataclass
class Response:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)

    def series(self) -> list[dict[str, Any]]:
        """Series of the first statement; fails on an InfluxQL error."""
        result = self.json()["results"][0]
        assert "error" not in result, result["error"]
        return result.get("series", [])

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for s in self.series():
            for values in s.get("values", []):
                row = dict(zip(s["columns"], values, strict=True))
                row.update(s.get("tags") or {})
                out.append(row)
        return out


def http(host: Any, method: str, url: str, params: dict[str, str] | None = None,
         body: str | None = None, auth: tuple[str, str] | None = None) -> Response:
    """One HTTP request made on the station (its loopback), with optional basic auth."""
    args = {"method": method, "url": url, "params": params or {}, "body": body, "auth": auth}
    data = json.loads(host.check_output("python3 -c %s %s", _HTTP, json.dumps(args)))
    return Response(data["status"], data["body"])


class Influx:
    def __init__(self, host: Any) -> None:
        self._host = host

    def request(self, method: str, path: str, params: dict[str, str],
                body: str | None = None, auth: tuple[str, str] | None = None) -> Response:
        return http(self._host, method, "http://127.0.0.1:8086" + path, params, body, auth)

    def query(self, q: str, auth: tuple[str, str] | None = ADMIN, db: str | None = None) -> Response:
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        return self.request("POST", "/query", params, auth=auth)

    def write(self, lines: str, auth: tuple[str, str] | None = WRITER, db: str = "tick",
              rp: str | None = None) -> Response:
        params = {"db": db, "precision": "ns"}
        if rp:
            params["rp"] = rp
        return self.request("POST", "/write", params, body=lines, auth=auth)


@pytest.fixture(scope="module")
def influx(host: Any) -> Influx:
    return Influx(host)


@dataclass
class PlayResult:
    rc: int
    changed: set[tuple[str, str]]
    output: dict[str, Any]


def run_converge(extra_vars: str, *flags: str) -> PlayResult:
    """Run this scenario's converge playbook against the instance, as molecule does."""
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    return run_playbook(scenario / "converge.yml", extra_vars, *flags)


def run_playbook(playbook: Path, extra_vars: str, *flags: str) -> PlayResult:
    """Run a playbook against the scenario's instances with a vars file of the scenario."""
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # task timing would print into the JSON
    proc = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(playbook), "-e", f"@{scenario / extra_vars}", *flags],
        capture_output=True, text=True, env=env, check=False, timeout=600,
    )
    assert proc.stdout, proc.stderr
    output = json.loads(proc.stdout)
    changed: set[tuple[str, str]] = set()
    for play in output["plays"]:
        for task in play["tasks"]:
            name = task["task"]["name"]
            for result in task["hosts"].values():
                items = result.get("results") or [result]
                for item in items:
                    if item.get("changed"):
                        label = item.get("_ansible_item_label", item.get("item", ""))
                        changed.add((name, json.dumps(label) if not isinstance(label, str) else label))
    return PlayResult(proc.returncode, changed, output)


REDIS_ADMIN = ("admin", "molecule-redis-admin-pw")
REDIS_BRIDGE = ("bridge", "molecule-redis-bridge-pw")


def redis_cli(host: Any, auth: tuple[str, str] | None, *command: str) -> str:
    """redis-cli on the station; the password travels in the environment, not argv."""
    env = f"REDISCLI_AUTH={auth[1]} " if auth else ""
    user = f"--user {auth[0]} " if auth else ""
    quoted = " ".join("'" + c.replace("'", "'\\''") + "'" for c in command)
    result = host.run(f"{env}redis-cli --no-auth-warning {user}{quoted}")
    return (result.stdout + result.stderr).strip()


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    """Polls predicate until it returns something truthy, which it returns; fails after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
