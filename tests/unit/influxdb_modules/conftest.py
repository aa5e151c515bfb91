"""Real influxd servers for the influxdb1_* module tests, and an in-process module runner."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

ROLE = Path(__file__).resolve().parents[3] / "roles" / "influxdb"
ADMIN = ("admin", "admin-pw")

# Modules import `ansible.module_utils.influxdb1_api`, as they do inside the role.
import ansible.module_utils  # noqa: E402

if str(ROLE / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROLE / "module_utils"))

from ansible.module_utils.testing import patch_module_args  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    port: int
    auth: bool
    process: subprocess.Popen

    def http(self, path: str, params: dict[str, str], auth: tuple[str, str] | None = ADMIN,
             body: bytes | None = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, data=body or b"", method="POST")
        if auth and self.auth:
            import base64
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        return status, json.loads(text) if text else None

    def query(self, q: str, auth: tuple[str, str] | None = ADMIN) -> list[dict[str, Any]]:
        """Rows of a statement, each with its series name under `_series`."""
        status, payload = self.http("/query", {"q": q}, auth)
        result = payload["results"][0]
        assert "error" not in result, result
        rows = []
        for series in result.get("series", []):
            for values in series.get("values") or []:
                rows.append(dict(zip(series["columns"], values, strict=True), _series=series.get("name")))
        return rows

    def login(self, **extra: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"login_host": "127.0.0.1", "login_port": self.port}
        if self.auth:
            args.update(login_username=ADMIN[0], login_password=ADMIN[1])
        args.update(extra)
        return args


def _start(tmp: Path, auth: bool) -> Server:
    influxd = shutil.which("influxd") or "/usr/bin/influxd"
    if not Path(influxd).exists():
        pytest.fail("influxd not found: install Debian's `influxdb` package (make bootstrap does)")
    http_port, rpc_port = _free_port(), _free_port()
    config = tmp / "influxdb.conf"
    config.write_text(f"""
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{tmp}/meta"
[data]
  dir = "{tmp}/data"
  wal-dir = "{tmp}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {str(auth).lower()}
  log-enabled = false
[continuous_queries]
  enabled = false
[monitor]
  store-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
""")
    process = subprocess.Popen([influxd, "-config", str(config)], stdout=subprocess.DEVNULL,
                               stderr=open(tmp / "influxd.log", "wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ping", timeout=1) as r:
                if r.status == 204:
                    return Server(http_port, auth, process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("influxd did not answer /ping within 30 s: " + (tmp / "influxd.log").read_text()[-2000:])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Auth on, admin already created: the steady state of a station."""
    srv = _start(tmp_path_factory.mktemp("influxd-auth"), auth=True)
    status, _ = srv.http("/query", {"q": f"CREATE USER {ADMIN[0]} WITH PASSWORD '{ADMIN[1]}' WITH ALL PRIVILEGES"},
                         auth=None)
    assert status == 200
    yield srv
    srv.process.terminate()
    srv.process.wait(10)


@pytest.fixture()
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """Auth on and no user at all: a station right after install."""
    srv = _start(tmp_path, auth=True)
    yield srv
    srv.process.terminate()
    srv.process.wait(10)


@pytest.fixture(scope="session")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Auth off."""
    srv = _start(tmp_path_factory.mktemp("influxd-open"), auth=False)
    yield srv
    srv.process.terminate()
    srv.process.wait(10)


_LOADED: dict[str, Any] = {}


def _module(name: str) -> Any:
    if name not in _LOADED:
        spec = importlib.util.spec_from_file_location(f"station_stack_{name}", ROLE / "library" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[name] = module
    return _LOADED[name]


def run(name: str, args: dict[str, Any], check: bool = False, diff: bool = True) -> dict[str, Any]:
    """Runs a module in-process as Ansible would; returns its JSON result (failed ones too)."""
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _module(name).main()
    return json.loads(out.getvalue())
