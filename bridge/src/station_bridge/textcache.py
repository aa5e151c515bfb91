"""A cache keyed by texts the feed chooses (tag values, derived-tag sources, topics, measurement
names), bounded by bytes as well as by entries.

The mapping caches what it makes of a text (its escaped form, a topic's tags) because the same
few texts come back in every message. Bounded by count alone, a feed of distinct long texts (a
tag of 500 KB in each message, refused `key_too_long` or not) kept every one: 400 such messages
grew a bridge by 440 MiB and the bounds allowed tens of GiB, beyond any memory budget. Here a
text longer than `MAX_KEY` characters is never kept (computing it again costs no more than the
message's own decoding did), and the entries' sizes are summed: when the next one would pass
`max_bytes` or `max_entries`, the cache starts over (as the compiled path's own text caches do),
so a change of the feed's texts is followed and what one cache holds stays within `max_bytes`
plus one entry.
"""

from __future__ import annotations

import sys
from typing import Generic, TypeVar

V = TypeVar("V")

MAX_KEY = 256  # characters: the compiled path caches texts of at most 256 bytes too
MAX_BYTES = 4 << 20  # per cache (its keys, values and dict entries, as sys.getsizeof counts them)
ENTRY_BYTES = 64  # a dict slot and its index, beyond the key and the value


def _size(value: object) -> int:
    if type(value) is tuple:
        return sys.getsizeof(value) + sum(_size(v) for v in value)
    return sys.getsizeof(value)


class TextCache(dict[str, V], Generic[V]):
    """text -> value (a dict: `get` is dict's own, as fast as before); filled through `put` only."""

    __slots__ = ("bytes", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int = MAX_BYTES) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # what the entries held now take (approximately: sys.getsizeof)

    def put(self, key: str, value: V) -> None:
        if len(key) > MAX_KEY:
            return
        cost = sys.getsizeof(key) + _size(value) + ENTRY_BYTES
        if len(self) >= self.max_entries or self.bytes + cost > self.max_bytes:
            self.clear()  # start over
            self.bytes = 0
        self[key] = value
        self.bytes += cost
