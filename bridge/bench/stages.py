"""Pieces of the bridge benchmark (run.py): the feeds, a publisher that costs nothing per message,
the bridge's configuration as a station runs it, per-thread CPU, and each stage of the receive
thread timed on its own (same data, same run).

The stage timings call the bridge's own stage functions (decoder, mapper, journal intake log,
metrics, cache client, InfluxDB writer) the way the pipeline calls them, one burst at a time,
and read the CPU clock of the thread (or process) doing the work.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

BURST = 2000  # messages per receive call (the bridge's burst)
BATCH = 5000  # points per InfluxDB request (the benchmark's batch_size)
FRAMINGS = {  # name in the table -> bridge framing
    "msgpack": "msgpack",
    "\\x01 text": "text_delimited",
    "JSON": "json",
}
TEXT_ORDER = ["timestamp", "instrument", "bid", "ask", "volume", "seq"]


# --- feeds ----------------------------------------------------------------------------------------

def messages(framing: str, count: int, topic: str = "kraken_tick", start_seq: int = 0) -> list[list[bytes]]:
    """`count` demo ticks as the framing sends them (the seeds' Kraken tick, a legacy \\x01 line, JSON)."""
    import msgpack

    from station_bridge.demo import INSTRUMENTS, ticks
    t = topic.encode()
    out = []
    for tick in ticks(count, list(INSTRUMENTS), start_seq=start_seq):
        if framing == "msgpack":
            out.append([t, msgpack.packb(tick)])
        elif framing == "json":
            out.append([t, json.dumps(tick).encode()])
        else:
            out.append([t + b" " + "\x01".join(repr(tick[k]) if isinstance(tick[k], float) else str(tick[k])
                                               for k in TEXT_ORDER).encode()])
    return out


def subscription(framing: str, name: str, endpoint: str, topic: str) -> dict:
    mapping = {"measurement": "ticks", "tags": ["instrument"],
               "fields": {"bid": "float", "ask": "float", "volume": "integer", "seq": "integer"},
               "time": {"field": "timestamp", "format": "epoch_s"}}
    sub = {"name": name, "endpoints": [endpoint], "topics": [topic], "rcvhwm": 1_000_000, "framing": framing,
           "mapping": mapping}
    if framing == "text_delimited":
        # The legacy line carries the time as text: `auto` reads decimal seconds on every version.
        sub.update(field_order=TEXT_ORDER, delimiter="\x01")
        mapping["time"] = {"field": "timestamp", "format": "auto"}
    return sub


def bridge_config(tmp: Path, influx_url: str, db: str, redis_port: int | None, subs: list[dict],
                  http_port: int) -> dict:
    """A station's bridge: intake log (write-ahead) on, uniqueness (always on), the Redis cache,
    /metrics, self-metrics (their interval outlasts a run: a point per minute is no per-point cost)."""
    config = {
        "station": "bench",
        "subscriptions": subs,
        "destinations": [{"name": "local", "url": influx_url, "database": db, "batch_size": BATCH,
                          "flush_interval": 0.2, "queue_max_points": 2_000_000}],
        "journal": {"dir": str(tmp / "journal"), "write_ahead": True}, "dead_letter": {"dir": str(tmp / "dead")},
        "http": {"listen": f"127.0.0.1:{http_port}"}, "log": {"level": "warning"},
        "self_metrics": {"interval": "60s", "instance": "bench"},
    }
    if redis_port is not None:
        config["cache"] = {"url": f"redis://127.0.0.1:{redis_port}/0", "ttl": 600}
    return config


# --- a publisher that costs nothing per message ------------------------------------------------------

def preloaded_publisher(endpoint: str, frames: list[list[bytes]], topic: str, loaded, go) -> None:
    """Queues every message in an inproc pipe before timing starts, then lets libzmq's own
    forwarding loop (zmq.proxy) send them: the bridge is measured, not this process."""
    import zmq

    from station_bridge.demo import wait_for_subscriber
    context = zmq.Context()
    # PAIR both ends: the proxy also forwards the XPUB's subscription messages back into the pipe.
    pipe_out = context.socket(zmq.PAIR)
    pipe_in = context.socket(zmq.PAIR)
    for s in (pipe_out, pipe_in):
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.SNDHWM, 0)
    pipe_out.bind("inproc://preloaded")
    pipe_in.connect("inproc://preloaded")
    for message in frames:
        pipe_in.send_multipart(message)
    publisher = context.socket(zmq.XPUB)
    publisher.setsockopt(zmq.SNDHWM, 0)  # never drop: the subscriber's pace sets the rate
    publisher.bind(endpoint)
    if not wait_for_subscriber(publisher, topic.encode(), 30):
        raise RuntimeError("nobody subscribed within 30 s")
    loaded.set()
    go.wait()
    zmq.proxy(pipe_out, publisher)  # returns only when the process is terminated


