"""The compiled hot path (optional): receive, decode, map and format a burst of flat records in C.

`_fastpath` (a C extension against Python's stable ABI, built into the station wheel when a
compiler is there) does for the common shape exactly what the mapping's compiled Python path
does, and nothing else:
- framings `msgpack` and `json` ([topic, flat map]), `text_json` (`topic {flat object}`) and
  `text_delimited` (`topic v1<DELIM>v2...`); JSON strings with escapes go to Python;
- a fixed measurement, configured and static tags, declared fields, an epoch or `auto` time;
- `each` (msgpack, json, text_json): one point per element the each path reaches, in the rows'
  order of paths.compile_paths (`PathSet.rows`), captured keys and list indexes as tags, `$` paths
  read once from the record, every row formatted before any time is claimed (Mapper._map_rows);
  the each path is handed to C as steps (`_each_steps`), every other path as its steps from the
  record or, with `(None, ...)`, from the element (`key_of` in `_plan_arguments`): one
  description of a path for C; limits (MAX_EACH steps, MAX_CAPTURES, MAX_SLOTS) are named by
  `not_covered` / `_plan_checks` at plan time;
- the mapper's own uniqueness state, updated by the same rule as its compiled path;
- one bytes chunk per burst, lines in message order.
The first message of a burst it is not sure about (a type, an escape, a range, a framing, an
unknown shape) ends the C part of the burst and is handed back untouched: the Python path maps
it or names its reason, then C goes on after it. Order, counts, uniqueness and the cache's
newest-per-series are therefore those of the Python path; tests/test_fastpath.py checks that
on generated hostile records (the same line, or handed back: never a different line).

Threads: each batch is received and formatted without the GIL (`_fastpath.c`, "Two phases"), so
several subscriptions, each received by its own thread, run in parallel; a plan belongs to one
thread at a time (a second thread's call raises RuntimeError instead of sharing its buffers).

Receiving: libzmq is not linked. The extension calls the libzmq that pyzmq has loaded (resolved
through pyzmq's own extension module, its ABI checked: `_bind_libzmq`) on pyzmq's own socket (`Socket.underlying`):
up to a burst of messages per call, with no Python object per message. Without the extension,
or without a usable libzmq, or with STATION_BRIDGE_PURE=1 in the environment,
`Accelerator.for_mapper` returns None with the reason and the bridge runs the pure Python path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_codes
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from .lineproto import LineError
from .mapping import MapError
from .paths import EachItem, EachKey, Index, Key, PathError

PURE_ON_PURPOSE = "STATION_BRIDGE_PURE=1 in the environment"
if os.environ.get("STATION_BRIDGE_PURE") == "1":  # as setup.py: pure Python on purpose (tests, bisecting)
    _fastpath = None
    _IMPORT_ERROR = PURE_ON_PURPOSE
else:
    try:
        from . import _fastpath  # type: ignore[attr-defined]
    except ImportError as exc:  # no compiler where the wheel was built, or a foreign platform
        _fastpath = None
        _IMPORT_ERROR = f"the compiled extension is not installed ({exc})"
    else:
        _IMPORT_ERROR = ""

_UNITS = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000, "epoch_ns": 1, "auto": 0}
_TEXT_TIMES = ("rfc3339", "naive")  # date strings: C calls the mapper's own parser
_KINDS = {"float": 0, "integer": 1, "string": 2, "boolean": 3}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# What the Python path gets for a message handed back: (frames, error). `error` is the exception
# the mapper's uniqueness raised for it (the message is refused with that reason), else None. It
# returns the message's line, or (each) a list of its lines, or None (refused, counted).
Slow = Callable[[list[bytes], BaseException | None], bytes | list[bytes] | None]


def extension_shipped() -> bool:
    """Whether the installed package carries the compiled extension's file (a wheel built with a
    compiler), whether or not it imports here; a pure wheel (STATION_BRIDGE_PURE=1) has none."""
    package = os.path.dirname(os.path.abspath(__file__))
    names = os.listdir(package)
    return any(name.startswith("_fastpath.") and name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
               for name in names)


def unavailable() -> str:
    """Why the compiled path cannot run here ("" when it can)."""
    if _fastpath is None:
        return _IMPORT_ERROR
    return _bind_libzmq()


_bound: str | None = None
log = logging.getLogger("station_bridge.fastpath")
_MSG_FUNCTIONS = ("zmq_msg_init", "zmq_msg_recv", "zmq_msg_data", "zmq_msg_size", "zmq_msg_more",
                  "zmq_msg_close", "zmq_errno")
LIBZMQ_MAJOR = 4  # libzmq 4.x (soname libzmq.so.5); the size of its zmq_msg_t is probed (_abi_problem)


def _bind_libzmq() -> str:
    """Hands the extension the addresses of the zmq_msg_* functions pyzmq itself calls, once.

    They are resolved through pyzmq's own extension module (the shared object pyzmq loaded:
    `zmq.backend.cython._zmq` in pyzmq 27, linked against the libzmq bundled in `pyzmq.libs`):
    dlopen of that path with RTLD_NOLOAD returns the loaded object, never a second copy, and
    dlsym on it searches that object and the libraries it was linked with, so the functions
    are those of the libzmq pyzmq's sockets live in. Before use, the ABI is checked (`_abi_problem`).
    Any problem: the reason is returned (and logged, once) and every subscription runs Python.
    """
    global _bound
    if _bound is None:
        _bound = _bind()
        if _bound:
            log.warning("compiled path off: libzmq not usable from C", extra={"why": _bound})
    return _bound


def pyzmq_extension() -> str:
    """The file of the compiled module pyzmq's sockets come from ("" when there is none)."""
    import zmq

    for cls in zmq.Socket.__mro__:  # zmq.sugar.Socket derives from the backend's Socket
        module = sys.modules.get(cls.__module__)
        path = getattr(module, "__file__", None) or ""
        if path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            return path
    return ""


