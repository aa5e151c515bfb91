"""What `gzip: true` costs the station, and what a cheaper deflate would (run.py's `gzip` phase).

    python bridge/bench/run.py --only gzip [--gzip-points 100000]

The lines are the bridge's own (its Python mapper over the bench's msgpack ticks). Two measures,
each the least thread CPU of alternating rounds (the machine is shared):
- the bridge as it is: `InfluxWriter.post` (sinks.py) of the lines in requests of 1,000 and of
  5,000 points into a real influxd, with `gzip: true` and with `gzip: false`; the difference is
  the extra station CPU per point (compression, less the smaller body's cheaper send). With the
  deflate sinks.gzip_body uses (ISA-L's where the `isal` package is installed) and, when that is
  not zlib's, with zlib's too (the bridge without `isal`: before and after in one run);
- the compression call alone, on the same request bodies: sinks.gzip_body, what the bridge sent
  before it (`gzip.compress(body, compresslevel=1)`), zlib in one call (`zlib.compress(body, 1,
  31)`), and, when they are importable (neither is a dependency of the bridge), ISA-L's
  (`isal.isal_zlib`) and zlib-ng's (`zlib_ng.zlib_ng`) at their fast levels: bytes per point on
  the wire and CPU per point. Every body is checked to decompress to its input.
"""

from __future__ import annotations

import gzip
import importlib
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import stages
from servers import Influxd

ROUNDS = 5  # of the compression calls
POST_ROUNDS = 3  # of the writer's requests (each posts every point twice per size)
SIZES = (1000, 5000)


def bridge_lines(count: int) -> list[bytes]:
    """The bridge's lines (Python mapper) for `count` of the bench's msgpack ticks."""
    from station_bridge import config as cfg
    from station_bridge.decoders import build
    from station_bridge.mapping import Mapper
    sub = stages.subscription("msgpack", "bench", "tcp://127.0.0.1:1", "kraken_tick")
    spec = cfg.parse(stages.bridge_config(Path("/nonexistent"), "http://127.0.0.1:1", "unused", None,
                                          [sub], 1), "bench").subscriptions[0]
    decode, mapper = build(spec), Mapper(spec, "bench")
    return [(mapper.line(*decode(frames)) + "\n").encode() for frames in stages.messages("msgpack", count)]


def compressors() -> dict[str, Callable[[bytes], bytes] | str]:
    """Name -> compress(body) -> one gzip member; or why it is not measured."""
    from station_bridge import sinks
    out: dict[str, Callable[[bytes], bytes] | str] = {
        f"sinks.gzip_body ({sinks._DEFLATE.__name__}, level 1)": sinks.gzip_body,
        "gzip.compress level 1 (the bridge before gzip_body)": lambda body: gzip.compress(body, compresslevel=1),
        "zlib.compress(body, 1, 31) (zlib, one call)": lambda body: zlib.compress(body, 1, 31),
    }
    for module, label, levels in (("isal.isal_zlib", "ISA-L (isal)", (0, 1)),
                                  ("zlib_ng.zlib_ng", "zlib-ng (zlib-ng)", (1, 2))):
        try:
            lib = importlib.import_module(module)
        except ImportError:
            out[f"{label}"] = f"not installed (pip install {module.split('.')[0].replace('_', '-')})"
            continue
        for level in levels:
            out[f"{label} level {level}"] = lambda body, lib=lib, level=level: lib.compress(body, level, 31)
    return out


