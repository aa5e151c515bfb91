#!/usr/bin/env python3
"""Where `make test` spends its time: each stage's wall time and, for molecule, each scenario's
steps (create, prepare, check, converge, idempotence, verify, destroy, ...), read from molecule's
own step lines as they stream by. Records go to a TSV file; `report` prints the table.

  lab/timing.py reset
  lab/timing.py run STAGE -- COMMAND...     (passes the command's output through, keeps its exit code)
  lab/timing.py report
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

RECORDS = Path(os.environ.get("STATION_TIMINGS", Path(__file__).resolve().parents[1] / ".cache" / "timings.tsv"))
# molecule: "INFO     [station > converge] Executing" ... "[station > converge] Executed: Successful"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEP = re.compile(r"\[(?P<scenario>[\w.-]+) > (?P<step>[\w-]+)\] (?P<what>Executing|Executed)(?:: (?P<result>.*))?")


def record(stage: str, step: str, seconds: float, result: str) -> None:
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    with RECORDS.open("a", encoding="utf-8") as out:
        out.write(f"{stage}\t{step}\t{seconds:.1f}\t{result}\n")


def run(stage: str, command: list[str]) -> int:
    started = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # molecule's step lines when they happen
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    steps: dict[tuple[str, str], float] = {}
    for raw in proc.stdout:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        match = STEP.search(ANSI.sub("", raw.decode("utf-8", "replace")))
        if not match:
            continue
        key = (match["scenario"], match["step"])
        if match["what"] == "Executing":
            steps[key] = time.monotonic()
        elif key in steps:
            record(f"{stage}:{key[0]}", key[1], time.monotonic() - steps.pop(key), (match["result"] or "").strip())
    rc = proc.wait()
    record(stage, "", time.monotonic() - started, "ok" if rc == 0 else f"exit {rc}")
    return rc


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes:3d}:{secs:02d}"


def report() -> int:
    if not RECORDS.exists():
        print("no timings recorded")
        return 0
    rows = [line.split("\t") for line in RECORDS.read_text(encoding="utf-8").splitlines() if line]
    stages = [(s, float(t), r) for s, step, t, r in rows if not step]
    steps: dict[str, list[tuple[str, float, str]]] = {}
    for stage, step, seconds, result in rows:
        if step:
            steps.setdefault(stage, []).append((step, float(seconds), result))
    total = sum(t for _, t, _ in stages)
    print("\nWhere the time went (lab/timing.py; min:s)")
    print(f"{'stage / step':44} {'time':>7}  result")
    # A stage still running (or killed) has steps but no record of its own yet.
    unfinished = {s.split(":", 1)[0] for s in steps} - {s for s, _, _ in stages}
    for stage, seconds, result in stages + [(s, 0.0, "(running or interrupted)") for s in sorted(unfinished)]:
        print(f"{stage:44} {clock(seconds)}  {result}")
        for scenario in [s for s in steps if s.startswith(stage + ":")]:
            subtotal = sum(t for _, t, _ in steps[scenario])
            print(f"  {scenario.split(':', 1)[1]:42} {clock(subtotal)}")
            for step, step_seconds, result in steps[scenario]:
                print(f"    {step:40} {clock(step_seconds)}  {result[:40]}")
    print(f"{'total':44} {clock(total)}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["reset"]:
        RECORDS.unlink(missing_ok=True)
        return 0
    if argv[:1] == ["report"]:
        return report()
    if len(argv) >= 3 and argv[0] == "run" and "--" in argv:
        split = argv.index("--")
        return run(argv[1], argv[split + 1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
