"""Real servers for tests and the benchmark: influxd and redis-server on free loopback ports."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        raise RuntimeError(f"{name} not found: install Debian's `{package}` package (make bootstrap does)")
    return path



def answers_ping(url: str, timeout: float = 30, context: ssl.SSLContext | None = None) -> bool:
    """Whether a server (influxd, victoria-metrics) answers `url`/ping with 204 within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=1, context=context) as response:
                if response.status == 204:
                    return True
        except OSError:
            time.sleep(0.1)
    return False

class Influxd:
    """influxd 1.x with its own data directory; auth on with an admin when `auth` is set; HTTPS
    only with `tls` (certificate chain and key files, for the name localhost; `ca` trusts it)."""

    def __init__(self, workdir: Path, auth: bool = False, port: int | None = None,
                 create_admin: bool = True, tls: tuple[Path, Path] | None = None, ca: Path | None = None) -> None:
        self.workdir = workdir
        self.auth = auth
        self.create_admin = create_admin
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
        self.context = ssl.create_default_context(cafile=ca) if tls else None
        https = (f'  https-enabled = true\n  https-certificate = "{tls[0]}"\n  https-private-key = "{tls[1]}"\n'
                 if tls else "")
        self.admin = ("admin", "admin-pw")
        self.process: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "influxdb.conf").write_text(f"""
reporting-enabled = false
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
  cache-max-memory-size = "1g"
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {str(auth).lower()}
  log-enabled = false
  max-body-size = 0
{https}[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
  suppress-logo = true
""")

    def start(self) -> Influxd:
        binary = _binary("influxd", "influxdb")
        log = open(self.workdir / "influxd.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen([binary, "-config", str(self.workdir / "influxdb.conf")],
                                        stdout=subprocess.DEVNULL, stderr=log)
        if not answers_ping(self.url, context=self.context):
            self.stop()
            raise RuntimeError("influxd did not answer /ping within 30 s")
        if self.auth and self.create_admin:
            self.query(f"CREATE USER admin WITH PASSWORD '{self.admin[1]}' WITH ALL PRIVILEGES", credentials=False,
                       allow_error=True)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def _request(self, path: str, params: dict[str, str], body: bytes | None = None,
                 credentials: bool = True) -> tuple[int, str]:
        request = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(params)}",
                                         data=body if body is not None else b"", method="POST")
        if self.auth and credentials:
            token = base64.b64encode(":".join(self.admin).encode()).decode()
            request.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.context) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def query(self, q: str, db: str | None = None, credentials: bool = True, allow_error: bool = False) -> list[dict]:
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        status, text = self._request("/query", params, credentials=credentials)
        payload = json.loads(text)
        result = payload.get("results", [{}])[0]
        if not allow_error:
            assert status == 200 and "error" not in payload and "error" not in result, text
        rows = []
        for series in result.get("series", []):
            for values in series.get("values") or []:
                row = dict(zip(series["columns"], values, strict=True))
                row.update(series.get("tags") or {})
                row["_measurement"] = series.get("name")
                rows.append(row)
        return rows

    def write(self, lines: str, db: str) -> tuple[int, str]:
        return self._request("/write", {"db": db, "precision": "ns"}, body=lines.encode())

    def count(self, db: str, measurement: str, field: str = "bid") -> int:
        rows = self.query(f'SELECT count("{field}") FROM "{measurement}"', db=db)
        return int(rows[0]["count"]) if rows else 0


class RedisServer:
    def __init__(self, workdir: Path, password: str = "redis-pw") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        binary = _binary("redis-server", "redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--requirepass", self.password, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


class VictoriaMetrics:
    """victoria-metrics (Debian's single node) with its own data directory, deduplicating within a
    millisecond (as the role runs it) and no query delay, so a test reads what it wrote at once."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> VictoriaMetrics:
        binary = _binary("victoria-metrics", "victoria-metrics")
        log = open(self.workdir / "victoria-metrics.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [binary, f"-storageDataPath={self.workdir / 'data'}", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-retentionPeriod=1y", "-dedup.minScrapeInterval=1ms", "-search.latencyOffset=0s",
             "-search.disableCache", "-loggerLevel=WARN"],
            stdout=subprocess.DEVNULL, stderr=log)
        if not answers_ping(self.url):
            self.stop()
            raise RuntimeError("victoria-metrics did not answer /ping within 30 s")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def requests(self, path: str = "/influx/write") -> int:
        """Requests the server answered on `path` (its own /metrics)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(f'vm_http_requests_total{{path="{path}"'):
                    return int(float(line.rpartition(" ")[2]))
        return 0

    def export(self, match: str, settle: float = 1.0) -> list[dict]:
        """Every series matching `match` (a series selector) with its samples, via /api/v1/export
        (not subject to the query API's delay). Rows reach the searchable storage a moment after
        the write's answer even after a flush: read until two reads `settle` s apart agree."""
        body = urllib.parse.urlencode({"match[]": match}).encode()
        previous: list[dict] | None = None
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(self.url + "/internal/force_flush", timeout=30):
                pass
            with urllib.request.urlopen(self.url + "/api/v1/export", data=body, timeout=60) as response:
                found = sorted((json.loads(line) for line in response.read().splitlines() if line.strip()),
                               key=lambda s: json.dumps(s["metric"], sort_keys=True))
            if (found and found == previous) or time.monotonic() > deadline:
                return found
            previous = found
            time.sleep(settle)
