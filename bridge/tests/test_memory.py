"""The memory budget (memory.py): the cgroup limit found as the kernel lays it out, rcvhwm and
the destinations' queues derived from it, a queue that spills to the journal by bytes. The flood
under a real memory cgroup is chaos/test_memory_budget.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from station_bridge import config as cfg
from station_bridge import memory
from station_bridge.journal import Chunk, DeadLetters, Journal
from station_bridge.metrics import Metrics
from station_bridge.sinks import InfluxSink
from station_bridge.sources import Source

BASE = {"subscriptions": [{"name": "a", "endpoints": ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"],
                           "mapping": {"measurement": "m", "fields": {"v": "float"}}},
                          {"name": "b", "endpoints": ["tcp://127.0.0.1:3"], "message_bytes": "4KiB",
                           "mapping": {"measurement": "m", "fields": {"v": "float"}}}],
        "destinations": [{"name": "d1", "url": "http://127.0.0.1:9", "database": "db"},
                         {"name": "d2", "url": "http://127.0.0.1:9", "database": "db", "queue_max_bytes": "1MiB"}]}


def _tree(tmp: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    (tmp / "proc").write_text(cgroup)
    for name, text in files.items():
        (tmp / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "fs" / name).write_text(text)
    return tmp / "proc", tmp / "fs"


def test_the_cgroup_limit_is_found_in_v2_v1_and_the_lowest_along_the_path_wins(tmp_path: Path):
    proc, root = _tree(tmp_path, "0::/system.slice/station-bridge@a.service\n", {
        "system.slice/memory.max": "max\n", "system.slice/station-bridge@a.service/memory.max": "1073741824\n"})
    assert memory.cgroup_memory_limit(proc, root) == 1 << 30
    (root / "system.slice/memory.max").write_text("536870912\n")  # a parent's lower limit applies too
    assert memory.cgroup_memory_limit(proc, root) == 512 << 20
    (root / "system.slice/memory.max").write_text("max\n")
    (root / "system.slice/station-bridge@a.service/memory.max").write_text("max\n")
    assert memory.cgroup_memory_limit(proc, root) is None
    v1 = tmp_path / "v1"
    v1.mkdir()
    proc, root = _tree(v1, "9:pids:/\n4:memory:/bridge\n0::/\n", {
        "memory/bridge/memory.limit_in_bytes": "134217728\n", "memory/memory.limit_in_bytes": "9223372036854771712"})
    assert memory.cgroup_memory_limit(proc, root) == 128 << 20
    assert memory.cgroup_memory_limit(tmp_path / "absent", root) is None


def test_rcvhwm_and_queue_bytes_are_shares_of_the_budget_and_explicit_values_win():
    config = cfg.parse({**BASE, "memory": {"budget_bytes": "64MiB"}})
    budget = config.budget()
    assert (budget.total, budget.source, budget.receive, budget.queues) == (64 << 20, "config", 32 << 20, 32 << 20)
    a, b = config.subscriptions
    # message_bytes unset: sized for the largest message libzmq accepts (16 x max_frame_bytes: 16 MiB,
    # the worst case; sized for max_frame_bytes, 15 MB messages OOM-killed a bridge under 256 MiB)
    assert a.largest_message == 16 << 20 == memory.TRANSPORT_LIMIT_FACTOR * a.max_frame_bytes
    # half of 32 MiB over two endpoints: one 16 MiB message each
    assert config.rcvhwm(a) == max(1, (16 << 20) // 2 // ((16 << 20) + memory.ZMQ_OVERHEAD))
    declared = cfg.parse({**BASE, "memory": {"budget_bytes": "64MiB"},
                          "subscriptions": [{**BASE["subscriptions"][0], "message_bytes": "1KiB"},
                                            BASE["subscriptions"][1]]})
    assert declared.rcvhwm(declared.subscriptions[0]) == (16 << 20) // 2 // (1024 + memory.ZMQ_OVERHEAD)
    assert config.rcvhwm(b) == (16 << 20) // (4096 + memory.ZMQ_OVERHEAD)
    d1, d2 = config.destinations
    assert config.queue_max_bytes(d1) == 16 << 20 and config.queue_max_bytes(d2) == 1 << 20
    explicit = cfg.parse({**BASE, "subscriptions": [{**BASE["subscriptions"][0], "rcvhwm": 5000}]})
    assert explicit.rcvhwm(explicit.subscriptions[0]) == 5000
    effective = config.effective()
    assert effective["memory"]["budget_bytes"] == 64 << 20
    assert [s["rcvhwm"] for s in effective["subscriptions"]] == [config.rcvhwm(a), config.rcvhwm(b)]
    assert [d["queue_max_bytes"] for d in effective["destinations"]] == [16 << 20, 1 << 20]
    context = zmq.Context()
    try:
        source = Source(context, a, rcvhwm=config.rcvhwm(a))
        assert source.socket.getsockopt(zmq.RCVHWM) == config.rcvhwm(a)
        source.close()
    finally:
        context.term()


def test_without_a_limit_the_fallback_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: None)
    assert memory.budget(None, 0.5) == memory.Budget(memory.FALLBACK_BUDGET, None, "fallback")
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 1 << 30)
    assert memory.budget(None, 0.5).total == ((1 << 30) - memory.PYTHON_RESERVE) // 2
    for bad in ({"limit_fraction": 0}, {"limit_fraction": 1.5}, {"budget_bytes": 0}, {"colour": "red"}):
        with pytest.raises(cfg.ConfigError, match="memory"):
            cfg.parse({**BASE, "memory": bad})


def test_check_config_warns_when_an_explicit_rcvhwm_can_exceed_the_budget(tmp_path: Path):
    data = {**BASE, "subscriptions": [{**BASE["subscriptions"][0], "rcvhwm": 1_000_000}],
            "memory": {"budget_bytes": "256MiB"}}
    path = tmp_path / "bridge.yml"
    path.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "station_bridge.cli", "check-config", "--json", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "subscriptions.a.rcvhwm: 1000000 messages" in proc.stderr and "memory budget" in proc.stderr
    assert any("rcvhwm" in w for w in json.loads(proc.stdout)["warnings"])
    del data["subscriptions"][0]["rcvhwm"]
    path.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "station_bridge.cli", "check-config", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "rcvhwm" not in proc.stderr


def test_a_queue_over_its_bytes_spills_to_the_journal_in_order(tmp_path: Path):
    spec = cfg.parse(BASE).destinations[0]
    metrics = Metrics()
    journal = Journal(tmp_path / "j", 10**8)
    sink = InfluxSink(spec, journal, DeadLetters(tmp_path / "dead.jsonl"), metrics, queue_max_bytes=10_000)
    line = "m v=1 " + "0" * 80  # ~ 90 bytes a line: 100 lines per chunk is 9 KB
    chunks = [Chunk.of([f"{line}{i:03d}{j:03d}" for j in range(100)]) for i in range(3)]
    sink.submit(chunks[0])
    assert sink.queued == 100 and sink.queued_bytes == len(chunks[0].data) and not len(journal)
    sink.submit(chunks[1])  # 18 KB > 10 KB: both to the journal, in order
    assert sink.queued == 0 and sink.queued_bytes == 0 and journal.points == 200
    sink.submit(chunks[2])
    assert sink.queued == 100 and journal.points == 200
    assert metrics.get("bridge_journaled_points_total", destination="d1") == 200
    _, oldest = journal.oldest()
    assert oldest.data.startswith(chunks[0].data)
    assert sink.pending == 300
