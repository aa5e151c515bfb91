"""`make bench`: one table, every figure measured in this run on this machine, written to
docs/benchmarks.md with the machine's description and the date.

1. The bridge (bridge/bench/run.py): end-to-end throughput as a ratio of the raw line-protocol
   ceiling, the naive pattern's ratio, publish -> queryable latency at half load, peak RSS.
2. Station converge on a fresh lab container (station-stack-bench): first run, idempotent
   second run and --check, with their ratios to the first run.
3. Fleet rollout (playbooks/rollout.yml, the example fleet's variables) on a central and four
   stations: the first rollout, then idempotent rollouts of one station alone, of central + one
   station (the ratios' 1.00) and of all four, with the default batches (canary, then the rest)
   and with every station in one batch.
4. A station reached as a real host (SSH as deploy with sudo, host keys checked): idempotent
   converges directly and through lab/delay_proxy.py at 300 ms RTT, validate.yml through it, and
   the controller's CPU seconds per idempotent converge.
5. A central (`central`): the same stream (a fleet's ticks, 20 stations x 50 instruments, three
   numeric fields, millisecond times) into one InfluxDB and into one VictoriaMetrics, each a
   local binary started as bridge/tests/servers.py does, points/s and each server's CPU per point.
Times are wall-clock seconds; ratios compare figures from the same run (machines here are noisy).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_HOST = "station-stack-bench"
LAB_FLEET_EXTRAS = ROOT / "molecule/fleet/lab.yml"


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
        check_fresh, changed_check_fresh, _ = timed_playbook([*site, "--check", "--diff"], env)
        say(f"--check on the fresh host {check_fresh:.0f} s, changed={changed_check_fresh}")
        first, changed_first, _ = timed_playbook(site, env)
        say(f"first converge {first:.0f} s, changed={changed_first}")
        second, changed_second, _ = timed_playbook(site, env)
        say(f"second converge {second:.0f} s, changed={changed_second}")
        check, changed_check, _ = timed_playbook([*site, "--check", "--diff"], env)
        say(f"--check {check:.0f} s, changed={changed_check}")
    finally:
        run(["ansible-playbook", "-i", "localhost,", "lab/down.yml", "-e", lab], env=env)
    if changed_second or changed_check:
        raise SystemExit(f"not idempotent: second run changed={changed_second}, --check changed={changed_check}")
    return [
        ("converge: first run (fresh container)", f"{first:.0f} s, changed={changed_first}", "1.00"),
        ("converge: second run (idempotent)", f"{second:.0f} s, changed=0", f"{second / first:.2f}, <= 0.25"),
        ("converge: --check --diff, fresh container", f"{check_fresh:.0f} s, changed={changed_check_fresh}",
         f"{check_fresh / first:.2f} of the first run"),
        ("converge: --check --diff, converged host", f"{check:.0f} s, changed=0",
         f"{check / check_fresh:.2f} of --check on the fresh one"),
    ]


FLEET_CODES = ["ams", "bcn", "cpt", "dxb"]


def fleet_rows() -> list[tuple[str, str, str]]:
    """Rollouts on station-stack-bench-central and one container per code in FLEET_CODES."""
    env = dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=str(ROOT / "inventories/fleet-example/lab-vault-password"))
    example = ROOT / "inventories/fleet-example"
    inventory = ROOT / ".cache/bench/fleet"
    shutil.rmtree(inventory, ignore_errors=True)
    (inventory / "host_vars").mkdir(parents=True)
    central = "station-stack-bench-central"
    stations = [f"station-stack-bench-{code}" for code in FLEET_CODES]
    (inventory / "hosts.yml").write_text(json.dumps({"all": {
        "vars": {"ansible_connection": "community.docker.docker", "ansible_user": "root"},
        "children": {"central": {"hosts": {central: {}}}, "stations": {"hosts": {h: {} for h in stations}}}}}))
    (inventory / "group_vars").symlink_to(example / "group_vars")
    for code, name in zip(FLEET_CODES, stations, strict=True):
        source = example / f"host_vars/station-stack-fleet-{code}.yml"
        text = source.read_text() if source.exists() else f"---\nstation_code: {code}\nstation_timezone: Asia/Dubai\n"
        (inventory / f"host_vars/{name}.yml").write_text(text)
    # The example's vault holds three stations' central passwords: the bench gives all four its own,
    # and has one central (the single-central form, fleet_centrals empty).
    extra = inventory / "bench-vars.json"
    extra.write_text(json.dumps({"fleet_centrals": [], "fleet_central_url": f"http://{central}:8086",
                                 "fleet_station_passwords": {c: f"bench-{c}-pw" for c in FLEET_CODES}}))
    lab = json.dumps({"lab_instances": [{"name": n} for n in [central, *stations]]})
    run(["ansible-playbook", "-i", "localhost,", "lab/down.yml", "-e", lab], env=env)
    up = run(["ansible-playbook", "-i", "localhost,", "lab/up.yml", "-e", lab], env=env)
    if up.returncode != 0:
        raise SystemExit(f"could not start the bench fleet:\n{up.stdout[-3000:]}")

    def rollout(*flags: str, idempotent: bool = True) -> float:
        started = time.monotonic()
        # The fleet scenario's lab extras: a stand-in publisher per feed (a rollout validates that
        # feeds flow) and its short timers.
        proc = run(["ansible-playbook", "-i", str(inventory), "-e", f"@{extra}", "-e", f"@{LAB_FLEET_EXTRAS}",
                    "playbooks/rollout.yml", *flags], env=env)
        took = time.monotonic() - started
        changed = sum(int(n) for n in re.findall(r"^\S+\s*:\s*ok=\d+\s+changed=(\d+)", proc.stdout, re.M))
        if proc.returncode != 0 or (idempotent and changed):
            raise SystemExit(f"rollout {' '.join(flags)} failed or changed {changed}:\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-2000:]}")
        return took

    try:
        first = rollout(idempotent=False)
        say(f"first fleet rollout {first:.0f} s")
        alone = rollout("--limit", stations[0])
        say(f"rollout of one station alone {alone:.0f} s")
        # The same rollout with one station: central, then the canary (what a one-station fleet runs).
        one = rollout("--limit", f"{central},{stations[0]}")
        say(f"rollout of central + 1 station {one:.0f} s")
        canary = rollout()
        say(f"rollout of central + {len(stations)} stations, canary first {canary:.0f} s")
        flat = rollout("-e", '{"rollout_serial": ["100%"]}')
        say(f"rollout of central + {len(stations)} stations in one batch {flat:.0f} s")
    finally:
        run(["ansible-playbook", "-i", "localhost,", "lab/down.yml", "-e", lab], env=env)
    n = len(stations)
    return [
        (f"fleet: first rollout, central + {n} stations (fresh)", f"{first:.0f} s", ""),
        ("fleet: rollout of 1 station alone (idempotent, --limit)", f"{alone:.0f} s", f"{alone / one:.2f}"),
        ("fleet: rollout of central + 1 station (idempotent)", f"{one:.0f} s", "1.00"),
        (f"fleet: central + {n} stations, canary then the rest", f"{canary:.0f} s",
         f"{canary / one:.2f}; floor 2.0, <= 2.3"),
        (f"fleet: central + {n} stations in one batch (forks)", f"{flat:.0f} s", f"{flat / one:.2f}"),
    ]


SLOW_HOST = "station-stack-bench-ssh"
SLOW_RTT_MS = 300


def controller_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: ansible-playbook and its ssh."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proxy_rtt(rtt_ms: float, samples: int = 5) -> float:
    """The round trip lab/delay_proxy.py adds, measured: small messages through it to a local echo."""
    import socket
    import threading
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    proxy = subprocess.Popen([sys.executable, str(ROOT / "lab/delay_proxy.py"), "--rtt-ms", str(rtt_ms),
                              "--target", f"127.0.0.1:{server.getsockname()[1]}"], stdout=subprocess.PIPE, text=True)
    try:
        host, _, port = proxy.stdout.readline().strip().rpartition(":")  # type: ignore[union-attr]
        best = float("inf")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            for _ in range(samples):
                started = time.monotonic()
                conn.sendall(b"ping")
                conn.recv(64)
                best = min(best, time.monotonic() - started)
        return best
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.close()


def slow_link_rows() -> list[tuple[str, str, str]]:
    """One lab station reached as a real host is: SSH as deploy with sudo, host keys checked. It is
    converged once through the Docker API (not measured), then idempotent converges run over SSH
    directly and through lab/delay_proxy.py at 300 ms RTT, and validate.yml through the proxy."""
    env = dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=str(ROOT / "inventories/local/lab-vault-password"))
    work = ROOT / ".cache/bench/slow"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lab = json.dumps({"lab_instances": [{"name": SLOW_HOST, "hostname": "slow", "ssh_user": "deploy",
                                         "sudo": "nopasswd"}], "lab_ssh_dir": str(work / "ssh")})
    run(["ansible-playbook", "-i", "localhost,", "lab/down.yml", "-e", lab], env=env)
    up = run(["ansible-playbook", "-i", "localhost,", "lab/up.yml", "-e", lab], env=env)
    if up.returncode != 0:
        raise SystemExit(f"could not start {SLOW_HOST}:\n{up.stdout[-3000:]}")
    known = (work / "ssh/known_hosts").read_text().split()
    address, key = known[0], " ".join(known[1:3])
    proxy = subprocess.Popen([sys.executable, str(ROOT / "lab/delay_proxy.py"), "--target", f"{address}:22",
                              "--rtt-ms", str(SLOW_RTT_MS)], stdout=subprocess.PIPE, text=True)
    try:
        listen = proxy.stdout.readline().strip()  # type: ignore[union-attr]
        proxy_host, _, proxy_port = listen.rpartition(":")
        (work / "ssh/known_hosts").write_text(f"{address} {key}\n[{proxy_host}]:{proxy_port} {key}\n")
        ssh = {"ansible_connection": "ssh", "ansible_user": "deploy",
               "ansible_private_key_file": str(work / "ssh/id_ed25519"),
               "ansible_ssh_common_args": f"-o UserKnownHostsFile={work}/ssh/known_hosts -o StrictHostKeyChecking=yes"
                                          " -o IdentitiesOnly=yes"}
        inventories = {
            "docker": {"ansible_connection": "community.docker.docker", "ansible_user": "root"},
            "direct": {**ssh, "ansible_host": address},
            "slow": {**ssh, "ansible_host": proxy_host, "ansible_port": int(proxy_port)},
        }
        for name, hostvars in inventories.items():
            directory = work / name
            directory.mkdir()
            (directory / "hosts.yml").write_text(json.dumps({"all": {"children": {"stations": {"hosts": {
                SLOW_HOST: hostvars}}}}}))
            (directory / "group_vars").symlink_to(ROOT / "inventories/local/group_vars")

        def playbook(inventory: str, *args: str) -> tuple[float, float, int, str]:
            cpu = controller_cpu()
            started = time.monotonic()
            # lab/callback_plugins/controller_cpu.py: the same CPU charged per task, for the breakdown.
            profiled = dict(env, ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "lab/callback_plugins"),
                            ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks,station_stack.station.fork_gc,controller_cpu",
                            CONTROLLER_CPU_JSON=str(work / f"{inventory}-{Path(args[0]).stem}-cpu.json"))
            proc = run(["ansible-playbook", "-i", str(work / inventory), *args], env=profiled)
            took, cpu = time.monotonic() - started, controller_cpu() - cpu
            # Kept for reading where the time went (task timings: ansible.cfg's profile_tasks).
            (work / f"{inventory}-{Path(args[0]).stem}-{int(started)}.log").write_text(proc.stdout)
            recap = re.search(rf"{SLOW_HOST}\s*:\s*ok=(\d+)\s+changed=(\d+)", proc.stdout)
            if proc.returncode != 0 or not recap:
                raise SystemExit(f"{' '.join(args)} over {inventory} failed:\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-2000:]}")
            return took, cpu, int(recap.group(2)), proc.stdout

        playbook("docker", "playbooks/site.yml")
        say("station converged through the Docker API; now over SSH")
        direct, direct_cpu, changed_direct, _ = playbook("direct", "playbooks/site.yml")
        say(f"idempotent converge over SSH {direct:.0f} s, controller CPU {direct_cpu:.1f} s, changed={changed_direct}")
        rtt = proxy_rtt(SLOW_RTT_MS)
        slow, slow_cpu, changed_slow, out = playbook("slow", "playbooks/site.yml")
        tasks = len(re.findall(r"^TASK \[", out, re.M))
        say(f"idempotent converge over SSH at {rtt * 1000:.0f} ms RTT {slow:.0f} s ({tasks} tasks), "
            f"changed={changed_slow}")
        validate, _, _, _ = playbook("slow", "playbooks/validate.yml")
        say(f"validate.yml over SSH at {rtt * 1000:.0f} ms RTT {validate:.0f} s")
    finally:
        proxy.terminate()
        proxy.wait(10)
        run(["ansible-playbook", "-i", "localhost,", "lab/down.yml", "-e", lab], env=env)
    if changed_direct or changed_slow:
        raise SystemExit(f"not idempotent over SSH: changed={changed_direct} direct, {changed_slow} at 300 ms")
    return [
        ("ssh: delay proxy, round trip through it (echo)", f"{rtt * 1000:.0f} ms", f"set to {SLOW_RTT_MS} ms"),
        ("ssh: idempotent station converge, direct", f"{direct:.0f} s, changed=0", "1.00"),
        (f"ssh: idempotent station converge, {SLOW_RTT_MS} ms RTT", f"{slow:.0f} s, changed=0, {tasks} tasks",
         f"{slow / direct:.2f}; <= 60 s"),
        (f"ssh: validate.yml, {SLOW_RTT_MS} ms RTT", f"{validate:.0f} s", f"{validate / direct:.2f}"),
        ("ssh: controller CPU per idempotent station converge", f"{direct_cpu:.1f} s (direct), {slow_cpu:.1f} s "
         f"({SLOW_RTT_MS} ms)", f"<= 10 s; {direct_cpu / direct:.2f} of its wall time"),
        *cpu_breakdown(work / "direct-site-cpu.json", direct_cpu),
    ]


def cpu_breakdown(path: Path, total: float) -> list[tuple[str, str, str]]:
    """Where the controller's CPU of the direct idempotent converge went (controller_cpu callback;
    what ran before the callback loaded, interpreter start, imports and parsing, is the rest of `total`)."""
    data = json.loads(path.read_text())
    statuses = ", ".join(f"{k} {v['tasks']} tasks {v['cpu_s']:.1f} s" for k, v in data["by_status"].items())
    roles = ", ".join(f"{k} {v:.1f}" for k, v in list(data["by_role"].items())[:7])
    return [
        ("ssh: controller CPU, start-up (interpreter, imports, parsing)", f"{total - data['in_tasks_s']:.1f} s",
         f"ansible-playbook itself {data['ansible_playbook_itself_s']:.1f} s of the total, its workers the rest"),
        ("ssh: controller CPU by task result", statuses, ""),
        ("ssh: controller CPU by role (s)", roles, ""),
    ]


def central_rows(points: int = 1_000_000, rounds: int = 2) -> list[tuple[str, str, str]]:
    """The same pre-serialised stream POSTed in 5000-line batches by 2 threads (as the bridge
    benchmark's ceiling) into influxd (/write) and victoria-metrics (/influx/write, deduplicating
    within 1 ms as roles/victoriametrics runs it), alternately, `rounds` times each; the best
    round of each. A round ends when the last batch is acknowledged and, for VictoriaMetrics,
    its in-memory buffers are flushed (/internal/force_flush: InfluxDB has written its WAL by then).
    Every point is counted back on both before the figures are kept."""
    import http.client
    import tempfile
    import threading

    sys.path.insert(0, str(ROOT / "bridge" / "tests"))
    sys.path.insert(0, str(ROOT / "bridge" / "bench"))
    from servers import Influxd, VictoriaMetrics
    from stages import cpu_seconds

    load = os.getloadavg()
    base = (time.time_ns() // 1_000_000_000 - 3 * 3600) * 1_000_000_000

    def stream(shift: int) -> list[bytes]:
        # Series: station x instrument; each series gets a point every ms (distinct to the millisecond).
        return ["\n".join(f"tick,station=s{i % 20},instrument=I{(i // 20) % 50} bid={1 + i / 1e6},"
                           f"ask={1.0001 + i / 1e6},volume={i}i {base + shift + (i // 1000) * 1_000_000}"
                           for i in range(start, min(points, start + 5000))).encode()
                for start in range(0, points, 5000)]

    def send(port: int, path: str, batches: list[bytes]) -> None:
        def worker(mine: list[bytes]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for body in mine:
                conn.request("POST", path, body=body)
                response = conn.getresponse()
                response.read()
                assert response.status == 204, (response.status, path)

        threads = [threading.Thread(target=worker, args=(batches[k::2],)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="central-bench-") as tmp:
        influx = Influxd(Path(tmp) / "influxd").start()
        vm = VictoriaMetrics(Path(tmp) / "vm").start()
        try:
            influx.query("CREATE DATABASE bench")
            for r in range(rounds):
                batches = stream(r * 3_600_000_000_000 // rounds)  # each round its own hour: no overwrite
                for name, server, path in (("InfluxDB", influx, "/write?db=bench&precision=ns"),
                                           ("VictoriaMetrics", vm, "/influx/write?db=bench&precision=ns")):
                    pid = server.process.pid
                    cpu = cpu_seconds(pid)
                    started = time.perf_counter()
                    send(server.port, path, batches)
                    if server is vm:
                        with urllib.request.urlopen(vm.url + "/internal/force_flush", timeout=120):
                            pass
                    elapsed = time.perf_counter() - started
                    rate, cpu_us = points / elapsed, (cpu_seconds(pid) - cpu) / points * 1e6
                    say(f"central round {r + 1}: {name} {rate:,.0f} points/s, {cpu_us:.1f} us CPU/point")
                    if name not in best or rate > best[name][0]:
                        best[name] = (rate, cpu_us)
            landed = influx.count("bench", "tick", "bid")
            query = urllib.parse.urlencode({"query": 'sum(count_over_time(tick_bid{db="bench"}[1d]))', "nocache": "1"})
            with urllib.request.urlopen(f"{vm.url}/api/v1/query?{query}", timeout=120) as response:
                in_vm = int(float(json.loads(response.read())["data"]["result"][0]["value"][1]))
            assert landed == in_vm == points * rounds, (landed, in_vm, points * rounds)
        finally:
            vm.stop()
            influx.stop()
    (i_rate, i_cpu), (v_rate, v_cpu) = best["InfluxDB"], best["VictoriaMetrics"]
    note = (f"best of {rounds} alternated rounds of {points:,} points (3 fields each), 1,000 series; "
            f"load average {load[0]:.2f} at the start")
    return [
        ("central: InfluxDB 1.x (influxd), line protocol, 5000/batch, 2 threads", f"{i_rate:,.0f} points/s",
         f"1.00; {i_cpu:.1f} us influxd CPU/point; {note}"),
        ("central: VictoriaMetrics (victoria-metrics), the same stream", f"{v_rate:,.0f} points/s",
         f"{v_rate / i_rate:.2f} (vs InfluxDB); {v_cpu:.1f} us CPU/point ({v_cpu / i_cpu:.2f} of influxd's)"),
    ]


def bridge_rows() -> list[tuple[str, str, str]]:
    bridge = run([sys.executable, "bridge/bench/run.py"])
    if bridge.returncode != 0:
        raise SystemExit(f"bridge benchmark failed:\n{bridge.stderr[-3000:]}")
    # Its rows (after the header and the rule) join the one table below.
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in bridge.stdout.splitlines()
             if line.startswith("|")][2:]
    return [(f"bridge: {a.removeprefix('bridge ')}", b, c) for a, b, c in cells]


SECTIONS = {
    "bridge": ("bridge benchmark (bridge/bench/run.py)", bridge_rows),
    "converge": ("station converge timings", converge_rows),
    "fleet": ("fleet rollout timings", fleet_rows),
    "ssh": ("station over SSH, direct and through a 300 ms link", slow_link_rows),
    "central": ("a central: the same stream into one InfluxDB and one VictoriaMetrics", central_rows),
}


def main() -> None:
    """`lab/bench.py [section ...]`: every section (and docs/benchmarks.md) by default; named
    sections only print their rows (bridge, converge, fleet, ssh, central)."""
    chosen = sys.argv[1:] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}: choose from {list(SECTIONS)}")
    rows: list[tuple[str, str, str]] = []
    for name in chosen:
        what, rows_of = SECTIONS[name]
        say(what)
        rows += rows_of()
    width = max(len(r[0]) for r in rows)
    result = max(len(r[1]) for r in rows)
    table = [f"| {'measurement':<{width}} | {'result':<{result}} | ratio, target |",
             f"|{'-' * (width + 2)}|{'-' * (result + 2)}|---|",
             *[f"| {a:<{width}} | {b:<{result}} | {c} |" for a, b, c in rows]]
    text = "\n".join([
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {machine()}.",
        "",
        "One run, one table: every ratio compares figures measured in this run (machines here are noisy).",
        "bridge: bridge/bench/run.py, (a) is the ceiling; converge: playbooks/site.yml on a fresh lab",
        "container; fleet: playbooks/rollout.yml with the example fleet's variables, default forks;",
        "ssh: the lab station reached over SSH as deploy with sudo, directly and through lab/delay_proxy.py;",
        "central: the same stream into local influxd and victoria-metrics, one after the other.",
        "",
        *table,
        "",
    ])
    if chosen == list(SECTIONS):
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs/benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