def _bind() -> str:
    import zmq

    zmq.Context.instance()  # pyzmq's backend (and with it its libzmq) is loaded
    path = pyzmq_extension()
    if not path:
        return f"pyzmq {zmq.pyzmq_version()} has no compiled backend module (cffi or pure?)"
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the loaded one, never a second copy
        functions = [getattr(lib, name) for name in _MSG_FUNCTIONS]
        problem = _abi_problem(lib, _fastpath.MSG_T_SIZE)
    except (OSError, AttributeError) as exc:
        return f"cannot resolve libzmq through {path}: {exc}"
    if problem:
        return f"libzmq of {path}: {problem}"
    _fastpath.bind(*(ctypes.cast(f, ctypes.c_void_p).value for f in functions))
    return ""


def _abi_problem(lib: ctypes.CDLL, msg_size: int) -> str:
    """Why the libzmq behind `lib` does not match the ABI the extension was compiled for ("" if it
    does): its major version must be LIBZMQ_MAJOR and equal pyzmq's, and zmq_msg_t must fit in
    `msg_size` bytes (the extension's sizeof(zmq_msg_t), 64): zmq_msg_init_size, for an inline
    and an allocated message, must write nothing past it and give back the size it was told."""
    import zmq

    major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.zmq_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    found = (major.value, minor.value, patch.value)
    if found != zmq.zmq_version_info():
        return f"libzmq {'.'.join(map(str, found))}, but pyzmq reports {zmq.zmq_version()}"
    if major.value != LIBZMQ_MAJOR or minor.value < 1:
        return f"libzmq {'.'.join(map(str, found))}: the extension is built for libzmq {LIBZMQ_MAJOR}.1 or later"
    init_size, size, close = lib.zmq_msg_init_size, lib.zmq_msg_size, lib.zmq_msg_close
    init_size.argtypes, init_size.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_int
    size.argtypes, size.restype = [ctypes.c_void_p], ctypes.c_size_t
    close.argtypes, close.restype = [ctypes.c_void_p], ctypes.c_int
    guard = 256
    for length in (8, 1000):  # an inline (very small) message and an allocated one
        buffer = (ctypes.c_ubyte * (msg_size + guard))(*([0xA5] * (msg_size + guard)))
        if init_size(buffer, length) != 0:
            return f"zmq_msg_init_size({length}) failed"
        written = [i for i in range(msg_size, msg_size + guard) if buffer[i] != 0xA5]
        got = size(buffer)
        close(buffer)
        if written:
            return f"zmq_msg_t is larger than the {msg_size} bytes the extension was built with"
        if got != length:
            return f"zmq_msg_size gave {got} for a message of {length} bytes"
    return ""


