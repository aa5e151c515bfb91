#!/usr/bin/env python3
"""Where `make test` spends its time: each stage's wall time and, for molecule, each scenario's
steps (create, prepare, check, converge, idempotence, verify, destroy, ...), read from molecule's
own step lines as they stream by. Records go to a TSV file; `report` prints the table.

  lab/timing.py reset
  lab/timing.py run STAGE [--limit MINUTES] -- COMMAND...
        passes the command's output through and keeps its exit code. The command runs in its own
        process group: past MINUTES it is stopped (SIGTERM, which makes the Python test suites
        print every thread's stack, then SIGKILL) and the stage fails with 124 instead of hanging
        until CI's own limit; processes it left behind are listed and killed when it ends.
  lab/timing.py report
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
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


def _group(pgid: int) -> list[str]:
    """The processes still in a process group, as `pid command`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{stat.parent.name} {cmdline.strip()[:160]}")
        except (OSError, IndexError, ValueError):
            continue
    return found


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def run(stage: str, command: list[str], limit_s: float | None = None) -> int:
    started = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # molecule's step lines when they happen
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    steps: dict[tuple[str, str], float] = {}

    def pass_through() -> None:
        assert proc.stdout is not None
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
                record(f"{stage}:{key[0]}", key[1], time.monotonic() - steps.pop(key),
                       (match["result"] or "").strip())

    reader = threading.Thread(target=pass_through, daemon=True)
    reader.start()
    try:
        rc = proc.wait(limit_s)
        result = "ok" if rc == 0 else f"exit {rc}"
    except subprocess.TimeoutExpired:
        print(f"\n[timing] {stage} still running after {limit_s / 60:g} min: stopping it; still running:",
              *_group(proc.pid), sep="\n  ", flush=True)
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        rc, result = 124, f"stopped after {limit_s / 60:g} min"
    # A process the stage started and left running (a test's server, a daemonised child) would go on
    # taking CPU from the next stages, and one holding the output pipe would keep this reader waiting.
    reader.join(5)
    left = _group(proc.pid)
    if left:
        print(f"\n[timing] {stage} left processes behind; killing them:", *left, sep="\n  ", flush=True)
        _signal_group(proc.pid, signal.SIGKILL)
    reader.join(5)
    record(stage, "", time.monotonic() - started, result)
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
        options = argv[2:split]
        limit = float(options[options.index("--limit") + 1]) * 60 if "--limit" in options else None
        return run(argv[1], argv[split + 1:], limit)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
