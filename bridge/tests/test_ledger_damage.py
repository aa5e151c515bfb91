"""ledger.json replaced or cut while the bridge was stopped (real files)."""

from __future__ import annotations

import json

import pytest

from station_bridge.ledger import Ledger, read_latest
from station_bridge.metrics import Metrics


def saved_ledger(tmp_path):
    metrics = Metrics()
    metrics.inc("bridge_accepted_points_total", 100, destination="local")
    metrics.inc("bridge_written_points_total", 100, destination="local")
    ledger = Ledger(tmp_path / "ledger.json", metrics)
    assert ledger.save(sync=True)
    return ledger.path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "nul", "wrong_shape", "wrong_counters"])
def test_an_unreadable_ledger_is_kept_aside_and_the_reset_is_counted(tmp_path, damage):
    path = saved_ledger(tmp_path)
    raw = path.read_bytes()
    damaged = {
        "garbage": b"\xde\xad{{ not json", "truncated": raw[:len(raw) // 2], "empty": b"", "nul": b"\0" * 64,
        "wrong_shape": b"[1, 2, 3]",
        "wrong_counters": json.dumps({"version": 1, "seq": 9, "counters": {"x": [[1]]}}).encode(),
    }[damage]
    path.write_bytes(damaged)
    metrics = Metrics()
    ledger = Ledger(path, metrics)
    assert ledger.load() is False
    kept = list(tmp_path.glob("ledger.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    assert metrics.get("bridge_ledger_resets_total") == 1
    assert metrics.get("bridge_accepted_points_total", destination="local") == 0  # nothing half-restored
    assert ledger.save(sync=True)
    again = Metrics()
    assert Ledger(path, again).load() is True  # the reset is carried on
    assert again.get("bridge_ledger_resets_total") == 1
    assert read_latest(path) is not None


def test_no_ledger_at_all_is_a_first_start_not_a_reset(tmp_path):
    metrics = Metrics()
    assert Ledger(tmp_path / "ledger.json", metrics).load() is False
    assert metrics.get("bridge_ledger_resets_total") == 0
    assert not list(tmp_path.glob("*.unreadable-*"))


def _counted(value: str) -> str:
    return '{"version": 1, "seq": 1, "counters": {"bridge_written_points_total": [[[["destination", "local"]], ' \
        + value + "]]}}"


# Valid JSON whose values are not what save() writes (a hand edit, a bit flip that left valid JSON,
# a generated hostile document): a non-integer seq stopped every start with a traceback (the
# bridge never came up); NaN, infinity, a negative, a string or a boolean count was restored and
# broke the equations for good; a nesting beyond Python's recursion limit raised RecursionError.
HOSTILE = {
    "seq_string": '{"version": 1, "seq": "x", "counters": {}}',
    "seq_list": '{"version": 1, "seq": [1], "counters": {}}',
    "seq_null": '{"version": 1, "seq": null, "counters": {}}',
    "seq_infinity": '{"version": 1, "seq": Infinity, "counters": {}}',
    "seq_negative": '{"version": 1, "seq": -3, "counters": {}}',
    "count_nan": _counted("NaN"),
    "count_infinity": _counted("1e400"),
    "count_negative": _counted("-5"),
    "count_string": _counted('"nan"'),
    "count_bool": _counted("true"),
    "label_triple": '{"version": 1, "seq": 1, "counters": {"c_total": [[[["a", "b", "c"]], 1]]}}',
    "label_number": '{"version": 1, "seq": 1, "counters": {"c_total": [[[["a", 5]], 1]]}}',
    "counters_list": '{"version": 1, "seq": 1, "counters": []}',
    "deep": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("damage", sorted(HOSTILE))
def test_a_ledger_of_valid_json_but_no_counters_is_unreadable_not_a_crash(tmp_path, damage):
    path = tmp_path / "ledger.json"
    path.write_text(HOSTILE[damage])
    metrics = Metrics()
    assert Ledger(path, metrics).load() is False
    assert len(list(tmp_path.glob("ledger.json.unreadable-*"))) == 1
    assert metrics.get("bridge_ledger_resets_total") == 1
    assert metrics.get("bridge_written_points_total", destination="local") == 0


def test_a_spare_still_wins_over_a_hostile_ledger(tmp_path):
    path = saved_ledger(tmp_path)
    good = path.read_bytes()
    (tmp_path / "ledger.json.spare").write_bytes(good)
    path.write_text(HOSTILE["seq_string"])
    metrics = Metrics()
    assert Ledger(path, metrics).load() is True
    assert metrics.get("bridge_written_points_total", destination="local") == 100
