"""The read-only info module, and one module run through the real `ansible` CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_schema_info_reads_everything_and_changes_nothing(run, server):
    run("influxdb1_database", server.login(name="infodb"))
    run("influxdb1_retention_policy", server.login(database="infodb", name="r1", duration="1d", default=True))
    run("influxdb1_continuous_query", server.login(
        database="infodb", name="c1", query="SELECT max(v) INTO r1.out FROM t GROUP BY time(1h)"))
    info = run("influxdb1_schema_info", server.login(), check=True)
    assert info["changed"] is False
    assert "infodb" in info["databases"]
    assert {"name": "r1", "duration": "24h0m0s", "shard_duration": "1h0m0s", "replication": 1,
            "default": True} in info["retention_policies"]["infodb"]
    assert [c["name"] for c in info["continuous_queries"]["infodb"]] == ["c1"]
    assert {"name": "admin", "admin": True, "grants": {}} in info["users"]


def test_module_runs_through_the_ansible_cli_in_check_and_diff_mode(server, tmp_path, collections_path):
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    ansible = Path(sys.executable).with_name("ansible")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path),
               ANSIBLE_LOAD_CALLBACK_PLUGINS="true", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_CONFIG=str(config))
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    env.pop("PYTHONPATH", None)  # ansible-test units narrows it to module_utils for module tests
    args = (f"name=cli_db login_host=127.0.0.1 login_port={server.port} "
            f"login_username={server.admin[0]} login_password={server.admin[1]}")
    proc = subprocess.run([str(ansible), "localhost", "-c", "local", "-i", "localhost,",
                           "-e", f"ansible_python_interpreter={sys.executable}",
                           "-m", "station_stack.station.influxdb1_database", "-a", args, "--check", "--diff"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["changed"] is True
    assert result["diff"] == {"before": {}, "after": {"name": "cli_db"}}
    assert "cli_db" not in {r["name"] for r in server.query("SHOW DATABASES")}
