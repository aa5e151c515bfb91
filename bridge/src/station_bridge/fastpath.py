"""The compiled hot path (optional): receive, decode, map and format a burst of flat records in C.

`_fastpath` (a C extension against Python's stable ABI, built into the station wheel when a
compiler is there) does for the common shape exactly what the mapping's compiled Python path
does, and nothing else:
- framings `msgpack` and `json` ([topic, flat map]), `text_json` (`topic {flat object}`) and
  `text_delimited` (`topic v1<DELIM>v2...`); JSON strings with escapes go to Python;
- a fixed measurement, configured and static tags, declared fields, an epoch or `auto` time;
- the mapper's own uniqueness state, updated by the same rule as its compiled path;
- one bytes chunk per burst, lines in message order.
The first message of a burst it is not sure about (a type, an escape, a range, a framing, an
unknown shape) ends the C part of the burst and is handed back untouched: the Python path maps
it or names its reason, then C goes on after it. Order, counts, uniqueness and the cache's
newest-per-series are therefore those of the Python path; tests/test_fastpath.py checks that
on generated hostile records (the same line, or handed back: never a different line).

Receiving: libzmq is not linked. The extension calls the libzmq that pyzmq has loaded (resolved
through pyzmq's own extension module, its ABI checked: `_bind_libzmq`) on pyzmq's own socket (`Socket.underlying`):
up to a burst of messages per call, with no Python object per message. Without the extension,
or without a usable libzmq, or with STATION_BRIDGE_PURE=1 in the environment,
`Accelerator.for_mapper` returns None with the reason and the bridge runs the pure Python path.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

if os.environ.get("STATION_BRIDGE_PURE") == "1":  # as setup.py: pure Python on purpose (tests, bisecting)
    _fastpath = None
    _IMPORT_ERROR = "STATION_BRIDGE_PURE=1 in the environment"
else:
    try:
        from . import _fastpath  # type: ignore[attr-defined]
    except ImportError as exc:  # no compiler where the wheel was built, or a foreign platform
        _fastpath = None
        _IMPORT_ERROR = f"the compiled extension is not installed ({exc})"
    else:
        _IMPORT_ERROR = ""

_UNITS = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000, "epoch_ns": 1, "auto": 0}
_KINDS = {"float": 0, "integer": 1, "string": 2, "boolean": 3}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# What the Python path gets for a message handed back: (frames, error). `error` is the exception
# the mapper's uniqueness raised for it (the message is refused with that reason), else None.
Slow = Callable[[list[bytes], BaseException | None], bytes | None]


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
                max_bytes: int = 0) -> Burst:
        """Up to `limit` messages from a pyzmq socket, without blocking, and (`max_bytes` > 0)
        until the burst's lines hold at least `max_bytes` (one message's line may pass it). `newest`
        (series -> (time, {field: value})) is updated as the Python path does it, for the cache."""
        drain = self.plan.drain  # type: ignore[attr-defined]
        address = socket.underlying  # type: ignore[attr-defined]
        parts: list[bytes] = []
        lines = received = compiled = 0
        error_no = 0
        size = 0
        while received < limit and (max_bytes <= 0 or size < max_bytes):
            (data, n, taken, handed, error), error_no = drain(
                address, limit - received, newest, max(1, max_bytes - size) if max_bytes > 0 else 0)
            received += taken
            lines += n
            compiled += n
            if data:
                parts.append(data)
                size += len(data)
            if handed is None:
                break
            line = slow(handed, error)
            if line is not None:
                parts.append(line + b"\n")
                size += len(line) + 1
                lines += 1
        if error_no in (errno_codes.EAGAIN, errno_codes.EINTR):
            error_no = 0
        return Burst(b"".join(parts), lines, received, compiled, error_no)

    def map(self, messages: list[list[bytes]], slow: Slow, newest: dict | None = None) -> Burst:
        """The same for messages already received (lists of frames)."""
        run = self.plan.map  # type: ignore[attr-defined]
        parts: list[bytes] = []
        lines = compiled = 0
        start = 0
        while start < len(messages):
            data, n, start, handed, error = run(messages, start, newest)
            lines += n
            compiled += n
            if data:
                parts.append(data)
            if handed is None:
                break
            line = slow(handed, error)
            if line is not None:
                parts.append(line + b"\n")
                lines += 1
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


def _plan_arguments(mapper: object, spec: object) -> dict:
    """The C plan of what the mapper's compiled Python path does.

    Phase 1 reads the mapper's compiled-path inputs (the same attributes `_compile` reads); the
    integration gives the mapper a method that returns them, next to `_compile`.
    """
    m = mapper
    mapping = spec.mapping  # type: ignore[attr-defined]
    if getattr(m, "_compiled", None) is None:
        raise _NotCovered("the mapping has no compiled path (measurement from data or derived tags)")
    framing = spec.framing  # type: ignore[attr-defined]
    codes = {"msgpack": _fastpath.MSGPACK, "json": _fastpath.JSON, "text_json": _fastpath.TEXT_JSON,
             "text_delimited": _fastpath.DELIMITED}
    if framing not in codes:
        raise _NotCovered(f"framing {framing} is not on the compiled path")
    time_format = mapping.time.format
    if mapping.time.field is None or time_format not in _UNITS:
        raise _NotCovered("receive times and date strings are not on the compiled path")
    if framing == "text_delimited" and time_format != "auto" and not _exact_times(m):
        raise _NotCovered("epoch times from text need exact times")
    fields = [(_utf8(key), _utf8(f",{ekey}="), _KINDS[mapping.fields[key]]) for key, ekey, _ in m._fields]
    unique = getattr(m, "unique", None)
    if unique is not None:  # a uniqueness window shared by the bridge (lineproto's series key order)
        # Configured and static tags interleaved by key, record tags first on a tie (as _compile).
        # (optional: an absent value leaves the tag out; else C hands the message back to Python,
        # which writes the default or refuses it missing_field)
        named = [(key, (_utf8(key), _utf8(f",{ekey}="), key in m.optional_tags)) for key, ekey in m._tags]
        named += [(key, (None, _utf8(part), True)) for key, part in m._static]
        tags = [tag for _, tag in sorted(named, key=lambda pair: pair[0])]
        from .lineproto import MAX_TIME, MIN_TIME
        uniq = {"uniq_mode": _fastpath.WINDOW, "uniq_state": unique.current, "uniq_claim": unique.claim,
                "tmin": MIN_TIME, "tmax": MAX_TIME, "trim": unique.trim, "window": unique.window}
        key_check = m._key_check_chars
    else:  # the last time per series, static tags after the record's
        tags = [(_utf8(key), _utf8(f",{ekey}="), key in getattr(m, "optional_tags", ())) for key, ekey in m._tags]
        if m._static:
            tags.append((None, _utf8(m._static), True))
        uniq = {"uniq_mode": _fastpath.LAST, "uniq_state": m._last, "uniq_claim": None,
                "tmin": INT64_MIN, "tmax": INT64_MAX, "trim": 0, "window": 0}
        key_check = 2**62
    order = [_utf8(name) for name in spec.field_order] if framing == "text_delimited" else None  # type: ignore[attr-defined]
    delimiter = _utf8(spec.delimiter) if framing == "text_delimited" else None  # type: ignore[attr-defined]
    if delimiter == b"":
        raise _NotCovered("empty delimiter")
    return {
        "framing": codes[framing],
        "max_frame": spec.max_frame_bytes,  # type: ignore[attr-defined]
        "measurement": _utf8(m._fixed), "tags": tags, "fields": fields,
        "time_key": _utf8(m._time_field), "time_unit": _UNITS[time_format],
        "time_rule": _fastpath.EXACT if _exact_times(m) else _fastpath.PRODUCT,
        "key_check": key_check, **uniq, "field_order": order, "delimiter": delimiter,
        # the window around the receive time (Mapper.check_window): C hands back what is outside
        "ahead": _window_ns(getattr(m, "ahead_ns", None)), "behind": _window_ns(getattr(m, "behind_ns", None)),
    }


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
