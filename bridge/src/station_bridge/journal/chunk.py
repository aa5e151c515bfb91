"""`Chunk`: line protocol bytes, their line count and the intake sequence number of the first."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from ..lineproto import _simple as simple_lines
from ..lineproto import line_ends, nth_line_end


@dataclass(slots=True)
class Chunk:
    """`count` lines of line protocol, each ending in a newline; `seq` numbers the first one."""

    data: bytes
    count: int
    seq: int = -1
    born: float = field(default_factory=time.time)  # when its oldest point was accepted

    @classmethod
    def of(cls, lines: list[str], seq: int = -1) -> Chunk:
        return cls(("\n".join(lines) + "\n").encode("utf-8") if lines else b"", len(lines), seq)

    @classmethod
    def of_bytes(cls, lines: list[bytes]) -> Chunk:
        """From lines without their newlines."""
        return cls(b"".join(line + b"\n" for line in lines), len(lines))

    def lines(self) -> list[bytes]:
        """Each line without its newline."""
        out, start = [], 0
        for end in self._ends():
            out.append(self.data[start:end - 1])
            start = end
        return out

    def _ends(self, limit: int | None = None) -> list[int]:
        if self.data.count(b"\n") == self.count:  # no newline inside a string: every one ends a line
            ends, pos = [], -1
            for _ in range(self.count if limit is None else min(limit, self.count)):
                pos = self.data.index(b"\n", pos + 1)
                ends.append(pos + 1)
            return ends
        return line_ends(self.data, limit)

    def split(self, count: int) -> tuple[Chunk, Chunk]:
        """The first `count` lines, and the rest."""
        cut = 0
        if 0 < count < self.count and simple_lines(self.data):
            # every newline ends a line: the count-th one, found without an object per line
            with contextlib.suppress(ValueError):  # fewer newlines than lines: cannot be (as below then)
                cut = nth_line_end(self.data, count, self.count)
        if cut:
            head, rest = self.data[:cut], self.data[cut:]
        elif self.data.count(b"\n") == self.count:
            parts = self.data.split(b"\n", count)
            head = b"\n".join(parts[:count]) + b"\n"
            rest = parts[count]
        else:
            cut = line_ends(self.data, count)[-1]
            head, rest = self.data[:cut], self.data[cut:]
        rest_seq = self.seq + count if self.seq >= 0 else -1
        return Chunk(head, count, self.seq, self.born), Chunk(rest, self.count - count, rest_seq, self.born)

    def skip(self, count: int) -> Chunk:
        return self.split(count)[1] if count else self

    @staticmethod
    def join(chunks: list[Chunk]) -> Chunk:
        if len(chunks) == 1:
            return chunks[0]
        return Chunk(b"".join(c.data for c in chunks), sum(c.count for c in chunks), chunks[0].seq,
                     min(c.born for c in chunks))
