"""Validation of a station whose link to a central is closed by its schedule (issue 24): the
station's own metrics cannot reach that central before its window, so playbooks/tasks/
validate-station.yml (playbooks/validate.yml, the rollout's post-check) does not ask it, as
`station-bridge validate` reports it (`pending_by_schedule`: healthy); a central whose link is up is
still asked. Run by ansible-playbook on this machine: the station's `station-bridge validate` is a
stand-in printing such a report, each central's InfluxDB /query a loopback HTTP server that records
what it is asked. About 10 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import yaml

ROOT = Path(__file__).resolve().parents[2]

REPORT = {"ok": True, "table": "(stand-in)", "problems": [], "started_ns": 0,
          "self_metrics": [{"station": "ams", "measurement": "station_bridge"}],
          "instances": [{"instance": "kraken", "destinations": [
              {"destination": "local", "state": "ok"},
              {"destination": "central", "state": "pending_by_schedule", "next_window": "2026-12-08T02:00:00Z"},
              {"destination": "central2", "state": "ok"}]}]}


class Central(BaseHTTPRequestHandler):
    asked: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        Central.asked.append(body["q"][0])
        answer = {"results": [{"statement_id": 0, "series": [{"name": "station_bridge", "columns": ["time", "last"],
                                                                "values": [[1, 5]]}]}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_a_central_pending_by_schedule_is_not_asked_for_the_stations_metrics(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Central)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stand_in = tmp_path / "station-bridge"
    stand_in.write_text(f"#!{sys.executable}\nimport sys\nsys.stdin.read()\nprint({json.dumps(json.dumps(REPORT))})\n")
    stand_in.chmod(0o755)
    port = server.server_address[1]
    inventory = {"all": {"vars": {"ansible_python_interpreter": sys.executable, "ansible_connection": "local",
                                  "influxdb_reader_password": "reader-pw"}, "children": {
        "central": {"hosts": {"ix1": {"influxdb_http_port": port}, "ix2": {"influxdb_http_port": port}}},
        "stations": {"hosts": {"ams": {"station_code": "ams"}}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "vars.json").write_text(json.dumps({
        "fleet_station_passwords": {"ams": "pw"}, "validate_bridge": str(stand_in), "validate_redis": False,
        "fleet_centrals": [{"name": "central", "url": "http://ix1:8086", "host": "ix1"},
                           {"name": "central2", "url": "http://ix2:8086", "host": "ix2"}]}))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "name": "Validate", "hosts": "stations", "gather_facts": False,
        "vars_files": [str(ROOT / "roles/fleet/defaults/main.yml"), str(ROOT / "roles/fleet/vars/main.yml"),
                       str(ROOT / "playbooks/vars/validate.yml")],
        "tasks": [{"name": "Validate the station",
                   "ansible.builtin.include_tasks": str(ROOT / "playbooks/tasks/validate-station.yml")}]}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / ".ansible"))
    try:
        run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                              str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    finally:
        server.shutdown()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # central2 (its link up) was asked once for ams' self-metrics; central (closed) never was.
    assert len(Central.asked) == 1 and "\"station_bridge\"" in Central.asked[0], Central.asked
    assert "at central2 (ix2)" in run.stdout and "at central (ix1)" not in run.stdout, run.stdout[-4000:]