def gzip_phase(influx: Influxd, points: int) -> dict:
    from station_bridge import config as cfg
    from station_bridge import sinks
    from station_bridge.sinks import InfluxWriter
    lines = bridge_lines(points)
    raw = sum(len(line) for line in lines)
    bodies = {size: [b"".join(lines[i:i + size]) for i in range(0, len(lines), size)] for size in SIZES}
    db = "gzipcost"
    influx.query(f'CREATE DATABASE "{db}"')

    def writer(on: bool) -> InfluxWriter:
        config = {"station": "bench", "subscriptions": [stages.subscription("msgpack", "b", "tcp://127.0.0.1:1", "t")],
                  "destinations": [{"name": "d", "url": influx.url, "database": db, "gzip": on}]}
        return InfluxWriter(cfg.parse(config, "bench").destinations[0])

    bridge_deflate = sinks._DEFLATE
    deflates = [bridge_deflate] + ([zlib] if bridge_deflate is not zlib else [])
    post: dict[tuple[int, str], float] = {}  # (size, "off" or the deflate's name) -> us per point
    try:
        for _ in range(POST_ROUNDS):
            for size in SIZES:
                for deflate in [None, *deflates]:
                    key = (size, "off" if deflate is None else deflate.__name__)
                    if deflate is not None:
                        sinks._DEFLATE = deflate  # the bridge with this deflate (restored below)
                    w = writer(deflate is not None)
                    started = time.thread_time()
                    for body in bodies[size]:
                        status, message = w.post(body, size)
                        if status != 204:
                            raise RuntimeError(f"InfluxDB answered {status}: {message}")
                    used = (time.thread_time() - started) / points * 1e6
                    w.close()
                    post[key] = min(post.get(key, float("inf")), used)
    finally:
        sinks._DEFLATE = bridge_deflate
    if influx.count(db, "ticks") != points:  # the same points again and again: stored once
        raise RuntimeError("the gzip phase's points did not all reach InfluxDB")
    calls: dict[str, dict] = {}
    methods = compressors()
    for _ in range(ROUNDS):
        for name, compress in methods.items():
            if isinstance(compress, str):
                calls[name] = {"missing": compress}
                continue
            for size in SIZES:
                started = time.thread_time()
                packed = [compress(body) for body in bodies[size]]
                used = (time.thread_time() - started) / points * 1e6
                got = calls.setdefault(name, {}).setdefault(size, {"us": float("inf")})
                got["us"] = min(got["us"], used)
                got["bytes"] = sum(len(p) for p in packed) / points
                if any(gzip.decompress(p) != body for p, body in zip(packed, bodies[size], strict=True)):
                    raise RuntimeError(f"{name}: a body does not decompress to its input")
    return {"raw": raw / points, "post": post, "calls": calls, "points": points,
            "deflates": [d.__name__ for d in deflates]}


def gzip_rows(result: dict) -> list[tuple[str, str, str]]:
    raw, post = result["raw"], result["post"]
    out = []
    calls = list(result["calls"].values())
    bridge, before = calls[0], calls[1]  # sinks.gzip_body; gzip.compress, what it replaced
    for k, name in enumerate(result["deflates"]):
        sent = bridge if k == 0 else calls[2]  # zlib's bytes: zlib.compress(body, 1, 31)
        what = f"the bridge ({name})" if k == 0 else f"the bridge without isal ({name})"
        for size in SIZES:
            on, off = post[(size, name)], post[(size, "off")]
            out.append((f"gzip, {what}: InfluxWriter.post, {size:,} per request: CPU per point gzip true / false",
                        f"{on:.2f} / {off:.2f} us: {on - off:.2f} us extra; {raw:.0f} -> "
                        f"{sent[size]['bytes']:.1f} bytes per point",
                        f"{raw / sent[size]['bytes']:.1f}x fewer bytes; target >= 4x at <= 0.5 us extra"))
    for name, got in result["calls"].items():
        if "missing" in got:
            out.append((f"gzip, the call alone: {name}", got["missing"], ""))
            continue
        out.append((f"gzip, the call alone: {name}",
                    " / ".join(f"{got[size]['bytes']:.1f} B, {got[size]['us']:.3f} us" for size in SIZES)
                    + f" per point ({' / '.join(f'{s:,}' for s in SIZES)} per request)",
                    " / ".join(f"{raw / got[size]['bytes']:.1f}x" for size in SIZES) + " fewer bytes; "
                    + " / ".join(f"{got[size]['us'] / before[size]['us']:.2f}" for size in SIZES)
                    + " of gzip.compress's CPU"))
    return out
