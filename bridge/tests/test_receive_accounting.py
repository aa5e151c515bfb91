"""Every message a compiled subscription takes off its socket is counted, whatever raises
(issue 22's receive threads, and the one receive loop alike): received == mapped + rejected.

- a batch whose commit raises (a defect in the Python path of a handed-back message, no memory
  in C) is gone with its lines: Accelerator.receive counts its messages (`Burst.lost`, counted
  `unexpected` by the pipeline), keeps the batches before it and leaves the plan usable;
- a message whose dead-letter record cannot be made stays counted, and the rest of its batch lands;
- a burst of which nothing maps (a feed the mapping refuses) is not a receive error;
- a subscription whose every receive fails (its receive thread's, or the one loop's) is named in
  /healthz (it does not say 200 meanwhile); a receive thread that ends is named too, and the main
  loop reads its socket.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import msgpack
import pytest
import zmq
from compiled import require_compiled_path
from harness import BridgeProcess, publisher, quiet_ledger, wait_for
from servers import free_port
from test_fastpath import T0, python_path, spec_for

from station_bridge.demo import wait_for_subscriber
from station_bridge.fastpath import Accelerator
from station_bridge.mapping import Mapper
from station_bridge.metrics import total, value

STAGE_MAX = 256  # the messages of one batch (_fastpath.c)
FAULTS = str(Path(__file__).parent / "faults")  # sitecustomize.py: STATION_TEST_FAULT


def test_a_commit_that_raises_mid_burst_counts_the_batch_and_keeps_the_rest(zmq_context):
    """The Python path raises for one handed-back message of the third batch: the two batches
    before it are returned whole, the third's messages are all accounted for (settled by `slow`
    before the raise, or `lost`), the burst ends there, and the next burst takes the rest."""
    require_compiled_path()
    spec = spec_for()
    pub, sock = zmq_context.socket(zmq.PAIR), zmq_context.socket(zmq.PAIR)
    for socket in (pub, sock):
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
    pub.bind("inproc://accounting")
    sock.connect("inproc://accounting")
    count, boom = 1000, 2 * STAGE_MAX + 100
    for k in range(count):
        record = {"instrument": f"I{k % 5}", "bid": 1.0 + k, "ask": 2.0, "volume": k, "timestamp": T0 + k}
        if k % 50 == 7:
            record["bid"] = float("nan")  # handed back, refused by the Python path (settled)
        frames = [b"kraken_tick", msgpack.packb(record)]
        pub.send_multipart([*frames, b"extra"] if k == boom else frames)  # three frames: handed back
    mapper = Mapper(spec, station="ams1")
    accelerator, why = Accelerator.for_mapper(mapper, spec)
    assert accelerator is not None, why
    run, newest = python_path(spec, mapper), {}
    settled = [0]

    def slow(frames: list[bytes], error: BaseException | None) -> bytes | None:
        if len(frames) == 3:
            raise RuntimeError("a defect of the Python path")
        line = run(frames, newest, error)[0]
        settled[0] += line is None
        return line

    assert sock.poll(2000)
    burst = accelerator.receive(sock, 2000, slow)
    assert isinstance(burst.error, RuntimeError)
    assert burst.received == 3 * STAGE_MAX  # the burst ended with the failed batch
    refused_before = sum(1 for k in range(2 * STAGE_MAX) if k % 50 == 7)
    assert burst.lines == 2 * STAGE_MAX - refused_before  # the batches before it: whole
    assert [int(line.rsplit(b" ", 1)[1]) for line in burst.data.splitlines()] == [
        (T0 + k) * 10**9 for k in range(2 * STAGE_MAX) if k % 50 != 7]
    assert burst.lines + settled[0] + burst.lost == burst.received  # every message taken: accounted for
    assert burst.lost == STAGE_MAX - sum(1 for k in range(2 * STAGE_MAX, boom) if k % 50 == 7)
    rest, received = b"", burst.received
    while received < count:  # the plan is usable again: the rest of the socket
        assert sock.poll(2000)
        more = accelerator.receive(sock, 2000, slow)
        assert more.error is None and more.lost == 0
        rest += more.data
        received += more.received
    assert received == count
    assert len(rest.splitlines()) == sum(1 for k in range(3 * STAGE_MAX, count) if k % 50 != 7)


SUBS = ("a", "b")
FIELDS = {"bid": "float", "seq": "integer"}


def _bridge(tmp_path, influxd, fault: str = "", **overrides) -> tuple[BridgeProcess, str, dict[str, str]]:
    require_compiled_path()
    db = f"accounting_{free_port()}"
    influxd.query(f'CREATE DATABASE "{db}"')
    endpoints = {name: f"tcp://127.0.0.1:{free_port()}" for name in SUBS}
    subs = [{"name": name, "endpoints": [endpoints[name]], "topics": [f"{name}_tick"], "framing": "msgpack",
             "mapping": {"measurement": f"m_{name}", "tags": ["instrument"], "fields": FIELDS,
                         "time": {"field": "ts", "format": "epoch_ms"}}} for name in SUBS]
    overrides.setdefault("receive_threads", "on")  # a thread each whatever the CPUs (`auto`: more than two)
    bridge = BridgeProcess(tmp_path, influxd, db, "", subscription=subs[0], subscriptions_extra=subs[1:],
                           destination={"batch_size": 5000, "flush_interval": "50ms"}, **overrides)
    if fault:
        bridge.env["PYTHONPATH"] = os.pathsep.join([FAULTS, bridge.env.get("PYTHONPATH", "")])
        bridge.env["STATION_TEST_FAULT"] = fault
    bridge.start()
    threaded = any(r.get("msg") == "receive threads" for r in bridge.log_records())
    assert threaded == (overrides["receive_threads"] == "on")
    return bridge, db, endpoints


def _publish(endpoint: str, topic: bytes, records: list[dict], errors: list) -> None:
    context = zmq.Context()
    try:
        socket = publisher(context, endpoint)
        if not wait_for_subscriber(socket, topic, 15):
            errors.append(f"{endpoint}: no subscriber")
        for record in records:
            socket.send_multipart([topic, msgpack.packb(record)])
        socket.close(linger=30_000)
    except Exception as exc:  # reported by the test
        errors.append(repr(exc))
    finally:
        context.term()


def _send(endpoints: dict[str, str], feeds: dict[str, list[dict]]) -> None:
    errors: list = []
    threads = [threading.Thread(target=_publish, args=(endpoints[name], f"{name}_tick".encode(), records, errors))
               for name, records in feeds.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def _received(bridge: BridgeProcess, count: int) -> dict:
    """Waits until every message of both feeds was received (a publisher's context ends once
    its messages are on the wire, not when the bridge took them), then for a quiet ledger."""
    wait_for(lambda: total(bridge.samples(), "bridge_received_messages_total") >= count * len(SUBS), 60,
             "every message received", detail=lambda: str(total(bridge.samples(), "bridge_received_messages_total")))
    return quiet_ledger(bridge, subscriptions=SUBS, timeout=60)


def _ticks(count: int, **changes: object) -> list[dict]:
    return [{"instrument": "EURUSD", "bid": 1.0 + k, "seq": k, "ts": T0 * 1000 + k, **changes} for k in range(count)]


def test_a_feed_the_mapping_refuses_entirely_is_counted_and_no_receive_error(tmp_path, influxd):
    """Bursts of which nothing maps (every bid NaN: no line) next to a valid feed: counted rejected,
    no receive error (a burst without lines raised in the hand-over, each one logged with its
    traceback, and its thread paused 200 ms: 271 of them in 20 s of such a feed)."""
    bridge, db, endpoints = _bridge(tmp_path, influxd)
    count = 3000
    _send(endpoints, {"a": _ticks(count, bid=float("nan")), "b": _ticks(count)})
    samples = _received(bridge, count)
    assert value(samples, "bridge_received_messages_total", subscription="a") == count
    assert value(samples, "bridge_rejected_messages_total", subscription="a", reason="non_finite") == count
    assert value(samples, "bridge_received_messages_total", subscription="b") == count
    assert total(samples, "bridge_stage_errors_total") == 0
    assert not [r for r in bridge.log_records() if r.get("msg") == "receive error (contained)"]
    assert influxd.count(db, "m_b") == count
    assert bridge.stop() == 0


@pytest.mark.parametrize("fast_path", ["auto", "off"])
def test_a_dead_letter_that_cannot_be_made_leaves_its_message_counted(tmp_path, influxd, fast_path):
    """Message 1500 of a burst is refused (a wrong type) and its dead-letter record raises
    MemoryError (injected): it is counted rejected, the dead-letter error counted, and every
    other message of its batch and burst lands (the compiled path dropped the batch uncounted:
    256 messages, 1536 in the one receive loop; the Python path its whole burst)."""
    bridge, db, endpoints = _bridge(tmp_path, influxd, fault="dead_letter_record", fast_path=fast_path,
                                    receive_threads="on" if fast_path == "auto" else "off")
    count = 3000
    feed = _ticks(count)
    feed[1500]["bid"] = "boom"
    _send(endpoints, {"a": feed, "b": _ticks(count)})
    samples = _received(bridge, count)
    assert value(samples, "bridge_received_messages_total", subscription="a") == count
    assert value(samples, "bridge_mapped_messages_total", subscription="a") == count - 1
    assert value(samples, "bridge_rejected_messages_total", subscription="a", reason="wrong_type") == 1
    assert value(samples, "bridge_dead_letter_errors_total", file="input.jsonl") == 1
    assert influxd.count(db, "m_a") == count - 1
    assert bridge.stop() == 0


@pytest.mark.parametrize("threads", ["on", "off"])
def test_a_subscription_whose_every_receive_fails_is_named_in_healthz(tmp_path, influxd, threads):
    """Subscription a's receive path raises every time (injected), in its receive thread or in the
    one loop: /healthz turns 503 naming it (it said 200 while nothing of a was read), b goes on
    landing."""
    bridge, db, endpoints = _bridge(tmp_path, influxd, fault="receive_round:a", receive_threads=threads)
    _send(endpoints, {"a": _ticks(10), "b": _ticks(1000)})
    wait_for(lambda: bridge.health()[0] == 503, 20, "/healthz 503", detail=lambda: str(bridge.health()))
    _, doc = bridge.health()
    found = [p for p in doc["problems"] if p["part"] == "subscription"]
    assert [p["name"] for p in found] == ["a"] and "receiving fails for" in found[0]["reason"], found
    wait_for(lambda: influxd.count(db, "m_b") == 1000, 30, "b landed")
    assert bridge.stop() == 0


def test_a_receive_thread_that_ends_is_named_and_its_socket_read_by_the_main_loop(tmp_path, influxd):
    """a's receive thread ends (SystemExit, injected, on its first receive): /healthz names it (it
    said 200 while nobody read a's socket: every later message stayed in libzmq) and the main loop
    takes its socket over: what a publishes still lands, counted."""
    bridge, db, endpoints = _bridge(tmp_path, influxd, fault="receive_exit:a")
    count = 2000
    _send(endpoints, {"a": _ticks(count), "b": _ticks(count)})
    wait_for(lambda: bridge.health()[0] == 503, 20, "/healthz 503", detail=lambda: str(bridge.health()))
    _, doc = bridge.health()
    found = [p for p in doc["problems"] if p["part"] == "subscription"]
    assert [p["name"] for p in found] == ["a"] and "receive thread ended" in found[0]["reason"], found
    samples = _received(bridge, count)
    assert value(samples, "bridge_mapped_messages_total", subscription="a") == count
    assert influxd.count(db, "m_a") == count
    assert bridge.stop() == 0


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
