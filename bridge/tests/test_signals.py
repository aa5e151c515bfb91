"""Every signal has a meaning (signals.py, the README's "Signals"): SIGHUP reloads (validated
first; a changed configuration: drain, flush, re-exec in the same PID), SIGUSR1 logs a summary,
SIGUSR2 dumps the stacks, the others whose default would kill are ignored. The tester's report:
`kill -HUP` killed the bridge undrained, and systemd did not restart it."""

from __future__ import annotations

import signal
import socket
import threading
import time

import yaml
from harness import BridgeProcess, quiet_ledger, wait_for

from station_bridge.demo import publish
from station_bridge.ledger import read_latest
from station_bridge.metrics import total, value


def _records(bridge: BridgeProcess, msg: str) -> list[dict]:
    return [r for r in bridge.log_records() if r.get("msg") == msg]


def test_sigusr1_sigusr2_and_other_signals_leave_it_running_logged_and_counted(tmp_path, influxd, database,
                                                                                endpoint):
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    pid = bridge.process.pid
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGPWR, signal.SIGRTMIN + 3):
        bridge.process.send_signal(sig)
        time.sleep(0.3)
        assert bridge.alive, f"{signal.Signals(sig).name if sig in signal.Signals else sig} ended the bridge"
    summary = wait_for(lambda: _records(bridge, "state summary"), 10, "the SIGUSR1 summary")[0]
    assert summary["pid"] == pid and "local" in summary["destinations"] and summary["memory"]["budget_bytes"] > 0
    assert "Thread 0x" in (tmp_path / "bridge.log").read_text(errors="replace")  # SIGUSR2: the stacks
    ignored = {r["signal"] for r in _records(bridge, "signal ignored")}
    assert {"SIGALRM", "SIGPWR", "SIGRTMIN+3"} <= ignored
    samples = bridge.samples()
    for name in ("SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPWR", "SIGRTMIN+3"):
        assert value(samples, "bridge_signals_total", signal=name) == 1
    sent = publish(endpoint, "kraken_tick", 500, rate=0, duration=20)
    wait_for(lambda: influxd.count(database, "ticks") == sent, 20, "the points")
    assert bridge.stop(signal.SIGQUIT) == 0  # a graceful stop, as SIGTERM: drained, the ledger clean
    assert read_latest(tmp_path / "journal" / "ledger.json")["clean"]
    assert _records(bridge, "stopped")


def test_sighup_with_an_invalid_or_unchanged_configuration_keeps_it_running(tmp_path, influxd, database, endpoint):
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    pid = bridge.process.pid
    sent = publish(endpoint, "kraken_tick", 1000, rate=0, duration=20)
    bridge.process.send_signal(signal.SIGHUP)  # unchanged
    wait_for(lambda: bridge.value("bridge_reloads_total", result="unchanged") == 1, 10, "unchanged")
    good = bridge.path.read_text()
    bridge.path.write_text(good.replace("framing: msgpack", "framing: carrier-pigeon"))
    bridge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: bridge.value("bridge_reloads_total", result="refused") == 1, 10, "refused")
    bridge.path.write_text("subscriptions: [")  # not even YAML
    bridge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: bridge.value("bridge_reloads_total", result="refused") == 2, 10, "refused again")
    refused = _records(bridge, "reload refused: the configuration is invalid, the running one is kept")
    assert len(refused) == 2 and "carrier-pigeon" in refused[0]["error"]
    assert bridge.alive and bridge.process.pid == pid
    sent += publish(endpoint, "kraken_tick", 1000, rate=0, duration=20, start_seq=1000)
    samples = quiet_ledger(bridge)
    assert value(samples, "bridge_received_messages_total", subscription="kraken") == sent == 2000
    assert influxd.count(database, "ticks") == sent
    assert value(samples, "bridge_start_time_seconds") > 0 and not _records(bridge, "re-executing")
    bridge.path.write_text(good)
    assert bridge.stop() == 0


def test_sighup_mid_stream_with_a_changed_configuration_drains_re_execs_and_loses_nothing_it_received(
        tmp_path, influxd, database, endpoint):
    """The same PID runs on with the new configuration; the ledger is continuous across the
    re-exec; everything received landed or was counted. A PUB socket drops what it publishes
    while no subscriber is connected (the re-exec's gap, reported): that is the publisher's loss,
    the same as at any restart."""
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, destination={"batch_size": 500})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of sd_notify
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.1)
    bridge.env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    bridge.start()
    pid = bridge.process.pid
    sent: list[int] = []
    publisher = threading.Thread(target=lambda: sent.append(
        publish(endpoint, "kraken_tick", 12_000, rate=3000, duration=30, warmup=10)))
    publisher.start()
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") > 2000, 20, "traffic")
    config = yaml.safe_load(bridge.path.read_text())
    config["destinations"][0]["batch_size"] = 700
    bridge.path.write_text(yaml.safe_dump(config))
    before = bridge.value("bridge_received_messages_total", subscription="kraken")
    bridge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: len(_records(bridge, "bridge running")) == 2, 20, "the re-executed bridge")
    assert bridge.alive and bridge.process.pid == pid
    publisher.join(60)
    samples = quiet_ledger(bridge)
    received = value(samples, "bridge_received_messages_total", subscription="kraken")
    written = value(samples, "bridge_written_points_total", destination="local")
    dropped = total(samples, "bridge_dropped_points_total", destination="local")
    landed = influxd.count(database, "ticks")
    stopped = _records(bridge, "stopped")
    ledger = read_latest(tmp_path / "journal" / "ledger.json")
    print(f"published {sent[0]}, received {received:.0f} (the re-exec's gap at the publisher: "
          f"{sent[0] - received:.0f}), {before:.0f} received before SIGHUP, landed {landed}, dropped {dropped:.0f}")
    assert value(samples, "bridge_reloads_total", result="applied") == 1  # the ledger carried it across the exec
    assert len(stopped) == 1 and stopped[0]["drained_messages"] >= 0
    assert landed == written == received and dropped == 0  # received == landed + counted, across the reload
    assert before < sent[0] * 0.8  # the reload came mid-stream
    assert received > 2000 and received >= sent[0] * 0.5
    assert bridge.stop() == 0
    assert read_latest(tmp_path / "journal" / "ledger.json")["clean"] and ledger is not None
    told = []
    while True:
        try:
            told.append(notify.recv(4096).decode().split("\n")[0])
        except TimeoutError:
            break
    notify.close()
    assert told == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]  # the unit stays up across the reload
