"""`gzip: true` (sinks.gzip_body): a real InfluxDB stores exactly what an uncompressed destination
stores, from a fifth of the bytes on the wire, with each deflate the bridge can use (ISA-L's, the
`isal` dependency, and zlib's, the fallback where it cannot be imported)."""

from __future__ import annotations

import gzip
import importlib
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_links import LinkProxy

from station_bridge import config as cfg
from station_bridge import sinks


def test_the_bridge_deflates_with_isal():
    """`isal` is a dependency (pyproject, constraints.txt: the station wheelhouse carries it);
    without it a station deflates with zlib, about four times the CPU per point."""
    assert sinks._DEFLATE is importlib.import_module("isal.isal_zlib")


@pytest.fixture(params=[pytest.param("isal.isal_zlib", id="isal"), pytest.param("zlib", id="zlib")])
def deflate(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    module = importlib.import_module(request.param)
    monkeypatch.setattr(sinks, "_DEFLATE", module)
    return module


def _writer(url: str, database: str, on: bool) -> sinks.InfluxWriter:
    config = {"station": "t", "subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:1"],
                                                 "mapping": {"measurement": "m", "fields": {"bid": "float"}}}],
              "destinations": [{"name": "d", "url": url, "database": database, "gzip": on}]}
    return sinks.InfluxWriter(cfg.parse(config, "t").destinations[0])


def _lines(count: int) -> list[bytes]:
    base = 1_764_439_880_000_000_000
    return [f'ticks,instrument=I{i % 8},station=a\\ b bid={1 + i / 1e6!r},ask={1.0001 + i / 1e6!r},'
            f'volume={i * 10}i,note="x\\"y {i % 3}" {base + i * 1000}\n'.encode() for i in range(count)]


def test_a_gzip_destination_stores_what_a_plain_one_does_from_a_fifth_of_the_bytes(influxd, deflate):
    name = deflate.__name__.replace(".", "_")
    plain_db, gzip_db = f"gz_plain_{name}", f"gz_on_{name}"
    lines = _lines(3000)
    sent = {}
    for db, on in ((plain_db, False), (gzip_db, True)):
        influxd.query(f'CREATE DATABASE "{db}"')
        proxy = LinkProxy(influxd.port)
        writer = _writer(proxy.url, db, on)
        for start in range(0, len(lines), 1000):
            assert writer.post(b"".join(lines[start:start + 1000]), 1000) == (204, "")
        writer.close()
        sent[on] = proxy.total()
        proxy.close()
    query = 'SELECT * FROM "ticks"'  # tags as columns
    stored = influxd.query(query, db=gzip_db)
    assert stored and stored == influxd.query(query, db=plain_db)
    assert influxd.count(gzip_db, "ticks") == len(lines)
    assert sent[True] * 4 < sent[False], sent


@given(st.binary(max_size=5000) | st.lists(st.sampled_from(_lines(50)), max_size=200).map(b"".join))
def test_gzip_body_is_one_gzip_member_of_the_body(body: bytes) -> None:
    packed = sinks.gzip_body(body)
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == body
    decompressor = zlib.decompressobj(31)
    assert decompressor.decompress(packed) == body and decompressor.eof and not decompressor.unused_data
