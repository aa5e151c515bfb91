"""Two compiled subscriptions busy at once in one bridge (issue 22): a receive thread each, C's part
of every batch without the GIL (`_fastpath.c`, "Two phases"; receivers.py).

Correctness under that concurrency, not speed: two publishers send at the same moment (msgpack to
one subscription, JSON to the other, distinct measurements), valid ticks mixed with values C
hands back (19-digit integers, JSON escapes), floats whose repr needs Python (mapped again with
the GIL) and refused ones (NaN, wrong types, truncated frames). Every valid message lands exactly
once with the values sent, every refused one is counted, and the ledger's equations hold.

A plan shared by two threads would mix their batches (the second stage overwrites the staging
buffer the first one's lines point into): the plan refuses a second thread instead, shown in
process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import msgpack
import pytest
import zmq
from compiled import require_compiled_path
from harness import BridgeProcess, publisher, quiet_ledger, wait_for
from servers import free_port

from station_bridge.demo import wait_for_subscriber
from station_bridge.ledger import read_latest
from station_bridge.metrics import total
from station_bridge.receivers import threads_wanted

T0_MS = 1_700_000_000_000
N = 12_000  # messages per subscription
FIELDS = {"bid": "float", "seq": "integer", "big": "integer", "note": "string"}
SUBS = {"a": ("msgpack", "ta"), "b": ("json", "tb")}


def _record(k: int) -> tuple[dict, str]:
    """Message k of a feed and its outcome: "ok" (lands) or a rejection reason."""
    record = {"instrument": ("EURUSD", "GBPUSD", "USDJPY")[k % 3], "bid": 1.0 + k / 8, "seq": k,
              "note": f"n{k}", "ts": T0_MS + k}
    kind = k % 11
    if kind == 1:
        record["bid"] = 0.1 + 0.2 + k  # 17 digits: repr through Python's dtoa (with the GIL)
    elif kind == 2:
        record["big"] = 10**18 + k  # 19 digits: handed back, mapped by Python
    elif kind == 3:
        record["note"] = f'q"{k}\\'  # JSON: an escape, handed back
    elif kind == 4:
        record["bid"] = float("nan")
        return record, "non_finite"
    elif kind == 5:
        record["bid"] = "x"
        return record, "wrong_type"
    return record, "ok"


def _frames(framing: str, topic: bytes, k: int) -> tuple[list[bytes], str]:
    record, outcome = _record(k)
    if k % 11 == 6:  # truncated: undecodable
        payload = msgpack.packb(record)[:-3] if framing == "msgpack" else json.dumps(record).encode()[:-3]
        return [topic, payload], "undecodable"
    payload = msgpack.packb(record) if framing == "msgpack" else json.dumps(record, allow_nan=True).encode()
    return [topic, payload], outcome


def _publish(endpoint: str, framing: str, topic: bytes, start: threading.Barrier, errors: list,
             count: int = N) -> None:
    context = zmq.Context()
    try:
        socket = publisher(context, endpoint)
        if not wait_for_subscriber(socket, topic, 15):
            errors.append(f"{endpoint}: no subscriber")
        start.wait(20)  # both publishers at once
        for k in range(count):
            socket.send_multipart(_frames(framing, topic, k)[0])
        socket.close(linger=10_000)
    except Exception as exc:  # reported by the test
        errors.append(repr(exc))
    finally:
        context.term()


def _bridge(tmp_path, influxd, threads: bool = True, **overrides) -> tuple[BridgeProcess, str, dict[str, str]]:
    """A bridge with the two SUBS subscriptions, compiled; `threads`: it must say it started a
    receive thread each (else that it runs one receive loop)."""
    require_compiled_path()
    db = f"threads_{free_port()}"
    influxd.query(f'CREATE DATABASE "{db}"')
    endpoints = {name: f"tcp://127.0.0.1:{free_port()}" for name in SUBS}
    subs = [{"name": name, "endpoints": [endpoints[name]], "topics": [f"{name}_tick"], "framing": framing,
             "mapping": {"measurement": measurement, "tags": ["instrument"], "fields": FIELDS,
                         "time": {"field": "ts", "format": "epoch_ms"}}}
            for name, (framing, measurement) in SUBS.items()]
    overrides.setdefault("receive_threads", "on")  # `auto` takes one loop on two CPUs (test below)
    bridge = BridgeProcess(tmp_path, influxd, db, "", subscription=subs[0], subscriptions_extra=subs[1:],
                           destination={"batch_size": 5000, "flush_interval": "50ms"}, **overrides).start()
    started = [r for r in bridge.log_records() if r.get("msg") == "receive threads"]
    if threads:
        assert started and started[0]["subscriptions"] == list(SUBS), started
    else:
        assert not started, started
    return bridge, db, endpoints


def _publishers(endpoints: dict[str, str], barrier: threading.Barrier, errors: list,
                count: int = N) -> list[threading.Thread]:
    publishers = [threading.Thread(target=_publish, args=(endpoints[name], framing, f"{name}_tick".encode(),
                                                          barrier, errors, count))
                  for name, (framing, _) in SUBS.items()]
    for thread in publishers:
        thread.start()
    return publishers


def _landed_exactly_once(influxd, db: str, samples: dict, count: int) -> None:
    """Every valid message of each feed landed once with the values sent; the rest counted."""
    for name, (framing, measurement) in SUBS.items():
        outcomes = [_frames(framing, b"", k)[1] for k in range(count)]
        valid = {k for k, outcome in enumerate(outcomes) if outcome == "ok"}
        key = (("subscription", name),)
        assert samples[("bridge_received_messages_total", key)] == count
        assert samples[("bridge_mapped_messages_total", key)] == len(valid)
        rejected = {dict(labels)["reason"]: v for (metric, labels), v in samples.items()
                    if metric == "bridge_rejected_messages_total" and dict(labels)["subscription"] == name and v}
        assert rejected == {reason: outcomes.count(reason) for reason in set(outcomes) - {"ok"}}
        rows = influxd.query(f'SELECT "seq", "bid", "big", "note", "instrument" FROM "{measurement}"', db=db)
        assert len(rows) == len(valid)  # each once: distinct times, one series per instrument
        got = {row["seq"]: row for row in rows}
        assert set(got) == valid
        for k in valid:
            record, _ = _record(k)
            row = got[k]
            assert (row["bid"], row["note"], row["instrument"], row["time"]) == (
                record["bid"], record["note"], record["instrument"], (T0_MS + k) * 1_000_000), (k, row)
            assert row["big"] == record.get("big")


def test_two_busy_subscriptions_land_every_line_once(tmp_path, influxd):
    bridge, db, endpoints = _bridge(tmp_path, influxd)
    errors: list = []
    for thread in _publishers(endpoints, threading.Barrier(len(SUBS)), errors):
        thread.join(60)
    assert not errors, errors
    wait_for(lambda: total(bridge.samples(), "bridge_received_messages_total") == N * len(SUBS), 60,
             f"{N * len(SUBS)} messages received",
             detail=lambda: str(total(bridge.samples(), "bridge_received_messages_total")))
    samples = quiet_ledger(bridge, subscriptions=tuple(SUBS), timeout=60)
    _landed_exactly_once(influxd, db, samples, N)
    for name in SUBS:
        assert bridge.value("bridge_fast_path_handed_back", subscription=name) > 0
        assert bridge.value("bridge_fast_path_messages", subscription=name) > 0.5 * N * 8 / 11
    assert bridge.stop() == 0


def test_a_stop_ends_the_receive_threads_then_drains_what_libzmq_holds(tmp_path, influxd):
    """SIGTERM while both feeds' messages wait in libzmq (the bridge frozen while they were sent):
    the receive threads end, the main loop drains both sockets (app.shutdown), everything lands,
    each once, and the ledger is clean."""
    bridge, db, endpoints = _bridge(tmp_path, influxd, shutdown_timeout="40s")
    count = 6000
    errors: list = []
    barrier = threading.Barrier(len(SUBS) + 1)
    publishers = _publishers(endpoints, barrier, errors, count)
    barrier.wait(30)  # both subscribed
    os.kill(bridge.process.pid, signal.SIGSTOP)
    time.sleep(0.5)  # the publishers queue what the frozen bridge cannot take
    os.kill(bridge.process.pid, signal.SIGCONT)
    code = bridge.stop(signal.SIGTERM, timeout=60)
    for thread in publishers:
        thread.join(60)
    assert not errors, errors
    assert code == 0
    said = [r.get("msg") for r in bridge.log_records()]
    # the threads ended before the drain (how much the drain still found depends on the scheduling)
    assert "receive threads ended" in said and "stopped" in said
    assert said.index("receive threads ended") < said.index("stopped")
    ended = next(r for r in bridge.log_records() if r.get("msg") == "receive threads ended")
    assert ended["still_running"] == 0
    ledger = read_latest(tmp_path / "journal" / "ledger.json")
    assert ledger is not None and ledger["clean"]
    samples = {(name, tuple(sorted(map(tuple, labels)))): v for name, rows in ledger["counters"].items()
               for labels, v in rows}
    _landed_exactly_once(influxd, db, samples, count)


def test_a_plan_belongs_to_one_thread_at_a_time():
    """A batch staged by one thread (formatted into the plan's staging buffer, its records pointing
    into it) cannot be staged over or committed by another: either would mix the two batches'
    lines. The second thread gets RuntimeError; the owner's commit is intact."""
    require_compiled_path()
    from test_fastpath import T0, spec_for

    from station_bridge.fastpath import Accelerator
    from station_bridge.mapping import Mapper

    spec = spec_for()
    accelerator, why = Accelerator.for_mapper(Mapper(spec, station="ams1"), spec)
    assert accelerator is not None, why
    plan = accelerator.plan  # type: ignore[attr-defined]
    mine = [[b"t", msgpack.packb({"instrument": "A", "bid": 1.5, "timestamp": T0 + k})] for k in range(3)]
    theirs = [[b"t", msgpack.packb({"instrument": "B", "bid": 9.25, "timestamp": T0 + k})] for k in range(3)]
    assert plan.stage_frames(mine, 0) == 3
    seen: list = []

    def other() -> None:
        for call in (lambda: plan.stage_frames(theirs, 0), lambda: plan.commit(None, lambda f, e: None)):
            try:
                call()
                seen.append("ran")
            except RuntimeError as exc:
                seen.append(str(exc))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(seen) == 2 and all("one thread at a time" in s for s in seen), seen
    data, lines, compiled = plan.commit(None, lambda f, e: None)
    assert (lines, compiled) == (3, 3)
    assert [line.split(b" ")[-1] for line in data.splitlines()] == [str((T0 + k) * 10**9).encode() for k in range(3)]
    assert all(b"instrument=A" in line and b"bid=1.5" in line for line in data.splitlines()), data