@dataclass(slots=True)
class Burst:
    data: bytes  # every line of the burst, each ending in a newline, in message order
    lines: int  # how many lines (points) data holds
    received: int  # messages taken off the socket (each is mapped or handed to `slow`)
    compiled: int  # of them, mapped in C
    errno: int = 0  # a libzmq error other than EAGAIN that ended the burst (0: none)
    # Messages taken whose batch's commit raised (a defect, or no memory): neither in `data` nor
    # settled by `slow`, so not counted anywhere else; the caller counts them (`unexpected`).
    lost: int = 0
    error: BaseException | None = None  # what the commit raised (the burst ends with it)
    # The messages' own bytes as received (their frames), and the largest message's: with `each`
    # the lines (`data`) are many times more (Subscription.observe_size watches these).
    size: int = 0
    largest: int = 0


class Accelerator:
    """A subscription's compiled plan (see the module docstring)."""

    def __init__(self, plan: object) -> None:
        self.plan = plan

    @classmethod
    def for_mapper(cls, mapper: object, spec: object) -> tuple[Accelerator | None, str]:
        """(accelerator, "") for a mapper whose shape the C path covers, else (None, why not)."""
        why = unavailable()
        if why:
            return None, why
        try:
            kwargs = _plan_arguments(mapper, spec)
        except _NotCovered as exc:
            return None, str(exc)
        return cls(_fastpath.Plan(**kwargs)), ""

    @staticmethod
    def covers(mapper: object, spec: object) -> str:
        """Empty when the C path covers this mapper's shape, else why not (libzmq is not touched)."""
        if _fastpath is None:
            return _IMPORT_ERROR
        try:
            _plan_arguments(mapper, spec)
        except _NotCovered as exc:
            return str(exc)
        return ""

    def receive(self, socket: object, limit: int, slow: Slow, newest: dict | None = None,
                max_bytes: int = 0, lock: AbstractContextManager | None = None) -> Burst:
        """Up to `limit` messages from a pyzmq socket, without blocking, and (`max_bytes` > 0)
        until the burst's lines hold about `max_bytes`. `newest` (series -> (time, {field:
        value})) is updated as the Python path does it, for the cache.

        Each batch (at most 256 messages) is received and formatted in C without the GIL
        (`stage_zmq`), then committed with it (`commit`: the uniqueness claims, the receive clock,
        the newest points, every message handed back given to `slow` at its place): held under
        `lock`, when given (the bridge's state shared by several receive threads). The batches'
        lines stay in the plan's output one after the other (`commit(..., keep=True)`) and are
        taken as one bytes object at the end (`take`).

        Every message taken is accounted for: in `data`, settled by `slow` (it returned None: the
        caller counted it rejected), or in `lost`: a commit that raises (a defect in `slow`, no
        memory in C) discards its whole batch, lines and hand-backs, and ends the burst; the
        batches before it are kept."""
        stage, commit, take = self.plan.stage_zmq, self.plan.commit, self.plan.take  # type: ignore[attr-defined]
        sizes = self.plan.received_bytes  # type: ignore[attr-defined]
        address = socket.underlying  # type: ignore[attr-defined]
        taken_bytes = largest = 0
        held = lock if lock is not None else nullcontext()
        lines = received = compiled = 0
        error_no = 0
        size = 0
        settled = [0]  # messages of the current batch `slow` settled (returned None: counted by the caller)

        def settling(frames: list[bytes], error: BaseException | None) -> bytes | list[bytes] | None:
            line = slow(frames, error)
            if line is None:
                settled[0] += 1
            return line

        try:
            while received < limit and (max_bytes <= 0 or size < max_bytes):
                taken, error_no = stage(address, limit - received, max(1, max_bytes - size) if max_bytes > 0 else 0)
                got, big = sizes()
                taken_bytes += got
                largest = max(largest, big)
                settled[0] = 0
                try:
                    with held:  # the batch's lines stay in the plan after the batches before (take)
                        size, n, c = commit(newest, settling, True)
                except Exception as exc:  # the batch is gone (C released it): its messages counted, not lost silently
                    received += taken
                    lost = taken - settled[0]
                    return Burst(take(), lines, received, compiled, 0, lost, exc, taken_bytes, largest)
                received += taken
                lines += n
                compiled += c
                if error_no:
                    break
        except BaseException:  # what escapes (a stage's error, an exit): the lines kept go with it, as before
            with contextlib.suppress(Exception):
                take()
            raise
        if error_no in (errno_codes.EAGAIN, errno_codes.EINTR):
            error_no = 0
        return Burst(take(), lines, received, compiled, error_no, size=taken_bytes, largest=largest)

    def map(self, messages: list[list[bytes]], slow: Slow, newest: dict | None = None) -> Burst:
        """The same for messages already received (lists of frames), formatted without the GIL."""
        stage, commit = self.plan.stage_frames, self.plan.commit  # type: ignore[attr-defined]
        parts: list[bytes] = []
        lines = compiled = 0
        start = 0
        while start < len(messages):
            start += stage(messages, start)
            data, n, c = commit(newest, slow)
            lines += n
            compiled += c
            if data:
                parts.append(data)
        return Burst(b"".join(parts), lines, len(messages), compiled)

    def stats(self) -> dict[str, int]:
        return self.plan.stats()  # type: ignore[attr-defined]


