"""playbooks/backfill.yml, the operator's request after an outage: raw points that arrived after
their hours were computed (here: written 3 h late, older than the CQ's RESAMPLE FOR, so the live
CQ never sees them) are recomputed into the CQ's target, as the CQ would have computed them.

On the first platform only; one --check run and one real run (about 20 s together).
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import READER, run_playbook

testinfra_hosts = ["ansible://station-stack-influxdb"]
PLAYBOOK = Path(__file__).resolve().parents[3] / "playbooks" / "backfill.yml"
HOUR = 3600 * 10**9
MINUTE = 60 * 10**9
ARGS = ("-e", "backfill_window=4h", "-e", "backfill_hosts=station-stack-influxdb",
        "-e", '{"backfill_cqs": ["tick.ticks_ohlc_1h"]}')


def bars(influx, start: int) -> dict[int, dict]:
    rows = influx.query(f"SELECT open, high, low, close, volume FROM long_term.ticks_ohlc_1h "
                        f"WHERE instrument = 'BACKFILL' AND time >= {start}", auth=READER, db="tick").rows()
    return {row.pop("time"): row for row in rows}


def test_backfill_playbook_recomputes_hours_whose_points_arrived_late(influx):
    now = time.time_ns()
    current = now - now % HOUR
    late = {current - 3 * HOUR: [(2, 1.5, 10), (20, 1.9, 5), (41, 1.2, 7), (59, 1.4, 1)],
            current - 2 * HOUR: [(5, 2.5, 3), (50, 2.0, 4)]}
    lines = [f"ticks,instrument=BACKFILL bid={bid},volume={volume}i {hour + minute * MINUTE}"
             for hour, points in late.items() for minute, bid, volume in points]
    assert influx.write("\n".join(lines)).status == 204
    oldest = current - 3 * HOUR

    checked = run_playbook(PLAYBOOK, "schema_v1.yml", *ARGS, "--check", "--diff")
    assert checked.rc == 0, checked.output.get("stats")
    assert {label for _task, label in checked.changed} == {"tick.ticks_ohlc_1h"}
    assert oldest not in bars(influx, oldest)  # check mode ran nothing (the live CQ covers the last 2 h only)

    applied = run_playbook(PLAYBOOK, "schema_v1.yml", *ARGS)
    assert applied.rc == 0, applied.output.get("stats")
    assert {label for _task, label in applied.changed} == {"tick.ticks_ohlc_1h"}
    want = {hour: {"open": points[0][1], "high": max(p[1] for p in points), "low": min(p[1] for p in points),
                   "close": points[-1][1], "volume": sum(p[2] for p in points)} for hour, points in late.items()}
    assert bars(influx, oldest) == want
