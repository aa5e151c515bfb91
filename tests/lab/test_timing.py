"""lab/timing.py, which runs every `make test` stage: a stage that hangs is stopped at its limit
with its Python stacks in the log (CI once spent its whole 90 minutes on a pytest process stuck
at exit), and nothing a stage leaves running keeps the run waiting or outlives it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMING = ROOT / "lab" / "timing.py"


def timing(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, STATION_TIMINGS=str(tmp_path / "timings.tsv"))
    return subprocess.run([sys.executable, str(TIMING), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_stage_past_its_limit_is_stopped_with_its_stacks_and_fails(tmp_path):
    hung = ("import faulthandler, signal, time\n"
            "faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)\n"
            "def stuck_at_exit():\n"
            "    time.sleep(600)\n"
            "stuck_at_exit()\n")
    started = time.monotonic()
    run = timing(tmp_path, "run", "hung", "--limit", "0.05", "--", sys.executable, "-c", hung)
    assert run.returncode == 124, run.stdout
    assert time.monotonic() - started < 30
    assert "hung still running after 0.05 min" in run.stdout
    assert "stuck_at_exit" in run.stdout  # the stack of the hung process, from its SIGTERM
    report = timing(tmp_path, "report").stdout
    assert "stopped after 0.05 min" in report


def test_a_process_left_behind_holding_the_output_is_killed_and_the_exit_code_kept(tmp_path):
    pid_file = tmp_path / "child.pid"
    leaves = (f"import subprocess, sys\n"
              f"child = subprocess.Popen(['sleep', '600'])\n"  # inherits stdout: the output pipe
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              f"print('done', flush=True)\n"
              f"sys.exit(3)\n")
    started = time.monotonic()
    run = timing(tmp_path, "run", "leaky", "--", sys.executable, "-c", leaves)
    assert run.returncode == 3
    assert time.monotonic() - started < 30  # the pipe stayed open for 600 s
    child = int(pid_file.read_text())
    assert "leaky left processes behind" in run.stdout and f"{child} sleep 600" in run.stdout
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)
    assert "exit 3" in timing(tmp_path, "report").stdout


def test_a_clean_stage_passes_its_output_and_records_molecule_steps(tmp_path):
    lines = ("print('INFO     [station > converge] Executing')\n"
             "print('INFO     [station > converge] Executed: Successful')\n")
    run = timing(tmp_path, "run", "molecule", "--limit", "1", "--", sys.executable, "-c", lines)
    assert run.returncode == 0
    assert "[station > converge] Executed: Successful" in run.stdout
    assert "left processes behind" not in run.stdout
    report = timing(tmp_path, "report").stdout
    assert "molecule" in report and "converge" in report and "Successful" in report


def test_lanes_run_side_by_side_print_each_whole_log_and_a_failure_ends_only_its_lane(tmp_path):
    """`make test`'s lanes: stages of one lane in order, lanes at the same time; a failed stage
    stops its own lane only; each stage's output whole (and in its log), its progress live."""
    stage = tmp_path / "stage.sh"
    stage.write_text("#!/bin/bash\n"
                     "case $1 in\n"
                     "  slow) echo '[s1 > verify] Executing'; sleep 2; echo detail; "
                     "echo '[s1 > verify] Executed: Successful';;\n"
                     "  after) echo '=== 3 passed in 0.1s ===';;\n"
                     "  broken) echo 'FAILED t.py::test_x'; exit 3;;\n"
                     "  never) touch never-ran; exit 0;;\n"
                     "esac\n")
    stage.chmod(0o755)
    started = time.monotonic()
    run = timing(tmp_path, "lanes", "--log-dir", str(tmp_path / "logs"), "slow:1,after:1", "broken:1,never:1",
                 "--", str(stage))
    took = time.monotonic() - started
    assert run.returncode == 3, run.stdout
    assert took < 2 + 1.5  # side by side: slow's 2 s, not slow + broken one after the other
    assert not (Path.cwd() / "never-ran").exists() and not (tmp_path / "never-ran").exists()
    assert "[broken] FAILED t.py::test_x" in run.stdout and "[after] === 3 passed in 0.1s ===" in run.stdout
    assert "[slow] detail" not in run.stdout  # only progress lines live ...
    whole = run.stdout.split("slow: ok; its whole output", 1)[1]
    assert whole.split("end of slow", 1)[0].count("detail") == 1  # ... and the whole log once it ended
    assert (tmp_path / "logs" / "slow.log").read_text().count("detail") == 1
    report = timing(tmp_path, "report").stdout
    assert "2 lanes side by side" in report and "exit 3" in report
    assert report.index("2 lanes side by side") < report.index("lane 1: slow") < report.index("lane 1: after")
    assert "lane 2: broken" in report and "never" not in report
    wall = report.split("total (wall)", 1)[1].split()[0]
    assert wall in ("0:02", "0:03")  # the lanes' wall time, not the sum of their stages


def test_docs_name_the_scenarios_of_each_molecule_lane_as_the_makefile_runs_them():
    """docs/testing.md says which scenarios each molecule stage runs: the Makefile's MOLECULE_A/_B/_C."""
    import re

    shown = subprocess.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "--eval",
                            "lanes-shown:\n\t@echo $(MOLECULE_A) / $(MOLECULE_B) / $(MOLECULE_C)", "lanes-shown"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    stages = dict(zip("abc", (part.split() for part in shown.split("/")), strict=True))
    text = " ".join((ROOT / "docs" / "testing.md").read_text().split())
    for letter, scenarios in stages.items():
        named = re.search(rf"`molecule-{letter}` \(scenarios ([^)]*)\)", text)
        assert named, f"docs/testing.md no longer names the scenarios of molecule-{letter}"
        assert re.findall(r"`([\w-]+)`", named[1]) == scenarios, (letter, named[1], scenarios)