class _NotCovered(Exception):
    pass


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _NotCovered("a configured name is not UTF-8") from exc


def python_reason(mode: str, spec: object, mapper: object, here: bool = True) -> str:
    """Why a subscription runs the Python path ("" when it runs compiled), decided as the bridge
    decides it at start (pipeline.Subscription.accelerate): `fast_path: off`, ignore rules,
    binning, a mapping form C does not cover, then (`here`) the extension or libzmq missing on
    this host. check-config and validate name it per subscription."""
    if mode == "off":
        return "fast_path: off"
    if spec.ignore:  # type: ignore[attr-defined]
        return "ignore rules run on the Python path"
    if spec.binning is not None:  # type: ignore[attr-defined]
        return "binning runs on the Python path"
    why = not_covered(mapper, spec)
    if not why:
        try:
            _plan_checks(mapper, spec)
        except _NotCovered as exc:
            why = str(exc)
    if not why and here:
        why = _IMPORT_ERROR if _fastpath is None else ""
    return why


def not_covered(mapper: object, spec: object) -> str:
    """Why the C plan cannot stand in for this mapper's mapping ("" when it can), whether or not
    the extension is built here (check-config and validate name it per subscription)."""
    mapping = spec.mapping  # type: ignore[attr-defined]
    if getattr(mapper, "_fixed", None) is None:
        return f"the measurement comes from data (measurement_from: {mapping.measurement_from})"
    if spec.framing not in ("msgpack", "json", "text_json", "text_delimited"):  # type: ignore[attr-defined]
        return f"framing {spec.framing} is not on the compiled path"  # type: ignore[attr-defined]
    each = mapping.each
    if each is not None:
        if spec.framing == "text_delimited":  # type: ignore[attr-defined]
            return "each with framing text_delimited (its values are strings)"
        if len(each.steps) > MAX_EACH:
            return f"an each path of more than {MAX_EACH} steps"
        if len(each.captures) > MAX_CAPTURES:
            return f"an each path with more than {MAX_CAPTURES} captures"
        if getattr(mapper, "unique", None) is None:
            return "each needs the mapper's uniqueness window"
    nested = {source.split(".", 1)[-1]: path for source, path in mapping.sources().items() if path.flat_key is None}
    if nested and spec.framing == "text_delimited":  # type: ignore[attr-defined]
        return "paths into nested values with framing text_delimited (its values are strings)"
    # `.` with each is the element itself (a scalar element's value); `$` the whole record
    whole = [name for name, path in nested.items() if not path.steps and (each is None or path.root)]
    if whole:
        return f"a path to the whole record ({', '.join(whole)})"
    if spec.framing != "msgpack" and any(  # type: ignore[attr-defined]
            type(step) is Index and step.index < 0 for path in nested.values() for step in path.steps):
        return "negative list indexes in JSON (msgpack only)"
    if mapping.time.value_path is not None and mapping.time.format not in (*_UNITS, *_TEXT_TIMES):
        return f"time format {mapping.time.format} is not on the compiled path"
    if len(mapping.derived_tags) > MAX_DERIVED:
        return f"more than {MAX_DERIVED} derived_tags"
    if any(len(d.regex.groupindex) > MAX_GROUPS for d in mapping.derived_tags) or len(mapping.topic_tags) > MAX_GROUPS:
        return f"a derived_tags or topic regex with more than {MAX_GROUPS} groups"
    if (mapping.derived_tags or mapping.topic_tags) and getattr(mapper, "unique", None) is None:
        return "derived or topic tags need the mapper's uniqueness window"
    return ""