def start_publisher(endpoint: str, frames: list[list[bytes]], topic: str):
    loaded, go = multiprocessing.Event(), multiprocessing.Event()
    process = multiprocessing.Process(target=preloaded_publisher, args=(endpoint, frames, topic, loaded, go),
                                      daemon=True)
    process.start()
    return process, loaded, go


# --- CPU --------------------------------------------------------------------------------------------

def cpu_seconds(pid: int, tid: int | None = None) -> float:
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_groups(pid: int) -> dict[str, float]:
    """CPU seconds per group of the bridge's threads (names set by named_threads.py)."""
    groups = {"receive loop": 0.0, "libzmq I/O": 0.0, "sink writers": 0.0, "cache worker": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            cpu = cpu_seconds(pid, int(task.name))
        except (OSError, ValueError):
            continue  # exited meanwhile: its CPU is in the process total ("other")
        if int(task.name) == pid:
            groups["receive loop"] += cpu
        elif comm.startswith("ZMQbg"):
            groups["libzmq I/O"] += cpu
        elif comm.startswith("sink"):
            groups["sink writers"] += cpu
        elif comm == "cache":
            groups["cache worker"] += cpu
        elif comm.startswith("receive-"):  # a compiled subscription's own receive thread (receivers.py)
            groups["receive loop"] += cpu
    return groups


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the receive thread, stage by stage -----------------------------------------------------------------

def _tree():
    """The bridge's stage functions, on this version of the bridge."""
    from station_bridge import app, journal, mapping, metrics
    try:
        from station_bridge.sources import receive
    except ImportError:  # before sources.receive
        receive = app._drain
    return receive, journal, mapping, metrics


def _receive_all(endpoint: str, topic: str, count: int, take, conn, result_extra=None) -> None:
    """In a child: subscribe, receive `count` messages with `take(socket) -> n`; report process CPU."""
    import zmq
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
    socket.connect(endpoint)
    conn.send("subscribed")
    got = 0
    started = None
    while got < count:
        if not socket.poll(30_000):
            raise RuntimeError(f"received {got} of {count}")
        if started is None:
            started = (time.process_time(), time.thread_time())
        got += take(socket)
    process, thread = time.process_time() - started[0], time.thread_time() - started[1]
    conn.send({"process_us": process / count * 1e6, "thread_us": thread / count * 1e6,
               **(result_extra() if result_extra else {})})
    socket.close(linger=0)
    context.term()


def _python_receiver(endpoint: str, topic: str, count: int, spec_data: dict, conn) -> None:
    """receive + decode + map/format (+ uniqueness) + newest per series + encode, as the Python path."""
    from station_bridge import config as cfg
    from station_bridge.decoders import build
    from station_bridge.mapping import Mapper
    receive = _tree()[0]
    spec = cfg.parse(spec_data, "bench").subscriptions[0]
    decode, mapper = build(spec), Mapper(spec, "bench")
    names = list(spec.mapping.fields)
    out: list[bytes] = []

    def take(socket) -> int:
        burst = receive(socket)
        lines, newest = [], {}
        for frames in burst:
            try:
                topic_, record = decode(frames)
                line, series, ts = mapper.keyed_line(topic_, record)
            except ValueError:
                continue
            lines.append(line)
            current = newest.get(series)
            if current is None or ts >= current[0]:
                newest[series] = (ts, {k: record[k] for k in names if record.get(k) is not None})
        out.append(("\n".join(lines) + "\n").encode())
        return len(burst)

    _receive_all(endpoint, topic, count, take, conn, lambda: {"data": b"".join(out)})


def _receive_only(endpoint: str, topic: str, count: int, spec_data: dict, conn) -> None:
    """pyzmq receiving bursts of frames, nothing else (the bridge's receive function)."""
    receive = _tree()[0]
    _receive_all(endpoint, topic, count, lambda socket: len(receive(socket)), conn)


def _compiled_receiver(endpoint: str, topic: str, count: int, spec_data: dict, conn) -> None:
    """The same through the compiled path: libzmq -> C -> one bytes chunk per burst."""
    from station_bridge import config as cfg
    from station_bridge.decoders import build
    from station_bridge.fastpath import Accelerator
    from station_bridge.mapping import Mapper
    spec = cfg.parse(spec_data, "bench").subscriptions[0]
    mapper = Mapper(spec, "bench")
    accelerator, why = Accelerator.for_mapper(mapper, spec)
    if accelerator is None:
        conn.send("subscribed")
        conn.send({"unavailable": why})
        return
    decode = build(spec)
    out: list[bytes] = []

    def slow(frames, error):
        if error is not None:
            return None
        try:
            return mapper.line(*decode(frames)).encode()
        except ValueError:
            return None

    def take(socket) -> int:
        burst = accelerator.receive(socket, BURST, slow, {})
        out.append(burst.data)
        return burst.received

    _receive_all(endpoint, topic, count, take, conn,
                 lambda: {"data": b"".join(out), "compiled": accelerator.stats()["handled"]})


def receiver_cost(kind: str, framing: str, frames: list[list[bytes]], endpoint: str, topic: str,
                  spec_data: dict) -> dict:
    """CPU per message of receiving and mapping `frames` in a child process (its libzmq I/O thread
    included), from a preloaded publisher over TCP."""
    target = {"python": _python_receiver, "compiled": _compiled_receiver, "receive": _receive_only}[kind]
    parent, child = multiprocessing.Pipe()
    publisher, loaded, go = start_publisher(endpoint, frames, topic)
    receiver = multiprocessing.Process(target=target, args=(endpoint, topic, len(frames), spec_data, child))
    receiver.start()
    try:
        assert parent.poll(60) and parent.recv() == "subscribed"
        loaded.wait(60)
        go.set()
        if not parent.poll(300):
            raise RuntimeError(f"{kind} receiver did not finish")
        return parent.recv()
    finally:
        receiver.join(30)
        publisher.terminate()
        publisher.join()


def isolated_stages(framing: str, frames: list[list[bytes]], spec_data: dict, influx_url: str, db: str,
                    redis_port: int | None, redis_password: str | None) -> dict[str, float]:
    """CPU microseconds per message of each stage after receiving, each timed on its own over the
    same messages, burst by burst, as the receive thread (and the cache and sink threads) run them."""
    from station_bridge import config as cfg
    from station_bridge.decoders import build
    _, journal, mapping, metrics_module = _tree()
    parsed = cfg.parse(spec_data, "bench")
    spec = parsed.subscriptions[0]
    n = len(frames)
    bursts = [frames[i:i + BURST] for i in range(0, n, BURST)]
    out: dict[str, float] = {}

    def timed(name: str, work) -> object:
        started = time.thread_time()
        result = work()
        out[name] = (time.thread_time() - started) / n * 1e6
        return result

    decode = build(spec)
    decoded = timed("decode", lambda: [[decode(f) for f in burst] for burst in bursts])
    mapper = mapping.Mapper(spec, "bench")
    keyed = mapper.keyed_line
    mapped = timed("map + format (uniqueness inline)",
                   lambda: [[keyed(t, r) for t, r in burst] for burst in decoded])
    # Uniqueness alone: the same (series, time) claims on a fresh state, through its general call.
    fresh = mapping.Mapper(spec, "bench")
    unique = getattr(fresh, "unique", None)
    claim = unique.claim if unique is not None else fresh._unique
    raw_times = [[(s, t) for (_, s, t) in burst] for burst in mapped]
    timed("  of which uniqueness (isolated claim)", lambda: [[claim(s, t) for s, t in b] for b in raw_times])
    names = list(spec.mapping.fields)

    def newest_per_burst():
        result = []
        for burst, pairs in zip(mapped, decoded, strict=True):
            newest = {}
            for (_, series, ts), (_, record) in zip(burst, pairs, strict=True):
                current = newest.get(series)
                if current is None or ts >= current[0]:
                    newest[series] = (ts, record)
            result.append(newest)
        return result
    newest = timed("cache: newest per series (receive thread)", newest_per_burst)
    chunks = timed("encode the burst", lambda: [("\n".join(line for line, _, _ in b) + "\n").encode()
                                                for b in mapped])
    with tempfile.TemporaryDirectory() as wal_dir:
        intake = journal.Intake(Path(wal_dir))
        chunk_type = journal.Chunk

        def wal():
            for data, burst in zip(chunks, mapped, strict=True):
                chunk = chunk_type(data, len(burst))
                intake.append(chunk)
                intake.settle(chunk.seq, chunk.count)
        timed("intake log (one write per burst)", wal)
        intake.close()
    metrics = metrics_module.Metrics()

    def count():
        for burst in bursts:
            metrics.inc("bridge_received_messages_total", len(burst), subscription="bench")
            metrics.inc("bridge_mapped_messages_total", len(burst), subscription="bench")
            metrics.inc("bridge_accepted_points_total", len(burst), destination="local")
            metrics.inc("bridge_written_points_total", len(burst), destination="local")
    timed("metrics (counters per burst)", count)
    if redis_port is not None:
        os.environ["STATION_BRIDGE_CACHE_PASSWORD"] = redis_password or ""
        config = cfg.parse({**spec_data, "cache": {"url": f"redis://127.0.0.1:{redis_port}/0", "ttl": 600}}, "bench")
        from station_bridge.cache import LatestCache
        cache = LatestCache(config.cache, metrics)
        if hasattr(cache, "offer"):  # a worker thread coalesces and sends one pipeline per round
            def send():
                for burst_newest in newest:
                    cache._send({s: (ts, {k: str(r[k]) for k in names if r.get(k) is not None})
                                 for s, (ts, r) in burst_newest.items()})
        else:  # the receive thread sends one pipeline per burst
            def send():
                for burst_newest, burst in zip(newest, decoded, strict=True):
                    topic = burst[0][0]
                    cache.update([mapper.cached_point(topic, r, s, ts) for s, (ts, r) in burst_newest.items()])
        timed("cache: Redis pipeline per burst (client side)", send)
    from station_bridge.sinks import InfluxWriter
    dest = parsed.destinations[0]
    writer = InfluxWriter(dest)
    body = b"".join(chunks)
    lines = body.split(b"\n")[:-1]
    requests = [b"\n".join(lines[i:i + BATCH]) + b"\n" for i in range(0, len(lines), BATCH)]

    def post():
        for request in requests:
            status, message = writer.post(request)
            if status != 204:
                raise RuntimeError(f"InfluxDB answered {status}: {message}")
    timed("HTTP to InfluxDB (client side, 5,000 per request)", post)
    writer.close()
    return out


def stage_child(framing: str, frames, spec_data, influx_url, db, redis_port, redis_password, conn) -> None:
    try:
        conn.send(isolated_stages(framing, frames, spec_data, influx_url, db, redis_port, redis_password))
    except Exception as exc:  # reported by the parent
        conn.send({"error": repr(exc)})


def run_isolated(framing: str, frames, spec_data, influx_url, db, redis_port, redis_password) -> dict:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=stage_child, args=(framing, frames, spec_data, influx_url, db,
                                                                redis_port, redis_password, child))
    process.start()
    if not parent.poll(600):
        process.terminate()
        raise RuntimeError("stage timing did not finish")
    result = parent.recv()
    process.join(30)
    if "error" in result:
        raise RuntimeError(f"stage timing failed: {result['error']}")
    return result


def scrape(port: int, path: str = "/metrics") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with contextlib.closing(conn):
        conn.request("GET", path)
        return conn.getresponse().read().decode()
