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
  lab/timing.py lanes [--log-dir DIR] LANE... -- COMMAND...
        lanes side by side, each its stages in order: a LANE is `stage:minutes[,stage:minutes...]`
        and a stage runs `COMMAND stage` under its limit, as `run` does. A stage's whole output goes
        to DIR/STAGE.log and is printed in one piece when it ends; meanwhile the lines that say where
        it is (molecule's steps, pytest's summaries and failures) are printed as they come, prefixed
        with the stage. A failed stage ends its lane, the other lanes run to their end; the exit
        status is the first failure's.
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
from collections.abc import Callable
from pathlib import Path

RECORDS = Path(os.environ.get("STATION_TIMINGS", Path(__file__).resolve().parents[1] / ".cache" / "timings.tsv"))
# molecule: "INFO     [station > converge] Executing" ... "[station > converge] Executed: Successful"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEP = re.compile(r"\[(?P<scenario>[\w.-]+) > (?P<step>[\w-]+)\] (?P<what>Executing|Executed)(?:: (?P<result>.*))?")
# What a lane prints live besides molecule's steps: pytest's summary lines and failures, and this
# script's own notes.
PROGRESS = re.compile(r"^(=+ .*\b(passed|failed|errors?|no tests ran)\b.*=+|FAILED .*|ERROR .*|\[timing\] .*)$")
_records_lock = threading.Lock()
_print_lock = threading.Lock()


def record(stage: str, step: str, seconds: float, result: str, lane: str = "") -> None:
    """One row: a stage (step empty) or a molecule step; `lane` names the lane a stage ran in."""
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    with _records_lock, RECORDS.open("a", encoding="utf-8") as out:
        out.write(f"{stage}\t{step}\t{seconds:.1f}\t{result}\t{lane}\n")


def _to_stdout(raw: bytes) -> None:
    with _print_lock:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()


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


def run(stage: str, command: list[str], limit_s: float | None = None,
        write: Callable[[bytes], None] = _to_stdout, lane: str = "") -> int:
    """Runs one stage; everything it and this function print goes through `write`, line by line."""

    def note(*lines: str) -> None:
        write(("\n".join(lines) + "\n").encode())

    started = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # molecule's step lines when they happen
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    steps: dict[tuple[str, str], float] = {}

    def pass_through() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            write(raw)
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
        note("", f"[timing] {stage} still running after {limit_s / 60:g} min: stopping it; still running:",
             *(f"  {p}" for p in _group(proc.pid)))
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
        note("", f"[timing] {stage} left processes behind; killing them:", *(f"  {p}" for p in left))
        _signal_group(proc.pid, signal.SIGKILL)
    reader.join(5)
    record(stage, "", time.monotonic() - started, result, lane)
    return rc


def lanes(specs: list[str], command: list[str], log_dir: Path) -> int:
    log_dir.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[float, int]] = []
    started = time.monotonic()

    def lane(spec: str, name: str) -> None:
        for entry in spec.split(","):
            stage, _, minutes = entry.partition(":")
            log = log_dir / f"{stage}.log"
            _to_stdout(f"[timing] {stage}: started, its output in {log}\n".encode())
            with log.open("wb") as out:
                def write(raw: bytes, out=out, stage=stage) -> None:
                    out.write(raw)
                    out.flush()
                    line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
                    if STEP.search(line) or PROGRESS.match(line):
                        _to_stdout(f"[{stage}] {line}\n".encode())

                rc = run(stage, [*command, stage], float(minutes) * 60 if minutes else None, write, name)
            with _print_lock:
                sys.stdout.buffer.write(f"\n{'=' * 20} {stage}: {'ok' if rc == 0 else f'exit {rc}'}; "
                                        f"its whole output {'=' * 20}\n".encode())
                sys.stdout.buffer.write(log.read_bytes())
                sys.stdout.buffer.write(f"{'=' * 20} end of {stage} {'=' * 20}\n".encode())
                sys.stdout.flush()
            if rc != 0:
                failures.append((time.monotonic(), rc))
                return

    threads = [threading.Thread(target=lane, args=(spec, f"lane {n}")) for n, spec in enumerate(specs, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rc = min(failures)[1] if failures else 0
    record(f"{len(specs)} lanes side by side", "", time.monotonic() - started, "ok" if rc == 0 else f"exit {rc}")
    return rc


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes:3d}:{secs:02d}"


def report() -> int:
    if not RECORDS.exists():
        print("no timings recorded")
        return 0
    rows = [(line.split("\t") + [""])[:5] for line in RECORDS.read_text(encoding="utf-8").splitlines() if line]
    stages = [(s, float(t), r, lane) for s, step, t, r, lane in rows if not step]
    steps: dict[str, list[tuple[str, float, str]]] = {}
    for stage, step, seconds, result, _ in rows:
        if step:
            steps.setdefault(stage, []).append((step, float(seconds), result))
    # Wall time: stages that ran in a lane are inside their lanes' own row.
    total = sum(t for _, t, _, lane in stages if not lane)
    print("\nWhere the time went (lab/timing.py; min:s)")
    print(f"{'stage / step':44} {'time':>7}  result")
    # A stage still running (or killed) has steps but no record of its own yet.
    unfinished = {s.split(":", 1)[0] for s in steps} - {s for s, _, _, _ in stages}
    # Lane stages under their lanes' row (recorded when the last lane ended), by lane.
    in_lanes = sorted((row for row in stages if row[3]), key=lambda row: row[3])
    ordered = [row for row in stages if not row[3]]
    at = next((i + 1 for i, row in enumerate(ordered) if row[0].endswith("lanes side by side")), len(ordered))
    ordered[at:at] = in_lanes
    ordered += [(s, 0.0, "(running or interrupted)", "") for s in sorted(unfinished)]
    for stage, seconds, result, lane in ordered:
        indent = "  " if lane else ""
        print(f"{indent + (lane + ': ' if lane else '') + stage:44} {clock(seconds)}  {result}")
        for scenario in [s for s in steps if s.startswith(stage + ":")]:
            subtotal = sum(t for _, t, _ in steps[scenario])
            print(f"{indent}  {scenario.split(':', 1)[1]:{42 - len(indent)}} {clock(subtotal)}")
            for step, step_seconds, result in steps[scenario]:
                print(f"{indent}    {step:{40 - len(indent)}} {clock(step_seconds)}  {result[:40]}")
    print(f"{'total (wall)':44} {clock(total)}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["reset"]:
        RECORDS.unlink(missing_ok=True)
        return 0
    if argv[:1] == ["report"]:
        return report()
    if len(argv) >= 3 and argv[0] == "lanes" and "--" in argv:
        split = argv.index("--")
        options = argv[1:split]
        log_dir = Path(".cache/logs")
        if "--log-dir" in options:
            at = options.index("--log-dir")
            log_dir = Path(options[at + 1])
            del options[at:at + 2]
        return lanes(options, argv[split + 1:], log_dir)
    if len(argv) >= 3 and argv[0] == "run" and "--" in argv:
        split = argv.index("--")
        options = argv[2:split]
        limit = float(options[options.index("--limit") + 1]) * 60 if "--limit" in options else None
        return run(argv[1], argv[split + 1:], limit)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