MAX_DERIVED, MAX_GROUPS = 8, 16  # as _fastpath.c
MAX_EACH, MAX_CAPTURES, MAX_SLOTS, MAX_NODES = 8, 8, 32, 96  # as _fastpath.c
_E_KEY, _E_INDEX, _E_ITEMS, _E_KEYS = 0, 1, 2, 3  # each steps, as _fastpath.c


def _each_steps(each: object) -> list[tuple]:
    """The each path's steps as the C plan reads them: (kind, key or index, capture number or -1,
    alternatives or None); captures numbered in path order (Path.captures' order)."""
    out: list[tuple] = []
    captures = 0
    for step in each.steps:  # type: ignore[attr-defined]
        if type(step) is Key:
            out.append((_E_KEY, _utf8(step.key), -1, None))
        elif type(step) is Index:
            out.append((_E_INDEX, step.index, -1, None))
        else:
            capture = -1
            if step.name is not None:
                capture, captures = captures, captures + 1
            if type(step) is EachItem:
                out.append((_E_ITEMS, None, capture, None))
            else:
                assert type(step) is EachKey
                only = tuple(_utf8(k) for k in step.only) if step.only is not None else None
                out.append((_E_KEYS, None, capture, only))
    return out


def _tag_rule(mapper: object, key: str, ekey: str) -> bytes | None:
    """The part a configured tag's default makes (None: no default, or one it cannot write)."""
    default = getattr(mapper, "_defaults", {}).get(key, "")
    if not default:
        return None
    try:
        return f",{ekey}={mapper._escaped_tag(default)}".encode()  # type: ignore[attr-defined]
    except (LineError, MapError, UnicodeEncodeError):
        return None  # the Python path refuses it


def _parts(pairs: list, names: list[str]) -> tuple[bytes, ...] | None:
    """The parts (`,k=v`, or b"": left out) of a rule's tag pairs, in the order of `names`."""
    made = {key: part for key, _, part in pairs}
    try:
        return tuple(made.get(name, "").encode() for name in names)
    except UnicodeEncodeError:  # a lone surrogate: the Python path refuses the line
        return None


def _derived_rule(mapper: object, regex: object, groups: list) -> Callable[[str | None], tuple | None]:
    """rule(text) -> the parts the mapper's own rule (Mapper._derived_pairs) makes of a derived
    source's text (None: absent), one per group; None when it refuses (the message goes back)."""
    derive = mapper._derived_pairs  # type: ignore[attr-defined]
    names = [g for g, _ in groups]

    def rule(text: str | None) -> tuple | None:
        try:
            return _parts(derive(regex, groups, text), names)
        except (MapError, LineError):
            return None
    return rule


def _topic_rule(mapper: object, names: list[str]) -> Callable[[str], tuple | None]:
    """rule(topic) -> the parts of the topic's tags (TopicCapture, then Mapper._tag_pair: the
    Python path's own code), one per topic tag name; None when it refuses the topic."""
    capture, pair = mapper._topic, mapper._tag_pair  # type: ignore[attr-defined]
    ekeys = dict(mapper._tags)  # type: ignore[attr-defined]

    def rule(topic: str) -> tuple | None:
        try:
            found = dict(capture(topic))
            pairs = [pair(name, ekeys[name], found.get(name)) for name in names]
        except (PathError, MapError, LineError):
            return None
        return _parts([p for p in pairs if p is not None], names)
    return rule


