"""`make bench`: one table, every figure measured in this run on this machine, written to
docs/benchmarks.md with the machine's description and the date.

1. The bridge (bridge/bench/run.py): end-to-end throughput as a ratio of the raw line-protocol
   ceiling, the naive pattern's ratio, publish -> queryable latency at half load, peak RSS.
2. Station converge on a fresh lab container (station-stack-bench): first run, idempotent
   second run and --check, with their ratios to the first run.
Times are wall-clock seconds; ratios compare figures from the same run (machines here are noisy).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_HOST = "station-stack-bench"


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, check=False, **kwargs)


def timed_playbook(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    started = time.monotonic()
    proc = run(["ansible-playbook", *args], env=env)
    took = time.monotonic() - started
    recap = re.search(rf"{BENCH_HOST}\s*:\s*ok=\d+\s+changed=(\d+).*failed=(\d+)", proc.stdout)
    if proc.returncode != 0 or not recap:
        raise SystemExit(f"ansible-playbook {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return took, int(recap.group(1)), proc.stdout


def machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem_kib = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))
    docker = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    model = cpu.group(1) if cpu else platform.machine()
    return (f"{platform.node()}: {os.cpu_count()} cores ({model}), {mem_kib / 2**20:.0f} GiB, "
            f"Linux {platform.release()}, Docker {docker}, Python {platform.python_version()}")


def converge_rows() -> list[tuple[str, str, str]]:
    env = dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=str(ROOT / "inventories/local/lab-vault-password"))
    inventory = ROOT / ".cache/bench/inventory"
    inventory.mkdir(parents=True, exist_ok=True)
    # The lab inventory's group_vars, applied to a throwaway host.
    (inventory / "hosts.yml").write_text(json.dumps({"all": {"children": {"stations": {"hosts": {BENCH_HOST: {
        "ansible_connection": "community.docker.docker", "ansible_user": "root"}}}}}}))
    link = inventory / "group_vars"
    if not link.exists():
        link.symlink_to(ROOT / "inventories/local/group_vars")
    lab = json.dumps({"lab_instances": [{"name": BENCH_HOST, "hostname": "bench"}]})
    run(["ansible-playbook", "-i", "localhost,", "lab/down.yml", "-e", lab], env=env)
    up = run(["ansible-playbook", "-i", "localhost,", "lab/up.yml", "-e", lab], env=env)
    if up.returncode != 0:
        raise SystemExit(f"could not start {BENCH_HOST}:\n{up.stdout[-3000:]}")
    try:
        site = ["-i", str(inventory), "playbooks/site.yml"]
        first, changed_first, _ = timed_playbook(site, env)
        say(f"first converge {first:.0f} s, changed={changed_first}")
        second, changed_second, _ = timed_playbook(site, env)
        say(f"second converge {second:.0f} s, changed={changed_second}")
        check, changed_check, _ = timed_playbook([*site, "--check", "--diff"], env)
        say(f"--check {check:.0f} s, changed={changed_check}")
    finally:
        run(["ansible-playbook", "-i", "localhost,", "lab/down.yml", "-e", lab], env=env)
    return [
        ("station converge, first run (fresh container)", f"{first:.0f} s, changed={changed_first}", "1.00"),
        ("station converge, second run (idempotent)", f"{second:.0f} s, changed={changed_second}",
         f"{second / first:.2f} (target <= 0.25)"),
        ("station converge, --check --diff on a converged host", f"{check:.0f} s, changed={changed_check}",
         f"{check / first:.2f}"),
    ]


def main() -> None:
    say("bridge benchmark (bridge/bench/run.py)")
    bridge = run([sys.executable, "bridge/bench/run.py"])
    if bridge.returncode != 0:
        raise SystemExit(f"bridge benchmark failed:\n{bridge.stderr[-3000:]}")
    bridge_rows = [line for line in bridge.stdout.splitlines() if line.startswith("| (") or
                   line.startswith("| bridge")]
    say("station converge timings")
    rows = converge_rows()
    width = max(len(r[0]) for r in rows) + 2
    converge_table = [f"| {'measurement':<{width}} | {'result':<24} | {'ratio to the first run':<26} |",
                      f"|{'-' * (width + 2)}|{'-' * 26}|{'-' * 28}|"]
    converge_table += [f"| {a:<{width}} | {b:<24} | {c:<26} |" for a, b, c in rows]
    text = "\n".join([
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {machine()}.",
        "",
        "Every ratio compares figures measured in the same run. Rerun `make bench` to refresh this file.",
        "",
        "## Bridge (ZMQ -> InfluxDB), bridge/bench/run.py",
        "",
        f"| {'measurement':<52} | {'result':<28} | {'ratio to (a)':<22} |",
        f"|{'-' * 54}|{'-' * 30}|{'-' * 24}|",
        *bridge_rows,
        "",
        "## Station converge (playbooks/site.yml on a fresh lab container)",
        "",
        *converge_table,
        "",
        "## Fleet rollout",
        "",
        "Not measured by `make bench`: building the four-container fleet takes about ten minutes. The `fleet`",
        "molecule scenario (part of `make test`) measures it on every run and prints",
        "`rollout (idempotent) wall time: 1 station ... all 3 stations + central ... ratio ...`.",
        "",
    ])
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs/benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
