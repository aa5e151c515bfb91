"""playbooks/backup.yml and playbooks/restore.yml: write, back up, wipe, restore, read back.
Runs last (file order): it drops and restores the station's database."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import ADMIN, WRITER, run_playbook

PLAYBOOKS = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks"
COUNTS = "SELECT count(*) FROM tick.long_term.backup_probe; SELECT count(bid) FROM tick.standard.ticks"


def test_backup_wipe_restore_reads_back_every_point(host, influx, tmp_path):
    now = time.time_ns()
    lines = "\n".join(f"backup_probe,sensor=s{i % 3} value={i}i {now - i * 1000}" for i in range(500))
    assert influx.write(lines, auth=WRITER, db="tick", rp="long_term").status == 204
    before = influx.query(COUNTS, auth=ADMIN).json()["results"]
    counts = [r["series"][0]["values"][0][1] for r in before]
    assert counts[0] == 500 and counts[1] > 0

    backup = run_playbook(PLAYBOOKS / "backup.yml", "station.yml", "-e", f"backup_controller_dir={tmp_path}")
    assert backup.rc == 0, backup.output
    archives = list(tmp_path.glob("*/tick-*.tar.gz"))
    assert len(archives) == 1 and archives[0].stat().st_mode & 0o077 == 0

    assert influx.query('DROP DATABASE "tick"', auth=ADMIN).status == 200
    assert influx.query("SELECT count(bid) FROM tick.standard.ticks", auth=ADMIN).json()["results"][0].get("error")

    restore = run_playbook(PLAYBOOKS / "restore.yml", "station.yml", "-e", f"restore_archive={archives[0]}",
                           "-e", "restore_database=tick", "-e", "restore_replace=true")
    assert restore.rc == 0, restore.output
    after = influx.query(COUNTS, auth=ADMIN).json()["results"]
    assert [r["series"][0]["values"][0][1] for r in after] == counts
    rps = {row["name"] for row in influx.query("SHOW RETENTION POLICIES ON tick", auth=ADMIN).rows()}
    assert {"standard", "high_frequency", "long_term"} <= rps
    # The bridge's writer can write into the restored database again.
    assert influx.write(f"backup_probe,sensor=x value=1i {time.time_ns()}", auth=WRITER, db="tick",
                        rp="long_term").status == 204