def _plan_arguments(mapper: object, spec: object) -> dict:
    """The C plan of what the mapper's Python path does (the same attributes `_compile` and
    `Mapper._tag_pairs` read). Derived and topic tags are made by the mapper's own rules
    (`_derived_rule`, `_topic_rule`), called once per distinct text and cached in C."""
    m = mapper
    mapping = spec.mapping  # type: ignore[attr-defined]
    why = not_covered(m, spec)
    if why:
        raise _NotCovered(why)
    _plan_checks(m, spec)
    framing = spec.framing  # type: ignore[attr-defined]
    codes = {"msgpack": _fastpath.MSGPACK, "json": _fastpath.JSON, "text_json": _fastpath.TEXT_JSON,
             "text_delimited": _fastpath.DELIMITED}
    time_format = mapping.time.format
    sources = mapping.sources()

    each = mapping.each
    nested = each is not None or any(p.flat_key is None for p in sources.values())
    captures = list(mapping.captures)

    def key_of(source: str) -> bytes | tuple:
        """The record key of a source, or its path's steps; with each, (None, *steps) for a path
        read from the element (every path but a `$` one): the one description C reads."""
        path = sources[source]
        if path.flat_key is not None and each is None:
            return _utf8(path.flat_key)
        steps = tuple(_utf8(step.key) if type(step) is Key else step.index for step in path.steps)  # type: ignore[union-attr]
        return steps if each is None or path.root else (None, *steps)

    fields = [(key_of(f"mapping.fields.{key}"), _utf8(f",{ekey}="), _KINDS[mapping.fields[key]], key)
              for key, ekey, _ in m._fields]
    unique = getattr(m, "unique", None)
    derived = None
    topic_rule, topic_names = None, list(mapping.topic_tags)
    if unique is not None:  # a uniqueness window shared by the bridge (lineproto's series key order)
        # Configured, derived and static tags interleaved by key, in Mapper._tag_pairs' order on a
        # tie (configured, derived, static: its sort is stable). (kind, key, part, optional,
        # default, source, group); a required tag C cannot write goes back to Python, which
        # refuses it missing_field.
        named: list[tuple[str, tuple]] = []
        for key, ekey in m._tags:
            if key in topic_names:
                named.append((key, (_TOPIC, None, b"", True, None, 0, topic_names.index(key))))
            elif key in captures:  # a captured key, a record tag of the capture's text
                named.append((key, (_CAPTURE, None, _utf8(f",{ekey}="), key in m.optional_tags,
                                    _tag_rule(m, key, ekey), 0, captures.index(key))))
            else:
                named.append((key, (_RECORD, key_of(f"mapping.tags.{key}"), _utf8(f",{ekey}="),
                                    key in m.optional_tags, _tag_rule(m, key, ekey), 0, 0)))
        derived = []
        for i, (_, regex, groups) in enumerate(m._derived):
            derived.append((key_of(f"mapping.derived_tags[{i}]"), _derived_rule(m, regex, groups), len(groups)))
            named += [(group, (_DERIVED, None, b"", True, None, i, g)) for g, (group, _) in enumerate(groups)]
        named += [(key, (_STATIC, None, _utf8(part), True, None, 0, 0)) for key, part in m._static]
        tags = [tag for _, tag in sorted(named, key=lambda pair: pair[0])]
        if topic_names:
            topic_rule = _topic_rule(m, topic_names)
        from .lineproto import MAX_TIME, MIN_TIME
        uniq = {"uniq_mode": _fastpath.WINDOW, "uniq_state": unique.current, "uniq_claim": unique.claim,
                "tmin": MIN_TIME, "tmax": MAX_TIME, "trim": unique.trim, "window": unique.window}
        key_check = m._key_check_chars
    else:  # the last time per series, static tags after the record's
        tags = [(_RECORD, _utf8(key), _utf8(f",{ekey}="), key in getattr(m, "optional_tags", ()), None, 0, 0)
                for key, ekey in m._tags]
        if m._static:
            tags.append((_STATIC, None, _utf8(m._static), True, None, 0, 0))
        uniq = {"uniq_mode": _fastpath.LAST, "uniq_state": m._last, "uniq_claim": None,
                "tmin": INT64_MIN, "tmax": INT64_MAX, "trim": 0, "window": 0}
        key_check = 2**62
    order = [_utf8(name) for name in spec.field_order] if framing == "text_delimited" else None  # type: ignore[attr-defined]
    delimiter = _utf8(spec.delimiter) if framing == "text_delimited" else None  # type: ignore[attr-defined]
    return {
        "framing": codes[framing],
        "max_frame": spec.max_frame_bytes,  # type: ignore[attr-defined]
        "measurement": _utf8(m._fixed), "tags": tags, "fields": fields,
        # no time field: the mapper's receive clock; a date string: the mapper's parser
        "time_key": key_of("mapping.time") if "mapping.time" in sources else None,
        "time_unit": _UNITS.get(time_format, -1), "time_parse": getattr(m, "_parse_time", None),
        "clock": getattr(m, "_clock", None) if "mapping.time" not in sources else None,
        "time_rule": _fastpath.EXACT if _exact_times(m) else _fastpath.PRODUCT,
        "key_check": key_check, **uniq, "field_order": order, "delimiter": delimiter,
        # the window around the receive time (Mapper.check_window): C hands back what is outside
        "ahead": _window_ns(getattr(m, "ahead_ns", None)), "behind": _window_ns(getattr(m, "behind_ns", None)),
        "derived": derived, "topic_rule": topic_rule, "topic_groups": len(topic_names), "nested": nested,
        **({"each": _each_steps(each), "max_points": mapping.max_points, "max_bytes": mapping.max_bytes}
           if each is not None else {}),
    }


