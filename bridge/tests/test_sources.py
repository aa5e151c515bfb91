"""Endpoints: refused at load when malformed; at run time a subscription that cannot be set up,
cannot resolve its host, finds no publisher or finds a peer that never speaks ZMTP is named in
/healthz and never stalls the others (real bridge processes, real ZMQ sockets, real influxd, a
real DNS server that never answers)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import yaml
import zmq
from harness import BRIDGE, TICKS_MAPPING, BridgeProcess, publisher, quiet_ledger, subscribed, wait_for
from servers import free_port

from station_bridge.cli import main
from station_bridge.demo import ticks, wait_for_subscriber

DESTINATION = [{"name": "d", "url": "http://127.0.0.1:8086", "database": "db"}]
MAPPING = {"measurement": "m", "fields": {"v": "float"}}


def config_with(endpoints: list[str], bind: bool = False) -> dict:
    return {"subscriptions": [
        {"name": "fine", "endpoints": ["tcp://127.0.0.1:5556"], "mapping": MAPPING},
        {"name": "feed7", "endpoints": endpoints, "bind": bind, "mapping": MAPPING}],
        "destinations": DESTINATION}


@pytest.mark.parametrize(("endpoint", "bind", "why"), [
    ("tcp://127.0.0.1", False, "no port"),
    ("tcp://bad host:5556", False, "space"),
    (" tcp://127.0.0.1:5556", False, "space"),
    ("tcp://127.0.0.1:5556\n", False, "control character"),
    ("udp://127.0.0.1:5556", False, "udp:// is not supported"),
    ("tcp://;127.0.0.1:5556", False, "an empty source address"),  # the attacker's: libzmq refused it forever
    ("ipc://@", False, "needs a name after @"),
    ("epgm://eth0;239.192.1.1:5555", False, "OpenPGM"),
    ("ws://127.0.0.1:5556", False, "draft"),
    ("127.0.0.1:5556", False, "transport://address"),
    ("tcp://*:5556", False, "needs bind: true"),
    ("tcp://127.0.0.1:*", False, "needs bind: true"),
    ("ipc://*", False, "needs bind: true"),
    ("tcp://127.0.0.1:0", False, "outside 1-65535"),
    ("tcp://127.0.0.1:0", True, "use \\* for an ephemeral port"),
    ("tcp://127.0.0.1:65536", False, "outside 1-65535"),
    ("tcp://127.0.0.1:-1", False, "not a number"),
    ("tcp://127.0.0.1:55x6", False, "not a number"),
    ("tcp://127.0.0.1:!", True, "czmq"),
    ("tcp://::1:5556", False, "in brackets"),
    ("tcp://[::g]:5556", False, "not an IPv6 address"),
    ("tcp://300.1.2.3:5556", False, "not an IPv4 address"),
    ("tcp://-pub.example:5556", False, "not a host name"),
    ("tcp://pub..example:5556", False, "not a host name"),
    ("tcp://:5556", False, "no host"),
    ("ipc://" + "p" * 108, False, "longer than 107 bytes"),
    ("inproc://", False, "no address"),
])
def test_check_config_refuses_a_malformed_endpoint_naming_subscription_and_endpoint(tmp_path: Path, capsys,
                                                                                   endpoint: str, bind: bool,
                                                                                   why: str):
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump(config_with([endpoint], bind)))
    for argv in (["check-config", str(path)], ["check-config", "--json", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "subscriptions[1].endpoints[0]: subscription 'feed7': endpoint " + repr(endpoint) in err, err
        assert why.replace("\\", "") in err, err


@pytest.mark.parametrize(("endpoints", "bind"), [
    (["tcp://127.0.0.1:5556", "tcp://publisher-1.station.example:1", "tcp://pub_2:65535",
      "tcp://[::1]:5556", "tcp://[fe80::1%eth0]:5556", "tcp://10.0.0.2;127.0.0.1:5556",
      "tcp://eth0:*;pub.example.:5556", "ipc:///run/feeds/kraken.sock", "ipc://@kraken", "inproc://feed"], False),
    (["tcp://*:5556", "tcp://127.0.0.1:*", "tcp://eth0:5557", "tcp://[::]:5558", "ipc://*",
      "ipc:///run/feeds/x.sock"], True),
])
def test_check_config_accepts_the_endpoint_forms_libzmq_takes(tmp_path: Path, capsys, endpoints, bind):
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump(config_with(endpoints, bind)))
    assert main(["check-config", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["subscriptions"][1]["endpoints"] == endpoints


def test_check_config_refuses_an_endpoint_listed_twice_or_bound_twice(tmp_path: Path, capsys):
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump(config_with(["tcp://127.0.0.1:5556", "tcp://127.0.0.1:5556"])))
    assert main(["check-config", str(path)]) == 2
    assert "endpoints[1]: subscription 'feed7': endpoint 'tcp://127.0.0.1:5556': listed twice" in \
        capsys.readouterr().err
    data = config_with(["tcp://127.0.0.1:5599"], bind=True)
    data["subscriptions"][0].update(endpoints=["tcp://127.0.0.1:5599"], bind=True)
    path.write_text(yaml.safe_dump(data))
    assert main(["check-config", str(path)]) == 2
    assert "is bound by subscription 'fine' too" in capsys.readouterr().err


# --- at run time ----------------------------------------------------------------------------------------


def subscription(name: str, endpoint: str, **extra: object) -> dict:
    return {"name": name, "endpoints": [endpoint], "topics": ["kraken_tick"], "framing": "msgpack",
            "mapping": {**TICKS_MAPPING, "measurement": name}, **extra}


def xpub(context: zmq.Context, endpoint: str) -> zmq.Socket:
    pub = publisher(context, endpoint)
    pub.setsockopt(zmq.LINGER, 0)
    return pub


def send_ticks(pub: zmq.Socket, count: int, start: int = 0) -> None:
    for tick in ticks(count, ["EURUSD", "GBPUSD"], start_seq=start):
        pub.send_multipart([b"kraken_tick", msgpack.packb(tick)])


def problems(bridge: BridgeProcess) -> dict[str, list[str]]:
    """subscription -> the reasons /healthz names it for."""
    out: dict[str, list[str]] = {}
    for p in bridge.health()[1]["problems"]:
        if p["part"] == "subscription":
            out.setdefault(p["name"], []).append(p["reason"])
    return out


def good_ones_receive_at_once(bridge: BridgeProcess, pubs: dict[str, zmq.Socket], influxd, database: str,
                              count: int = 200) -> float:
    """Every good subscription subscribed within 2 s of the bridge answering, and all it is sent
    lands within 6 s (the destination flushes every 200 ms; a loaded machine's slack)."""
    ready = time.monotonic()
    for name, pub in pubs.items():
        assert wait_for_subscriber(pub, b"kraken_tick", max(0.05, ready + 2.0 - time.monotonic())), \
            f"{name} not subscribed 2 s after the bridge answered"
    subscribed = time.monotonic() - ready
    for pub in pubs.values():
        send_ticks(pub, count)
    for name in pubs:
        wait_for(lambda n=name: influxd.count(database, n) == count, max(0.5, ready + 6 - time.monotonic()),
                 f"{count} ticks of {name} within 6 s of the bridge answering")
    return subscribed


@contextlib.contextmanager
def silent_tcp_server() -> Iterator[int]:
    """Accepts TCP (the kernel completes the handshake into the backlog) and never speaks ZMTP."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_bad_endpoints_at_run_time_never_stall_the_good_subscriptions_and_are_named(
        tmp_path, influxd, database, zmq_context):
    """A refused port, a peer that accepts TCP and never speaks ZMTP, influxd's HTTP port and a
    bind whose address is in use, in one bridge with three good subscriptions: the process runs,
    the good ones receive from the first second, each bad one is named in /healthz within its
    threshold; fixed endpoints (a real publisher on the silent port, the address freed) come back."""
    good = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("kraken", "good1", "good2")}
    refused = f"tcp://127.0.0.1:{free_port()}"
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    in_use = f"tcp://127.0.0.1:{held.getsockname()[1]}"
    with silent_tcp_server() as silent_port:
        silent_endpoint = f"tcp://127.0.0.1:{silent_port}"
        bridge = BridgeProcess(
            tmp_path, influxd, database, good["kraken"], subscription=subscription("kraken", good["kraken"]),
            subscriptions_extra=[subscription("good1", good["good1"]), subscription("good2", good["good2"]),
                                 subscription("refused", refused), subscription("silent", silent_endpoint),
                                 subscription("http", f"tcp://127.0.0.1:{influxd.port}"),
                                 subscription("inuse", in_use, bind=True)],
            health={"subscription_grace": "2s", "handshake_grace": "1s"})
        pubs = {name: xpub(zmq_context, endpoint) for name, endpoint in good.items()}
        bridge.start()
        started = time.monotonic()
        subscribed_after = good_ones_receive_at_once(bridge, pubs, influxd, database)
        assert bridge.alive

        named = wait_for(lambda: (lambda p: p if {"refused", "silent", "http", "inuse"} <= set(p) else None)(
            problems(bridge)), 10, "every bad subscription named in /healthz")
        named_after = time.monotonic() - started
        assert not {"kraken", "good1", "good2"} & set(named), named
        assert any(in_use in r and "Address already in use" in r for r in named["inuse"]), named
        assert any(silent_endpoint in r and "no ZMTP handshake" in r for r in named["silent"]), named
        assert any("no ZMTP handshake" in r for r in named["http"]), named
        assert any(refused in r and "no connection" in r for r in named["refused"]), named
        assert named_after < 2 + 1 + 3  # subscription_grace, handshake_grace, a loaded machine's slack
        samples = bridge.samples()
        from station_bridge.metrics import value
        assert value(samples, "bridge_subscription_start_errors_total", subscription="inuse") >= 1
        for name in ("silent", "http", "refused", "inuse"):
            assert value(samples, "bridge_subscription_connected", subscription=name) == 0, name
        for name in good:
            assert value(samples, "bridge_subscription_connected", subscription=name) == 1, name
        wait_for(lambda: bridge.value("bridge_subscription_handshake_failures_total", subscription="silent") >= 1,
                 5, "the silent peer's handshake failure counted (handshake_grace 1 s)")
        body = bridge.health()[1]["subscriptions"]
        assert body["inuse"]["started"] is False and body["silent"]["endpoints"][silent_endpoint]["peers"] == 0
        # fixed: a real publisher on the silent port, the in-use address freed, the refused port served
    fixed = xpub(zmq_context, silent_endpoint)
    held.close()
    late = xpub(zmq_context, refused)
    wait_for(lambda: not {"silent", "inuse", "refused"} & set(problems(bridge)), 20,
             "the fixed endpoints healthy again")
    assert set(problems(bridge)) == {"http"}
    assert wait_for_subscriber(fixed, b"kraken_tick", 5) and wait_for_subscriber(late, b"kraken_tick", 5)
    send_ticks(fixed, 50)
    send_ticks(late, 50)
    push = publisher(zmq_context, in_use, bind=False)  # the bound subscription is reachable now
    push.setsockopt(zmq.LINGER, 0)
    wait_for(lambda: bridge.health()[1]["subscriptions"]["inuse"]["connected"] == 1, 10, "a peer on inuse")
    subscribed(push)
    send_ticks(push, 50)
    for name in ("silent", "refused", "inuse"):
        wait_for(lambda n=name: influxd.count(database, n) == 50, 15, f"50 ticks of {name}")
    names = ("kraken", "good1", "good2", "refused", "silent", "http", "inuse")
    quiet_ledger(bridge, subscriptions=names)
    print(f"good subscribed after {subscribed_after:.2f} s; bad named after {named_after:.2f} s")
    assert bridge.stop() == 0


# --- a DNS server that never answers --------------------------------------------------------------------

UNRESOLVABLE = "feed.dns-blackhole.example"


@pytest.fixture()
def silent_resolver(tmp_path: Path) -> Iterator[list[str]]:
    """A DNS server on 127.0.0.77:53 (or the next free loopback address) that reads queries and
    never answers, and the command prefix that runs a program with a resolv.conf naming only it
    (a private mount namespace: the host's /etc/resolv.conf is never touched)."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for last in range(77, 100):  # 127.0.0.77, or the next loopback address nobody serves DNS on
        address = f"127.0.0.{last}"
        try:
            server.bind((address, 53))
            break
        except OSError:
            continue
    else:
        pytest.fail("no free loopback address for the silent DNS server")
    queries: list[bytes] = []

    def swallow() -> None:
        with contextlib.suppress(OSError):
            while True:
                queries.append(server.recvfrom(4096)[0])

    threading.Thread(target=swallow, daemon=True).start()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {address}\n")
    prefix = ["unshare", "--mount", "sh", "-c", f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"', "sh"]
    assert UNRESOLVABLE not in Path("/etc/hosts").read_text()
    with pytest.raises(subprocess.TimeoutExpired):  # the resolver hangs for the wrapped process
        subprocess.run([*prefix, "getent", "hosts", UNRESOLVABLE], timeout=1.5, capture_output=True)
    assert queries, "the wrapped resolver asked the silent server"
    try:
        yield prefix
    finally:
        server.close()


def test_a_host_name_whose_dns_never_answers_stalls_no_other_subscription(tmp_path, influxd, database,
                                                                          zmq_context, silent_resolver):
    """libzmq resolves a connect's host name in its I/O thread (~10 s per attempt here): with one
    context for every subscription the others subscribed only after 10 s. Each has its own now."""
    good = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("good0", "good1", "good2")}
    bridge = BridgeProcess(  # the bad one first: its connect reached the shared I/O thread first
        tmp_path, influxd, database, f"tcp://{UNRESOLVABLE}:5556", subscription=subscription("dns", f"tcp://{UNRESOLVABLE}:5556"),
        subscriptions_extra=[subscription(name, endpoint) for name, endpoint in good.items()],
        health={"subscription_grace": "2s"})
    bridge.prefix = silent_resolver
    pubs = {name: xpub(zmq_context, endpoint) for name, endpoint in good.items()}
    bridge.start()
    started = time.monotonic()
    subscribed_after = good_ones_receive_at_once(bridge, pubs, influxd, database)
    named = wait_for(lambda: problems(bridge).get("dns"), 8, "the dns subscription named in /healthz")
    assert any(UNRESOLVABLE in r for r in named) and set(problems(bridge)) == {"dns"}
    assert time.monotonic() - started < 2 + 4
    send_ticks(pubs["good1"], 100, start=1000)  # still flowing while the lookup hangs
    wait_for(lambda: influxd.count(database, "good1") == 300, 10, "100 more ticks of good1")
    quiet_ledger(bridge, subscriptions=("dns", *good))
    stopping = time.monotonic()
    assert bridge.stop() == 0
    print(f"good subscribed after {subscribed_after:.2f} s; stop took {time.monotonic() - stopping:.1f} s")


def test_a_bridge_process_runs_the_good_subscriptions_when_one_endpoint_cannot_be_bound(tmp_path, influxd, database,
                                                                                       zmq_context):
    """`run` with an endpoint libzmq refuses at bind (no such interface): the process stays up, the
    error is logged once per change, counted and named."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscriptions_extra=[subscription("nic", "tcp://nosuchnic0:5556", bind=True)])
    bridge.start()
    pub = xpub(zmq_context, endpoint)
    assert wait_for_subscriber(pub, b"kraken_tick", 3)
    reasons = wait_for(lambda: problems(bridge).get("nic"), 5, "nic named")
    assert "tcp://nosuchnic0:5556: cannot bind" in reasons[0], reasons
    wait_for(lambda: bridge.value("bridge_subscription_start_errors_total", subscription="nic") >= 3, 10,
             "retries with backoff (0.5, 1, 2 s)")
    logged = [r for r in bridge.log_records() if r.get("subscription") == "nic" and "set up" in r.get("msg", "")]
    assert len(logged) == 1, logged  # the same error: logged once, then at most once a minute
    assert bridge.alive and bridge.stop() == 0
    assert subprocess.run([BRIDGE, "check-config", str(bridge.path)], capture_output=True).returncode == 0

