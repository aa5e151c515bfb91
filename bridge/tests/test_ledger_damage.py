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
