"""Every count and size of the configuration is bounded at load (config._Reader): before, huge
integers and negative sizes passed `check-config` and failed only at run start (rcvhwm 2^32:
libzmq's setsockopt overflowed; max_frame_bytes 2^60, budget_bytes 2^70: OverflowError) or meant
nonsense (journal.max_bytes -1, min_free_bytes -1)."""

from __future__ import annotations

import copy

import pytest

from station_bridge import config as cfg

BASE = {
    "subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:5999"], "topics": ["t"], "framing": "msgpack",
                       "mapping": {"measurement": "m", "fields": {"v": "float"}}}],
    "destinations": [{"name": "local", "url": "http://127.0.0.1:8086", "database": "db"}],
}


def _with(section: str, key: str, value: object) -> dict:
    data = copy.deepcopy(BASE)
    target = data[section][0] if isinstance(data.get(section), list) else data.setdefault(section, {})
    target[key] = value
    return data


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("subscriptions", "rcvhwm", 2**32, "rcvhwm: must be at most 2,147,483,647"),
    ("subscriptions", "rcvhwm", 2**31, "rcvhwm: must be at most 2,147,483,647"),
    ("subscriptions", "max_frame_bytes", 2**60, "max_frame_bytes: must be at most 1024TiB"),
    ("subscriptions", "message_bytes", 2**60, "message_bytes: must be at most 1024TiB"),
    ("subscriptions", "message_bytes", -1, "message_bytes: must not be negative"),
    ("uniqueness", "window", 2**63, "uniqueness.window: must be at most 2,147,483,647"),
    ("uniqueness", "max_series", 2**63, "uniqueness.max_series: must be at most 2,147,483,647"),
    ("memory", "budget_bytes", 2**70, "memory.budget_bytes: must be at most 1024TiB"),
    ("memory", "budget_bytes", "2000000TiB", "memory.budget_bytes: must be at most 1024TiB"),
    ("memory", "budget_bytes", -5, "memory.budget_bytes: must not be negative"),
    ("journal", "max_bytes", -1, "journal.max_bytes: must not be negative"),
    ("journal", "min_free_bytes", -1, "journal.min_free_bytes: must not be negative"),
    ("journal", "max_bytes", 2**70, "journal.max_bytes: must be at most 1024TiB"),
    ("dead_letter", "max_bytes", -1, "dead_letter.max_bytes: must not be negative"),
    ("destinations", "batch_size", 2**40, "batch_size: must be at most 2,147,483,647"),
    ("destinations", "queue_max_points", 2**63, "queue_max_points: must be at most 2,147,483,647"),
    ("destinations", "queue_max_bytes", -1, "queue_max_bytes: must not be negative"),
    ("destinations", "max_bytes_per_second", 2**60, "max_bytes_per_second: must be at most 1024TiB"),
])
def test_huge_counts_and_negative_or_huge_sizes_are_refused_at_load_with_the_key(section, key, value, message):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(_with(section, key, value))
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("subscriptions", "rcvhwm", 2**31 - 1),
    ("memory", "budget_bytes", "1024TiB"),
    ("memory", "budget_bytes", "4GiB"),
    ("journal", "max_bytes", 0),
    ("journal", "min_free_bytes", 0),
    ("destinations", "queue_max_points", 2_000_000_000),
])
def test_the_largest_and_smallest_sensible_values_still_load(section, key, value):
    cfg.parse(_with(section, key, value))


def test_a_derived_rcvhwm_never_exceeds_what_libzmq_takes():
    """The largest budget and the smallest messages: the derived queue is capped at a C int."""
    data = _with("memory", "budget_bytes", "1024TiB")
    data["subscriptions"][0]["message_bytes"] = 1
    config = cfg.parse(data)
    assert config.rcvhwm(config.subscriptions[0], config.budget()) == 2**31 - 1
