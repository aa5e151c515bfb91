"""A receive thread that hangs (a receive blocked for longer than the stop waits for it, injected:
tests/faults/sitecustomize.py `receive_stall`) must not cost the other subscriptions their
drain: at a stop, what libzmq holds for a subscription whose own thread ended is drained by the
main loop (Receivers.owns: per thread). Before, one thread still running made every
subscription's socket count as owned: the drain read none of them, and what was queued for the
others was lost uncounted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgpack
from conftest import report
from harness import BridgeProcess, publisher, wait_for
from servers import free_port

from station_bridge.demo import wait_for_subscriber
from station_bridge.ledger import read_latest

FAULTS = str(Path(__file__).resolve().parents[1] / "tests" / "faults")
T0_MS = 1_700_000_000_000


def test_a_hung_receive_thread_leaves_the_others_drained_at_a_stop(tmp_path, influxd, zmq_context):
    from compiled import require_compiled_path
    require_compiled_path()
    db = f"stall_{free_port()}"
    influxd.query(f'CREATE DATABASE "{db}"')
    endpoints = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("a", "b")}
    subs = [{"name": name, "endpoints": [endpoints[name]], "topics": [f"{name}_tick"], "framing": "msgpack",
             "mapping": {"measurement": f"m_{name}", "tags": ["instrument"],
                         "fields": {"bid": "float", "seq": "integer"},
                         "time": {"field": "ts", "format": "epoch_ms"}}} for name in endpoints]
    bridge = BridgeProcess(tmp_path, influxd, db, "", subscription=subs[0], subscriptions_extra=subs[1:],
                           destination={"batch_size": 5000, "flush_interval": "50ms"}, shutdown_timeout="30s",
                           receive_threads="on")
    bridge.env["PYTHONPATH"] = os.pathsep.join([FAULTS, bridge.env.get("PYTHONPATH", "")])
    bridge.env["STATION_TEST_FAULT"] = "receive_stall:a"
    bridge.start()
    publishers = {}
    for name, endpoint in endpoints.items():
        socket = publisher(zmq_context, endpoint)
        assert wait_for_subscriber(socket, f"{name}_tick".encode(), 15)
        publishers[name] = socket

    def send(name: str, first: int, count: int) -> None:
        for k in range(first, first + count):
            publishers[name].send_multipart([f"{name}_tick".encode(), msgpack.packb(
                {"instrument": "EURUSD", "bid": 1.0 + k, "seq": k, "ts": T0_MS + k})])

    send("a", 0, 1)  # a's thread takes it and hangs
    send("b", 0, 1000)
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="b") == 1000, 20, "b before")
    bridge.process.send_signal(signal.SIGTERM)
    wait_for(lambda: any(r.get("msg") == "stopping: draining subscriptions, then flushing destinations"
                         for r in bridge.log_records()), 10, "the stop began")
    time.sleep(1)  # b's thread has ended; a's is still hung: the stop waits for it (10 s)
    send("b", 1000, 2000)  # queued in libzmq for b, whose thread is gone: the drain's to read
    code = bridge.process.wait(40)
    bridge.log.close()
    BridgeProcess.running.discard(bridge)
    ended = next(r for r in bridge.log_records() if r.get("msg") == "receive threads ended")
    ledger = read_latest(tmp_path / "journal" / "ledger.json")
    assert ledger is not None
    counters = {(name, tuple(sorted(map(tuple, labels)))): v for name, rows in ledger["counters"].items()
                for labels, v in rows}
    received_b = counters.get(("bridge_received_messages_total", (("subscription", "b"),)), 0)
    report("a receive thread hung through the stop", still_running=ended["still_running"],
           b_published=3000, b_received=received_b, exit_code=code)
    assert code == 0 and ended["still_running"] == 1
    assert received_b == 3000  # the 2000 queued after b's thread ended: drained
    assert influxd.count(db, "m_b") == 3000