_RECORD, _STATIC, _DERIVED, _TOPIC, _CAPTURE = 0, 1, 2, 3, 4  # tag kinds, as _fastpath.c


def _plan_checks(mapper: object, spec: object) -> None:
    """The rest of what the plan needs (raises _NotCovered): names C can hold, a delimiter."""
    m, mapping = mapper, spec.mapping  # type: ignore[attr-defined]
    time_format = mapping.time.format
    if time_format in _TEXT_TIMES and getattr(m, "_parse_time", None) is None:
        raise _NotCovered("date strings need the mapper's parser")
    if (spec.framing == "text_delimited" and time_format in _UNITS and time_format != "auto"  # type: ignore[attr-defined]
            and not _exact_times(m)):
        raise _NotCovered("epoch times from text need exact times")
    if spec.framing == "text_delimited" and spec.delimiter == "":  # type: ignore[attr-defined]
        raise _NotCovered("empty delimiter")
    each = mapping.each
    # the C plan's slots: one per distinct path (with each, per trie: the record's `$` paths and
    # the element's), one per capture; its trie nodes: a root per trie, one per distinct step
    paths = {(path.root or each is None, path.steps) for path in mapping.sources().values()}
    names = [m._fixed, *(k for k, _ in getattr(m, "_tags", ())), *mapping.fields,
             *(step.key for _, steps in paths for step in steps if type(step) is Key)]
    if each is not None:
        names += [step.key for step in each.steps if type(step) is Key]
        names += [k for step in each.steps if type(step) is EachKey for k in step.only or ()]
    for name in names:
        _utf8(name or "")
    static = getattr(m, "_static", ())
    tags = len(getattr(m, "_tags", ())) + (len(static) if isinstance(static, list) else 1)
    tags += sum(len(d.regex.groupindex) for d in mapping.derived_tags)
    slots = len(paths) + len(mapping.captures)
    if slots > MAX_SLOTS or len(mapping.fields) > 32 or tags > 32:
        raise _NotCovered("more than 32 keys, fields or tags")
    roots = 2 if each is not None else 1
    if sum(len(steps) for _, steps in paths) + roots > MAX_NODES:  # _fastpath.c MAX_NODES
        raise _NotCovered(f"more than {MAX_NODES - roots} path steps")


def _window_ns(ns: int | None) -> int:
    return -1 if ns is None else min(ns, 2**63 - 1)


def _exact_times(mapper: object) -> bool:
    """Whether the mapping converts float times exactly (timestamps.float_seconds_to_ns in its
    compiled path) or as round(x * unit) of the float product (before exact times)."""
    if getattr(mapper, "exact_times", False):  # the mapper says so (mapping.Mapper.exact_times)
        return True
    import importlib
    module = importlib.import_module(type(mapper).__module__)
    return hasattr(module, "float_seconds_to_ns")
