"""Per-call costs of exact timestamps and compiled paths, as ratios measured in one run.

    python bridge/bench/paths_time.py

Each figure is the best of several interleaved rounds (the machine is shared and noisy), and
each ratio is taken against a baseline measured in the same round: the inexact expression the
mapping's fast path inlines today (`round(x * SCALE)`), and a flat `record.get(key)` walk.
"""

from __future__ import annotations

import json
import timeit

from station_bridge.paths import Path, compile_paths, parse
from station_bridge.timestamps import float_seconds_to_ns, parser

ROUNDS, NUMBER = 7, 200_000


def best(cases: dict[str, tuple[str, dict]]) -> dict[str, float]:
    """ns per call, best of ROUNDS, cases interleaved within each round."""
    timers = {name: timeit.Timer(stmt, globals=env) for name, (stmt, env) in cases.items()}
    results = {name: float("inf") for name in cases}
    for _ in range(ROUNDS):
        for name, timer in timers.items():
            results[name] = min(results[name], timer.timeit(NUMBER) / NUMBER * 1e9)
    return results


def table(title: str, results: dict[str, float], baseline: str) -> None:
    print(f"\n{title}\n{'case':58} {'ns/call':>9} {'ratio':>7}")
    for name, ns in results.items():
        print(f"{name:58} {ns:9.0f} {ns / results[baseline]:7.2f}")


def main() -> None:
    x = 1700000000.123456
    scale, fscale, limit = 1_000_000_000, 1e9, 9.2e9
    inline_exact = ("i = int(x)\np = (x - i) * FSCALE\nq = round(p)\n"
                    "ts = i * SCALE + q if (-LIMIT < x < LIMIT and -0.4999 < p - q < 0.4999) else None")
    env = {"x": x, "SCALE": scale, "FSCALE": fscale, "LIMIT": limit, "f": float_seconds_to_ns}
    epoch_s, auto = parser("epoch_s"), parser("auto")
    rfc, naive = parser("rfc3339"), parser("naive", "Europe/Amsterdam")
    time_cases = {
        "inline round(x * SCALE) (today's fast path, inexact)": ("round(x * SCALE)", env),
        "inline exact (proposed fast path for mapping.py)": (inline_exact, env),
        "float_seconds_to_ns(x)": ("f(x)", env),
        "parser('epoch_s')(float)": ("p(x)", {"p": epoch_s, "x": x}),
        "parser('epoch_s')(int)": ("p(x)", {"p": epoch_s, "x": 1700000000}),
        "parser('auto')(float)": ("p(x)", {"p": auto, "x": x}),
        "parser('auto')('1700000000123456789')": ("p(x)", {"p": auto, "x": "1700000000123456789"}),
        "parser('auto')('1764439880.123456789')": ("p(x)", {"p": auto, "x": "1764439880.123456789"}),
        "parser('rfc3339')('2023-11-14T22:13:20.123456789Z')": (
            "p(x)", {"p": rfc, "x": "2023-11-14T22:13:20.123456789Z"}),
        "parser('rfc3339')('2023-11-14T23:13:20.5+01:00')": ("p(x)", {"p": rfc, "x": "2023-11-14T23:13:20.5+01:00"}),
        "parser('naive', Amsterdam)('2023-11-14 23:13:20.250')": ("p(x)", {"p": naive, "x": "2023-11-14 23:13:20.250"}),
    }
    table("Timestamps (epoch seconds 1700000000.123456 unless shown)", best(time_cases),
          "inline round(x * SCALE) (today's fast path, inexact)")

    tick = {"timestamp": x, "instrument": "EURUSD", "bid": 1.08234, "ask": 1.08245, "volume": 1000000}
    flat = compile_paths({k: Path.key(k) for k in ("instrument", "bid", "ask", "volume", "timestamp")})
    nested = compile_paths({"instrument": parse("meta.instrument"), "bid": parse("quote.bid"),
                            "ask": parse("quote.ask"), "volume": parse("quote.volume"), "timestamp": parse("$.t")})
    nested_tick = {"t": x, "meta": {"instrument": "EURUSD"}, "quote": {"bid": 1.08234, "ask": 1.08245,
                                                                       "volume": 1000000}}
    book = {"error": [], "result": {
        pair: {side: [[f"{563 + i}.45000", "0.750", 1764439880 + i] for i in range(10)] for side in ("asks", "bids")}
        for pair in ("XXBTZCAD", "XETHZEUR")}}
    depth = compile_paths({"price": parse("[0]"), "volume": parse("[1]"), "time": parse("[2]")},
                          parse("result.<pair>.<side:asks|bids>[<level>]", wildcards=True))
    get = tick.get
    manual = "(get('instrument'), get('bid'), get('ask'), get('volume'), get('timestamp'))"
    path_cases = {
        "flat tick: 5 x record.get (the mapper's own fast path)": (manual, {"get": get}),
        "flat tick: PathSet.rows (is_flat: the mapper keeps its path)": ("rows(r)", {"rows": flat.rows, "r": tick}),
        "nested tick: 5 paths, 2 levels deep": ("rows(r)", {"rows": nested.rows, "r": nested_tick}),
        "Kraken Depth, 2 pairs x 2 sides x 10 levels = 40 rows": ("rows(r)", {"rows": depth.rows, "r": book}),
        "parse('result.<pair>.<side:asks|bids>[<level>]') (start only)": (
            "parse(t, wildcards=True)", {"parse": parse, "t": "result.<pair>.<side:asks|bids>[<level>]"}),
    }
    results = best(path_cases)
    table("Paths (per record)", results, "flat tick: 5 x record.get (the mapper's own fast path)")
    print(f"\nKraken Depth per row: {results['Kraken Depth, 2 pairs x 2 sides x 10 levels = 40 rows'] / 40:.0f} ns; "
          f"document {len(json.dumps(book))} bytes of JSON")


if __name__ == "__main__":
    main()
