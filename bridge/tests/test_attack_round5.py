"""Fifth attack round: what round 4 found and left, fixed by mechanism.

- `derived_tags` whose source was absent or did not match left their tags out in silence: the
  message merged into another series (ticks of `EUR_USD` and of an unparsable symbol in one);
- boolean text was loose (`yes`, ` TRUE `, `t` taken) and RFC 3339 times with surrounding space
  were accepted, as were decimal epoch texts `+5`, `05`, `.5`, `5.`, unlike numbers;
- `try` ignored the subscription's `topics`: a sample on a topic the bridge never subscribes to
  "mapped";
- two replays in one directory shared `replay-rejected.jsonl`: the second deleted the first's
  records refused again. (validate's landed check: tests/test_validate.py.)
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import msgpack
import pytest
import yaml
from harness import BRIDGE, BridgeProcess, RecordingDestination, publisher, subscribed, wait_for

from station_bridge import config as cfg
from station_bridge.lineproto import LineError, format_field_value
from station_bridge.mapping import MapError, Mapper
from station_bridge.refused import make_record
from station_bridge.timestamps import TimestampError, parser

T0 = 1_765_000_000_000_000_000


def cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([BRIDGE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def sub(**mapping: object):
    base = {"measurement": "px", "tags": ["instrument"], "fields": {"bid": "float"},
            "derived_tags": [{"source": "instrument", "regex": "^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$"}],
            "time": {"field": "ts", "format": "epoch_ns"}}
    full = {"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:1"], "framing": "json",
                               "mapping": {**base, **mapping}}],
            "destinations": [{"name": "d", "url": "http://x", "database": "db"}]}
    return cfg.parse(full, "test.yml").subscriptions[0]


# --- 1. derived tags: the missing-tag rule -----------------------------------------------------

def test_a_derived_tag_without_its_source_or_match_refuses_the_message_unless_declared_optional():
    """Before: {instrument: 'EURUSD'} (no match) and a message without `instrument` under
    optional_tags both mapped to `px,instrument=EURUSD` / `px` without base/quote, merging."""
    mapper = Mapper(sub(optional_tags=["instrument"]), now=lambda: T0)
    assert mapper.line("t", {"instrument": "EUR_USD", "bid": 1.0, "ts": T0}) == \
        f"px,base=EUR,instrument=EUR_USD,quote=USD bid=1.0 {T0}"
    for record, why in [({"instrument": "EURUSD", "bid": 1.0, "ts": T0}, "does not match"),
                        ({"bid": 1.0, "ts": T0}, "its source is absent"),
                        ({"instrument": "", "bid": 1.0, "ts": T0}, "does not match")]:
        with pytest.raises(MapError) as caught:
            mapper.line("t", record)
        assert caught.value.reason == "missing_field" and "derived tag 'base'" in str(caught.value), record
        assert why in str(caught.value)
    # the same explicit ways out as a configured tag: optional (left out) or a default
    optional = Mapper(sub(optional_tags=["instrument", "base", "quote"]), now=lambda: T0)
    assert optional.line("t", {"bid": 1.0, "ts": T0}) == f"px bid=1.0 {T0}"
    defaults = Mapper(sub(tag_defaults={"base": "none", "quote": "none"}), now=lambda: T0)
    assert defaults.line("t", {"instrument": "EURUSD", "bid": 1.0, "ts": T0}) == \
        f"px,base=none,instrument=EURUSD,quote=none bid=1.0 {T0}"
    # a group that did not take part counts as missing too
    partial = Mapper(sub(derived_tags=[{"source": "instrument", "regex": "^(?P<base>[A-Z]{3})(_(?P<quote>[A-Z]+))?"}]),
                     now=lambda: T0)
    with pytest.raises(MapError, match="group 'quote' matched nothing"):
        partial.line("t", {"instrument": "EUR", "bid": 1.0, "ts": T0})
    with pytest.raises(cfg.ConfigError, match="derived_tags groups"):
        sub(optional_tags=["nope"])


def test_try_names_the_derived_tag_a_message_lacks(tmp_path):
    conf = tmp_path / "c.yml"
    conf.write_text(yaml.safe_dump({
        "subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:9"], "framing": "json",
                           "mapping": {"measurement": "px", "tags": ["instrument"], "fields": {"bid": "float"},
                                       "derived_tags": [{"source": "instrument",
                                                         "regex": "^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$"}],
                                       "time": {"field": "ts", "format": "epoch_ns"}}}],
        "destinations": [{"name": "d", "url": "http://127.0.0.1:9", "database": "db"}],
        "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path / "d")}}))
    rows = [make_record([b"t", json.dumps({"instrument": name, "bid": 1.0, "ts": T0 + i}).encode()], T0 + i,
                        1 << 20)[0]
            for i, name in enumerate(["EUR_USD", "EURUSD"])]
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = cli("try", "--config", str(conf), str(sample))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused: missing_field: derived tag 'base': 'EURUSD' does not match" in done.stdout
    assert "1 mapped (1 points), 1 refused (missing_field: 1)" in done.stdout


# --- 3. one strict grammar for text ----------------------------------------------------------

@pytest.mark.parametrize("value", ["yes", "no", "t", "f", "T", "True", "TRUE", " true", "true ", "1 ", "01",
                                   "on", "", b"yes", 2, -1, 1.0, 0.0, None])
def test_boolean_text_is_exact(value):
    with pytest.raises(LineError) as caught:
        format_field_value(value, "boolean")
    assert caught.value.reason == "wrong_type"


@pytest.mark.parametrize(("value", "expected"), [("true", "true"), ("false", "false"), ("1", "true"), ("0", "false"),
                                                 (b"true", "true"), (True, "true"), (False, "false"), (1, "true"),
                                                 (0, "false")])
def test_boolean_values_taken(value, expected):
    assert format_field_value(value, "boolean") == expected


@pytest.mark.parametrize("fmt", ["auto", "epoch_s", "epoch_ns"])
@pytest.mark.parametrize("text", ["+1700000000", "01700000000", ".5", "1700000000.", " 1700000000", "1700000000\n",
                                  "-01"])
def test_epoch_text_follows_the_number_grammar(fmt, text):
    with pytest.raises(TimestampError):
        parser(fmt)(text)


@pytest.mark.parametrize("fmt", ["rfc3339", "auto", "naive"])
@pytest.mark.parametrize("text", [" 2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z ", "2023-11-14T22:13:20Z\n",
                                  "\t2023-11-14 22:13:20"])
def test_times_with_surrounding_space_are_refused(fmt, text):
    with pytest.raises(TimestampError):
        parser(fmt, "UTC")(text)


def test_the_bridge_refuses_loose_boolean_text_end_to_end(tmp_path):
    """Through the mapper a text_delimited feed's `yes` is wrong_type (was stored as true)."""
    spec = cfg.parse({"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:1"], "framing": "text_delimited",
                                         "field_order": ["ts", "up"],
                                         "mapping": {"measurement": "m", "fields": {"up": "boolean"},
                                                     "time": {"field": "ts", "format": "epoch_ns"}}}],
                      "destinations": [{"name": "d", "url": "http://x", "database": "db"}]}, "t.yml").subscriptions[0]
    mapper = Mapper(spec, now=lambda: T0)
    assert mapper.line("t", {"ts": str(T0), "up": "true"}) == f"m up=true {T0}"
    for loose in ("yes", " true", "TRUE"):
        with pytest.raises(LineError):
            mapper.line("t", {"ts": str(T0), "up": loose})
    with pytest.raises(MapError):
        mapper.line("t", {"ts": f" {T0}", "up": "true"})