if __name__ == "__main__":
    pytest.main([__file__, "-q"])


@pytest.mark.parametrize(("mode", "cpus", "threads"), [("auto", 2, False), ("auto", 3, True), ("on", 2, True),
                                                       ("on", 1, True), ("off", 8, False)])
def test_receive_threads_by_mode_and_cpus(mode, cpus, threads):
    assert threads_wanted(mode, 2, cpus) is threads
    assert threads_wanted(mode, 1, cpus) is False  # one compiled subscription: nothing to parallelise


def test_auto_receives_in_one_loop_on_two_cpus_and_says_so(tmp_path, influxd):
    """The bridge started on two CPUs (its affinity set) with `receive_threads: auto` and two busy
    compiled subscriptions runs one receive loop and logs why; every line still lands once."""
    require_compiled_path()
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:2])  # the child inherits it
    try:
        bridge, db, endpoints = _bridge(tmp_path, influxd, threads=False, receive_threads="auto")
    finally:
        os.sched_setaffinity(0, before)
    loop = [r for r in bridge.log_records() if r.get("msg") == "one receive loop"]
    assert loop and loop[0]["receive_threads"] == "auto" and loop[0]["cpus"] <= 2 and loop[0]["compiled"] == 2, loop
    errors: list = []
    for thread in _publishers(endpoints, threading.Barrier(len(SUBS)), errors, 2000):
        thread.join(60)
    assert not errors, errors
    wait_for(lambda: total(bridge.samples(), "bridge_received_messages_total") == 2000 * len(SUBS), 60,
             "every message received")
    _landed_exactly_once(influxd, db, quiet_ledger(bridge, subscriptions=tuple(SUBS), timeout=60), 2000)
    assert bridge.stop() == 0
