"""On-disk state of one destination: the journal, the write-ahead intake log, dead letters.

Points travel as `Chunk`s: line protocol bytes (each line ends in a newline; a string field may
hold newlines too, so lines are found with `lineproto.line_ends`), their count and the intake
sequence number of their first line, so no stage re-joins or re-splits lines needlessly.

Both files hold framed, checksummed records (`records.py`: one chunk, one record): a record
that does not verify (torn, zeroed, flipped) is skipped and counted, never sent; a file's points are
what its verified records hold (a segment's name keeps a count for humans, never trusted).

- Ownership: `JournalLock` (an flock on `journal.dir/.lock`) is taken before any file of the
  directory is touched; a second bridge on the same directory is refused, naming the first.
- Journal: segment files (`*.lp`) of batches that could not be written now. Each is written to
  a temporary name, fsynced, renamed, and its directory fsynced, so a crash or a power cut
  leaves whole segments or nothing; deletions are fsynced the same way. Replayed oldest first,
  deleted only after InfluxDB acknowledged every line (a segment delivered in part records its
  progress in `<segment>.done`, so no acknowledged line is sent twice). Damage found at start is
  counted once (`<segment>.counted` remembers it across restarts); a segment that cannot be read
  or no longer verifies while the bridge runs is set aside (renamed `*.damaged`), its remaining
  points reported to `on_loss` (the sink counts them dropped), and delivery goes on. A size cap
  (`journal.max_bytes`) and a free-space reserve (`journal.min_free_bytes`) bound the spool: a
  batch that does not fit is refused and the caller counts the drop (spool_full, disk_full).
- Intake (write-ahead log, `*.wal`): every point a destination accepts is appended before it
  is queued in memory, one write(2) per burst, no fsync (it survives a killed process, not a
  power cut), and forgotten once settled. Every point gets a sequence number, logged or not:
  a failed append (disk full) settles its own range at once, so the log never waits for it
  and never forgets a point that was logged and is still undelivered. At the next start the
  journal adopts what is left by renaming it (no copy: adoption needs no free space); a torn
  last record is damage like any other. An intake log of the unframed format (a bridge upgraded
  with points on disk) is read once as such, its torn last line cut.
- DeadLetters: append-only JSONL of what was refused for good, capped in size: beyond
  `dead_letter.max_bytes` the file is rotated to `<name>.1` (the previous `.1` is deleted and
  its records counted as discarded).
Nothing here raises into the pipeline on a disk error: writes report failure, the caller counts.

Modules: `chunk` (Chunk), `records` (framing and the verifying reader), `files` (durable writes,
DiskGuard), `lock` (JournalLock), `segments` (Journal), `intake` (Intake), `deadletters`.
"""

from __future__ import annotations

from . import records
from .chunk import Chunk
from .deadletters import DeadLetters
from .files import DiskGuard, disk_reason, durable_write, fsync_dir
from .intake import Intake
from .lock import JournalLock, JournalLocked
from .segments import DAMAGED, DamageTally, Journal, LossHandler, Segment

__all__ = ["DAMAGED", "Chunk", "DamageTally", "DeadLetters", "DiskGuard", "Intake", "Journal", "JournalLock",
           "JournalLocked", "LossHandler", "Segment", "disk_reason", "durable_write", "fsync_dir", "records"]