# --- 4. try honours the subscription's topics --------------------------------------------------

def test_try_does_not_map_what_the_bridge_never_subscribes_to(tmp_path):
    """Before: topics [EUR] and a sample of GBP_USD and EUR_USD ticks: all 20 'mapped', exit 0."""
    conf = tmp_path / "c.yml"
    conf.write_text(yaml.safe_dump({
        "subscriptions": [{"name": "oanda", "endpoints": ["tcp://127.0.0.1:9"], "framing": "json", "topics": ["EUR"],
                           "mapping": {"measurement": "px", "tags": ["instrument"], "fields": {"bid": "float"},
                                       "time": {"field": "ts", "format": "epoch_ns"}}}],
        "destinations": [{"name": "d", "url": "http://127.0.0.1:9", "database": "db"}],
        "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path / "d")}}))

    def sample(name: str, instruments: list[str]) -> Path:
        rows = [make_record([i.encode(), json.dumps({"instrument": i, "bid": 1.0, "ts": T0 + n}).encode()],
                            T0 + n, 1 << 20)[0] for n, i in enumerate(instruments)]
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    mixed = cli("try", "--config", str(conf), "--json", str(sample("mixed.jsonl", ["EUR_USD", "GBP_USD"] * 10)))
    summary = json.loads(mixed.stdout)["summary"]
    assert summary["mapped"] == 10 and summary["unsubscribed"] == 10 and summary["refused"] == 0, summary
    assert mixed.returncode == 0 and "never receives them" in mixed.stderr
    other = cli("try", "--config", str(conf), str(sample("other.jsonl", ["GBP_USD"] * 5)))
    assert other.returncode == 1, other.stdout + other.stderr
    assert "0 mapped (0 points), 0 refused, 5 not subscribed" in other.stdout
    assert "not subscribed: the message starts b'GBP_USD'" in other.stdout


# --- 5. two replays at once in one directory -----------------------------------------------------

def test_a_second_replay_never_takes_the_first_ones_dead_letter_file(tmp_path):
    """Replay A waits on a destination that accepts TCP and never answers, its records refused
    again already in replay-rejected.jsonl; replay B started in the same directory deleted that
    file and wrote its own (A's records lost). Now B refuses to start (exit 1) and names A."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # never accepted, never answered: A's write waits for its timeout
    conf = tmp_path / "c.yml"
    conf.write_text(yaml.safe_dump({
        "subscriptions": [{"name": "oanda", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                           "mapping": {"measurement": "px", "tags": ["instrument"], "fields": {"bid": "float"},
                                       "time": {"field": "ts", "format": "epoch_ns"}}}],
        "destinations": [{"name": "d", "url": f"http://127.0.0.1:{hang.getsockname()[1]}", "database": "db",
                          "timeout": "4s"}],
        "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path / "d")}}))
    rows = [make_record([b"t", msgpack.packb({"bid": 1.0, "ts": T0})], T0, 1 << 20, subscription="oanda",
                        reason="missing_field")[0],
            make_record([b"t", msgpack.packb({"instrument": "A", "bid": 1.0, "ts": T0})], T0, 1 << 20,
                        subscription="oanda", reason="missing_field")[0]]
    letters = tmp_path / "input.jsonl"
    letters.write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "work"
    work.mkdir()
    first = subprocess.Popen([BRIDGE, "replay", "--dead-letters", "--config", str(conf), str(letters)], cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kept = work / "replay-rejected.jsonl"
        wait_for(lambda: kept.exists() and kept.stat().st_size > 0, 15, "the first replay's record refused again")
        second = cli("replay", "--dead-letters", "--config", str(conf), str(letters), cwd=work)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"another replay (pid {first.pid}) writes replay-rejected.jsonl" in second.stderr
        assert first.poll() is None  # the first one was still running: a real overlap
    finally:
        out, err = first.communicate(timeout=60)
        hang.close()
    assert first.returncode == 1, out + err  # its destination never answered
    records = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [r["reason"] for r in records] == ["missing_field"], records  # the first replay's, whole
    assert not (work / "replay-rejected.jsonl.lock").exists()
    # one after the other, as before
    again = cli("replay", "--dead-letters", "--config", str(conf), "--json", str(letters), cwd=work, timeout=90)
    assert again.returncode == 1 and json.loads(again.stdout)["rejected_again"] == {"missing_field": 1}


# --- round 4's replay of sparse CSV, attacked ---------------------------------------------------

def test_replay_never_lets_influxdb_stamp_a_row_with_the_replays_time(tmp_path, influxd, database):
    """Before: the torn last row of an export still being written (`ticks,E,3.5`: its time cell
    cut) and a row with an empty time cell were sent without a time and stored at the replay's
    time, a silent distortion (and `--5`, full-width digits went to InfluxDB as times). Now each is
    refused and kept with its file and line; whole rows land at their own time."""
    csv = tmp_path / "export.csv"
    csv.write_text("#datatype measurement,tag,double,dateTime:number\n"
                   "m,k,bid,time\n"
                   "ticks,A,1.5,1700000000000000000\n"
                   "ticks,B,2.5,\n"
                   "ticks,C,2.5,--1700000000000000000\n"
                   "ticks,D,2.5,１７００００００００\n"
                   "ticks,E,3.5\n")
    export = tmp_path / "export.jsonl"
    export.write_text(json.dumps({"measurement": "ticks", "tags": {"k": "F"}, "fields": {"bid": 1.0}}) + "\n"
                      + json.dumps({"measurement": "ticks", "tags": {"k": "G"}, "fields": {"bid": 1.0},
                                    "time": 1700000000000000001}) + "\n")
    conf = tmp_path / "c.yml"
    conf.write_text(yaml.safe_dump({
        "subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:9"],
                           "mapping": {"measurement": "x", "fields": {"bid": "float"}}}],
        "destinations": [{"name": "local", "url": influxd.url, "database": database}],
        "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path / "d")}}))
    done = cli("replay", "--config", str(conf), "--dead-letter", str(tmp_path / "again.jsonl"), str(csv), str(export))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "replayed 2 points into local; 5 rejected" in done.stdout, done.stdout
    rows = sorted((r["k"], r["time"]) for r in influxd.query('SELECT * FROM "ticks" GROUP BY *', db=database))
    assert rows == [("A", 1700000000000000000), ("G", 1700000000000000001)], rows
    kept = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert sorted((k["source"].rsplit("/", 1)[1], k["reason"]) for k in kept) == [
        ("export.csv:4", "bad_timestamp"), ("export.csv:5", "bad_timestamp"), ("export.csv:6", "bad_timestamp"),
        ("export.csv:7", "unreadable"), ("export.jsonl:1", "bad_timestamp")], kept


# --- round 4's binning, attacked ------------------------------------------------------------------

def test_binning_sums_shares_so_a_large_finite_value_keeps_its_bin():
    """value x width in ns overflowed: 1e300 x 1e9 is inf, the bin was dropped (not counted)."""
    from station_bridge.binning import TimeWeightedBinner
    second = 1_000_000_000
    binner = TimeWeightedBinner(second, ["v"])
    out = [*binner.add("s", 10 * second, {"v": 1e300}), *binner.add("s", 12 * second + 1, {"v": 1e300})]
    assert [(start, means["v"]) for start, means in out] == [(10 * second, 1e300), (11 * second, 1e300)]


def test_a_binned_feed_counts_what_it_cannot_bin(tmp_path, influxd, database, endpoint, zmq_context):
    """keep_raw: false. Before: a message without the binned field was mapped and made nothing,
    and a value of 1e300 made an infinite sum: its bins were dropped; /metrics counted neither (the
    binner's `skipped` was never exported). Now the bins of 1e300 land, the message without the
    field is counted in bridge_binning_skipped_total{reason="missing_field"}."""
    mapping = {"measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "float", "ask": "float"},
               "time": {"field": "t", "format": "epoch_ns"}}
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"mapping": mapping, "binning": {"interval": "1s", "fields": ["bid"],
                                                                          "keep_raw": False, "max_series": 2}}).start()
    pub = publisher(zmq_context, endpoint)
    subscribed(pub)
    second = 10**9
    t0 = time.time_ns() // second * second - 60 * second
    # a sample's value holds since the previous sample: 1e300 fills the bins t0 and t0+1
    for t, values in ((t0, {"bid": 1.0}), (t0 + 2 * second, {"bid": 1e300}), (t0 + 5 * second // 2, {"ask": 1.0}),
                      (t0 + 3 * second, {"bid": 1.0})):
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "t": t, **values})])
    wait_for(lambda: bridge.value("bridge_binning_skipped_total", subscription="kraken", reason="missing_field") == 1,
             20, "the message without the binned field counted")
    assert bridge.value("bridge_mapped_messages_total", subscription="kraken") == 4
    assert bridge.value("bridge_binning_skipped_total", subscription="kraken", reason="non_finite") == 0
    wait_for(lambda: bridge.value("bridge_written_points_total", destination="local")
             == bridge.value("bridge_mapped_points_total", subscription="kraken") > 0, 20, "the bins written")
    rows = {r["time"]: r["bid"] for r in influxd.query('SELECT * FROM "ticks_binned"', db=database)}
    assert rows == {t0: 1e300, t0 + second: 1e300, t0 + 2 * second: 1.0}, rows  # 1e300 was dropped
    # two more series with max_series 2: EURUSD, the least recently sampled, is forgotten (counted)
    for instrument in ("GBPUSD", "USDJPY"):
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": instrument, "t": t0, "bid": 1.0})])
    wait_for(lambda: bridge.value("bridge_binning_evicted_total", subscription="kraken") == 1, 20, "an eviction")
    bridge.stop()


def test_binning_keeps_at_most_max_series_series():
    """A tag with a new value per message (an order id) grew the binner by ~540 bytes a message
    without bound (300,000 series: 159 MiB). Now the least recently sampled beyond max_series is
    forgotten and counted; a series sampled again stays."""
    from station_bridge.binning import TimeWeightedBinner
    second = 1_000_000_000
    binner = TimeWeightedBinner(second, ["v"], max_series=3)
    for i in range(1_000):
        binner.add("keep", i * second, {"v": 1.0})
        binner.add(f"order={i}", i * second, {"v": 1.0})
    assert len(binner._series) == 3 and "keep" in binner._series and binner.evicted == 998
    spec = cfg.parse({"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:1"],
                                         "mapping": {"measurement": "m", "fields": {"v": "float"}},
                                         "binning": {"interval": "1s", "fields": ["v"], "max_series": 7}}],
                      "destinations": [{"name": "d", "url": "http://x", "database": "db"}]}, "t.yml")
    assert spec.subscriptions[0].binning.max_series == 7
    assert spec.effective()["subscriptions"][0]["binning"]["max_series"] == 7


def test_one_samples_bins_are_handed_over_in_pieces_too(tmp_path, zmq_context):
    """Round 4 handed bins over every 20,000 between samples, but one sample's bins (up to
    binning.max_gap of them) came as one list: 20 series silent 40 days under max_gap: 2000h,
    InfluxDB down, the journal on a full 8 MiB tmpfs: a real bridge peaked at 1,671 MiB RSS
    (3,456,000 bins in one chunk). Now a sample's bins are made lazily and handed over every
    20,000 (the same run: 88 MiB)."""
    from station_bridge.journal import DeadLetters
    from station_bridge.mapping import Uniqueness
    from station_bridge.metrics import Metrics
    from station_bridge.pipeline import BIN_FLUSH, Pipeline, RateLimitedLog, Subscription

    config = cfg.parse({"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                                           "mapping": {"measurement": "m", "tags": ["k"], "fields": {"v": "float"},
                                                       "time": {"field": "t", "format": "epoch_ns"}},
                                           "binning": {"interval": "1s", "fields": ["v"], "max_gap": "100h"}}],
                        "destinations": [{"name": "d", "url": "http://127.0.0.1:9", "database": "x"}]}, "t.yml")

    sink = RecordingDestination()
    metrics = Metrics()
    pipeline = Pipeline([sink], metrics, None, DeadLetters(tmp_path / "dead.jsonl"), 1 << 20,  # type: ignore[list-item]
                        RateLimitedLog(5))
    sub = Subscription(config.subscriptions[0], config, zmq_context, Uniqueness(128, 1000))
    t0 = 1_765_000_000 * 10**9
    pipeline.receive(sub, [[b"t", msgpack.packb({"k": "a", "v": 1.0, "t": t0})]])
    pipeline.receive(sub, [[b"t", msgpack.packb({"k": "a", "v": 2.0, "t": t0 + 90_000 * 10**9})]])
    assert sum(sink.chunks) == 2 + 90_000
    assert max(sink.chunks) <= BIN_FLUSH, sink.chunks  # before: one chunk of 90,000
    assert metrics.get("bridge_mapped_points_total", subscription="s") == sum(sink.chunks)
