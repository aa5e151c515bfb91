"""`ca_file` end to end, as roles/bridge delivers a central's private CA: a bridge forwarding to a
real influxd that serves HTTPS itself (`https-enabled`) with a certificate signed by a CA made here
with openssl. Without the CA the destination fails verification: every point is accepted, counted
as failing and kept in the destination's journal, none written, none lost, none a dead letter;
restarted with the CA file as the destination's `ca_file`, the journal drains and every point lands
once. About 10 seconds."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import msgpack
import pytest
from harness import BridgeProcess, publisher, subscribed, wait_for
from servers import Influxd

from station_bridge.metrics import total

POINTS = 300


def private_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA (its certificate is what a central's ca_cert holds) and a server certificate it signed
    for localhost: (CA certificate, server certificate, server key)."""
    ca_key, ca_cert = tmp / "ca.key", tmp / "ca.pem"
    key, csr, cert, ext = tmp / "server.key", tmp / "server.csr", tmp / "server.pem", tmp / "server.ext"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert),
            "-days", "2", "-subj", "/CN=station-stack test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n"
                   "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca_cert, cert, key


@pytest.fixture()
def https_influxd(tmp_path: Path):
    ca, cert, key = private_ca(tmp_path)
    server = Influxd(tmp_path / "influxd", tls=(cert, key), ca=ca).start()
    try:
        server.query('CREATE DATABASE "central"')
        yield server, ca
    finally:
        server.stop()


def test_a_private_ca_is_trusted_only_through_the_destinations_ca_file(tmp_path, https_influxd, endpoint,
                                                                       zmq_context):
    influxd, ca = https_influxd
    pub = publisher(zmq_context, endpoint)
    state = tmp_path / "bridge"
    state.mkdir()
    # The system's CAs only (no ca_file): the server's certificate does not verify.
    bridge = BridgeProcess(state, influxd, "central", endpoint, destination={"name": "central"}).start()
    try:
        subscribed(pub)
        t0 = time.time() - 60
        for seq in range(POINTS):
            pub.send_multipart([b"kraken_tick", msgpack.packb({
                "instrument": "EURUSD", "bid": 1.0 + seq / 1e4, "ask": 1.1, "volume": seq, "seq": seq,
                "timestamp": t0 + seq / 1000})])
        wait_for(lambda: bridge.value("bridge_accepted_points_total", destination="central") == POINTS, 10,
                 "every point accepted")
        wait_for(lambda: total(bridge.samples(), "bridge_write_errors_total", destination="central") > 0, 15,
                 "a failed write counted")
        wait_for(lambda: bridge.value("bridge_destination_failing_seconds", destination="central") > 0, 15,
                 "the destination failing")
        errors = {k: v for k, v in bridge.samples().items() if "write_errors" in str(k)}
    finally:
        assert bridge.stop() == 0
    print("without the CA:", errors)
    log = (state / "bridge.log").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log, log[-3000:]
    assert influxd.query('SELECT count("bid") FROM "ticks"', db="central") == []
    journaled = bridge.journal_lines("central")
    assert len(journaled) == POINTS, len(journaled)  # all kept, none lost
    assert [p for p in (state / "dead").rglob("*") if p.is_file() and p.stat().st_size] == []  # no dead letter

    # The same destination with the CA as its ca_file (what roles/bridge renders): the backlog lands.
    trusted = BridgeProcess(state, influxd, "central", endpoint,
                            destination={"name": "central", "ca_file": str(ca)}).start()
    try:
        # (The ledger carries the counters across the restart: no new failure from here on.)
        failed_before = total(trusted.samples(), "bridge_write_errors_total", destination="central")
        wait_for(lambda: (lambda rows: rows and rows[0]["count"] == POINTS)(
            influxd.query('SELECT count("bid") FROM "ticks"', db="central")), 30, "the journal delivered")
        wait_for(lambda: trusted.value("bridge_journal_points", destination="central") == 0, 15, "the journal empty")
        samples = trusted.samples()
        assert total(samples, "bridge_write_errors_total", destination="central") == failed_before
        assert total(samples, "bridge_dead_letters_total") == 0
    finally:
        assert trusted.stop() == 0
    seqs = sorted(r["seq"] for r in influxd.query('SELECT "seq" FROM "ticks"', db="central"))
    assert seqs == list(range(POINTS))  # each point once
