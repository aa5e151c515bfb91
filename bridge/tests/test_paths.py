"""The path compiler against a slow, obviously correct reference walk, over generated documents
and generated paths (hostile keys included); the syntax; topic capture; unreachable keys."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station_bridge.paths import (
    EachItem,
    EachKey,
    Index,
    Key,
    Path,
    PathError,
    PathSyntaxError,
    TopicCapture,
    compile_paths,
    parse,
    shared_time_warnings,
    topic_warnings,
    unreachable,
)

# ---------------------------------------------------------------------------------------------
# The reference: recursive, no generated code, no shortcuts.


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_map(value):
    return type(value) is dict


def is_list(value):
    return type(value) in (list, tuple)


def ref_value(steps, value):
    """A plain path: the value, None when there is none, Refused('wrong_type') on a wrong kind."""
    if not steps or value is None:
        return value
    step, rest = steps[0], steps[1:]
    if isinstance(step, Key):
        if not is_map(value):
            raise Refused("wrong_type")
        return ref_value(rest, value.get(step.key))
    if not is_list(value):
        raise Refused("wrong_type")
    inside = -len(value) <= step.index < len(value)
    return ref_value(rest, value[step.index] if inside else None)


def ref_rows(sources, each, record, max_points):
    rooted = [(name, p) for name, p in sources.items() if p.root or each is None]
    values = {name: ref_value(p.steps, record) for name, p in rooted}
    if each is None:
        return [tuple(values[name] for name in sources)]
    rows = []

    def walk(value, steps, captured):
        if not steps:
            row = dict(values)
            for name, p in sources.items():
                if name not in row:
                    row[name] = ref_value(p.steps, value)
            rows.append((*(row[name] for name in sources), *captured))
            if len(rows) > max_points:
                raise Refused("too_many_points")
            return
        step, rest = steps[0], steps[1:]
        if isinstance(step, Key | EachKey) and not is_map(value):
            raise Refused("wrong_type")
        if isinstance(step, Index | EachItem) and not is_list(value):
            raise Refused("wrong_type")
        if isinstance(step, Key):
            if value.get(step.key) is None:
                raise Refused("missing_field")
            walk(value[step.key], rest, captured)
        elif isinstance(step, Index):
            if not -len(value) <= step.index < len(value) or value[step.index] is None:
                raise Refused("missing_field")
            walk(value[step.index], rest, captured)
        elif isinstance(step, EachKey):
            keys = list(value) if step.only is None else [k for k in step.only if k in value]
            for key in keys:
                if value[key] is not None:
                    walk(value[key], rest, captured + ([key] if step.name else []))
        else:
            for index, element in enumerate(value):
                if element is not None:
                    walk(element, rest, captured + ([str(index)] if step.name else []))

    walk(record, list(each.steps), [])
    if not rows:
        raise Refused("no_points")
    return rows


def outcome(function, *args):
    try:
        return "rows", function(*args)
    except (PathError, Refused) as exc:
        return "refused", exc.reason


def same(a, b):
    """Equal, and the very same objects where a document value is returned (NaN-proof)."""
    if a[0] != b[0]:
        return False
    if a[0] == "refused":
        return a[1] == b[1]
    return len(a[1]) == len(b[1]) and all(
        len(x) == len(y) and all(u is v or (type(u) is str and u == v) for u, v in zip(x, y, strict=True))
        for x, y in zip(a[1], b[1], strict=True))


# ---------------------------------------------------------------------------------------------
# Generated documents and paths

HOSTILE = ["", ".", "..", "a.b", "[0]", "[", "]", '"', "'", "\\", '\\"', "<x>", "<", ">", "*", "$", "$.a", "|",
           ":", " ", "a b", "\t", "\n", "\x00", "\ud800", "\udfff", "é", "ß", "Ａ", "０", "0", "1", "-1", "01",
           "price", "asks", "bids", "ключ", "🙂", "\u200b", "a]b", "a[b", "x\"]"]
keys = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=4), st.text("ab.[]<>*$|:\"\\", max_size=4))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=3),
                    st.binary(max_size=2))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=2).map(tuple),
                            st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25)
records = st.dictionaries(keys, documents, max_size=5)
# Order books: uniform levels (so that explosions produce rows), with some noise.
level = st.one_of(st.tuples(st.text(max_size=3), st.text(max_size=3), st.integers()).map(list),
                  st.lists(scalars, max_size=3), st.none())
books = st.fixed_dictionaries({"error": st.lists(st.text(max_size=3), max_size=1)}, optional={"result": st.one_of(
    st.dictionaries(keys, st.dictionaries(st.sampled_from(["asks", "bids", "last"]),
                                          st.lists(level, max_size=4) | scalars, max_size=3) | scalars, max_size=3),
    documents)})
names = st.text("abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=6)


def draw_steps(data, value, wildcards: bool, max_len: int = 5):
    """Steps guided by the document, so that paths often reach something: mostly the kind of
    step the value at hand takes, sometimes the wrong kind or a key it lacks. Returns the steps
    and the value the walk reached (for a wildcard: its first element)."""
    steps = []
    for _ in range(max_len):
        roll = data.draw(st.integers(0, 19))
        if is_map(value) and value:
            choice = "key" if roll < 11 else "each_key" if roll < 17 else "index" if roll < 18 else "stop"
        elif is_list(value) and value:
            choice = "index" if roll < 9 else "each_item" if roll < 17 else "key" if roll < 18 else "stop"
        else:
            choice = "stop" if roll < 16 else ("key", "index", "each_key", "each_item")[roll % 4]
        if choice in ("each_key", "each_item") and not wildcards:
            choice = "key" if choice == "each_key" else "index"
        if choice == "stop":
            break
        if choice == "key":
            present = list(value) if is_map(value) else []
            key = data.draw(st.sampled_from(present) if present and data.draw(st.integers(0, 4)) else keys)
            steps.append(Key(key))
            value = value.get(key) if is_map(value) else None
        elif choice == "index":
            n = len(value) if is_list(value) else 0
            index = data.draw(st.integers(-n - 1, n) if n else st.integers(-3, 3))
            steps.append(Index(index))
            value = value[index] if is_list(value) and -n <= index < n else None
        elif choice == "each_key":
            name = data.draw(st.none() | names)
            only = None
            if name is not None and data.draw(st.booleans()):
                present = list(value) if is_map(value) else []
                only = tuple(dict.fromkeys(data.draw(st.lists(
                    st.sampled_from(present) if present else keys, min_size=1, max_size=3))))
            steps.append(EachKey(name, only))
            candidates = [v for k, v in value.items() if only is None or k in only] if is_map(value) else []
            value = next((v for v in candidates if v is not None), None)
        else:
            steps.append(EachItem(data.draw(st.none() | names)))
            value = next((v for v in value if v is not None), None) if is_list(value) else None
    return steps, value


def unique_captures(steps):
    seen, out = set(), []
    for step in steps:
        if isinstance(step, EachKey | EachItem) and step.name is not None:
            if step.name in seen:
                step = EachKey(None, None) if isinstance(step, EachKey) else EachItem(None)
            seen.add(step.name)
        out.append(step)
    return tuple(out)


@given(data=st.data(), record=records | books)
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_compiled_paths_agree_with_the_reference_walk(data, record):
    each = None
    element = record
    if data.draw(st.integers(0, 2)):
        steps, element = draw_steps(data, record, wildcards=True)
        if not any(isinstance(s, EachKey | EachItem) for s in steps):
            wild = EachItem(data.draw(st.none() | names)) if is_list(element) else EachKey(data.draw(st.none() | names))
            steps.append(wild)
            items = element if is_list(element) else element.values() if is_map(element) else []
            element = next((v for v in items if v is not None), None)
        steps = unique_captures(steps)
        each = parse(Path(steps, root=data.draw(st.booleans())).render(), wildcards=True)
        assert each.steps == steps
    sources = {}
    for i in range(data.draw(st.integers(1, 4))):
        root = data.draw(st.booleans())
        steps = tuple(draw_steps(data, record if root or each is None else element, wildcards=False)[0])
        path = Path(steps, root=root)
        text = path.render()
        parsed = parse(text)
        assert parsed == path, text  # the text of any path reads back as the same steps
        sources[f"s{i}"] = parsed
    max_points = data.draw(st.integers(1, 8))
    compiled = compile_paths(sources, each, max_points=max_points)
    expected = outcome(ref_rows, sources, each, record, max_points)
    assert same(outcome(compiled.rows, record), expected), (compiled.source_code, expected)


@given(steps=st.lists(st.one_of(st.builds(Key, keys), st.builds(Index, st.integers(-(2**31) + 1, 2**31 - 1)),
                                st.builds(EachKey, st.none() | names),
                                st.builds(EachKey, names, st.lists(keys, min_size=1, max_size=3, unique=True)
                                          .map(tuple)),
                                st.builds(EachItem, st.none() | names)), max_size=6),
       root=st.booleans())
@settings(max_examples=500, deadline=None)
def test_every_path_renders_to_text_that_parses_back(steps, root):
    path = Path(unique_captures(steps), root=root)
    text = path.render()
    assert parse(text, wildcards=True) == path
    json.dumps(text).encode("utf-8")  # the text is valid UTF-8 (lone surrogates are escaped)
    text.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# The syntax, by example

@pytest.mark.parametrize(("text", "steps", "root"), [
    ("bid", (Key("bid"),), False),
    (".bid", (Key("bid"),), False),
    ("result.XXBTZCAD.asks", (Key("result"), Key("XXBTZCAD"), Key("asks")), False),
    ('["a.b"].c', (Key("a.b"), Key("c")), False),
    ('meta["x y"]["\\"quoted\\""]', (Key("meta"), Key("x y"), Key('"quoted"')), False),
    ('["\\ud800"]', (Key("\ud800"),), False),
    ('[""]', (Key(""),), False),
    ("a.0", (Key("a"), Key("0")), False),  # a key named 0, not an index
    ("a[0][-1]", (Key("a"), Index(0), Index(-1)), False),
    ("[2]", (Index(2),), False),
    (".[2]", (Index(2),), False),
    (".", (), False),
    ("$", (), True),
    ("$.ts", (Key("ts"),), True),
    ("$[0]", (Index(0),), True),
    ("$.[0]", (Index(0),), True),
    ("result.<pair>.<side:asks|bids>[<level>]",
     (Key("result"), EachKey("pair"), EachKey("side", ("asks", "bids")), EachItem("level")), False),
    ('<k:"a.b"|c>', (EachKey("k", ("a.b", "c")),), False),
    ("*.x[*]", (EachKey(None), Key("x"), EachItem(None)), False),
])
def test_syntax(text, steps, root):
    path = parse(text, wildcards=True)
    assert (path.steps, path.root) == (steps, root)
    assert parse(path.render(), wildcards=True) == path


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty path"),
    ("a..b", "character 3: expected a key after '.'"),
    ("a.", "character 3"),
    ("$x", "expected '.' or '['"),
    ("a b", "expected '.' or '['"),
    ("a.[0]", "expected a key after '.'"),
    ("[0", "expected ']'"),
    ("[１]", "ASCII digits"),
    ("[0x1]", "expected ']'"),
    ("[99999999999]", "out of range"),
    ('["x]', "unterminated quoted key"),
    ('["\\q"]', "invalid quoted key"),
    ("a.é", "quote other keys"),
    ("a.b c", "expected '.' or '['"),
    ("a[<x:y>]", "alternatives apply to maps"),
    ("<a>.<a>", "capture <a> appears twice"),
    ("<a:b|b>", "lists a key twice"),
    ("<a", "expected '>'"),
    ("<>", "a capture name"),
    (1, "a path is a string"),
    ([0], "quote a path that starts with '['"),
    (None, "a path is a string"),
])
def test_syntax_errors_say_where_and_what(text, message):
    with pytest.raises(PathSyntaxError, match=None) as caught:
        parse(text, wildcards=True)
    assert message in str(caught.value)


def test_wildcards_only_in_each():
    with pytest.raises(PathSyntaxError, match="only in `each`"):
        parse("result.<pair>.asks")
    with pytest.raises(PathSyntaxError, match="only in `each`"):
        compile_paths({"x": parse("a.*", wildcards=True)})
    with pytest.raises(PathSyntaxError, match="no wildcard"):
        compile_paths({"x": parse("a")}, parse("result.x", wildcards=True))


# ---------------------------------------------------------------------------------------------
# The three feed shapes of the design document

KRAKEN_DEPTH = json.loads(
    '{"error":[],"result":{"XXBTZCAD":{"asks":[["563.45000","0.750",1764439880],["563.50000","1.2",1764439881]],'
    '"bids":[["540.00000","0.002",1764425123]]},"XETHZEUR":{"bids":[["1.5","3",1764425124]]}}}')


def kraken_paths(max_points=10_000):
    return compile_paths({"price": parse("[0]"), "volume": parse("[1]"), "time": parse("[2]")},
                         parse("result.<pair>.<side:asks|bids>[<level>]", wildcards=True),
                         max_points=max_points, name="kraken_depth")


def test_kraken_depth_one_row_per_level():
    paths = kraken_paths()
    assert paths.columns == ("price", "volume", "time", "pair", "side", "level")
    assert not paths.is_flat
    assert paths.rows(KRAKEN_DEPTH) == [
        ("563.45000", "0.750", 1764439880, "XXBTZCAD", "asks", "0"),
        ("563.50000", "1.2", 1764439881, "XXBTZCAD", "asks", "1"),
        ("540.00000", "0.002", 1764425123, "XXBTZCAD", "bids", "0"),
        ("1.5", "3", 1764425124, "XETHZEUR", "bids", "0"),
    ]


@pytest.mark.parametrize(("record", "reason", "detail"), [
    ({"error": ["EQuery:Unknown asset pair"]}, "missing_field", "result: no value"),
    ({"result": []}, "wrong_type", "result: expected a map, got a list"),
    ({"result": {"XXBTZCAD": {"asks": {"0": 1}}}}, "wrong_type", "result.<pair>.<side:asks|bids>: expected a list"),
    ({"result": {"XXBTZCAD": {"asks": [], "bids": []}}}, "no_points", "no element matched"),
    ({"result": {"XXBTZCAD": {"asks": ["563.4"]}}}, "wrong_type", ".: expected a list, got a string"),
    ({"result": {"XXBTZCAD": {"asks": [["1", "2", 3]] * 4}}}, "too_many_points", "more than 3 rows"),
])
def test_kraken_depth_refusals_name_their_reason(record, reason, detail):
    with pytest.raises(PathError) as caught:
        kraken_paths(max_points=3).rows(record)
    assert caught.value.reason == reason
    assert detail in str(caught.value)


def test_v20_per_instrument_topic_capture():
    topic = TopicCapture(tag="instrument")
    assert topic("EUR_USD") == (("instrument", "EUR_USD"),)
    split = TopicCapture(regex=r"^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$")
    assert split("EUR_USD") == (("base", "EUR"), ("quote", "USD"))
    with pytest.raises(PathError) as caught:
        split("EURUSD")
    assert caught.value.reason == "unknown_topic"
    both = TopicCapture(tag="instrument", regex=r"(?P<base>[A-Z]{3})_(?P<extra>x)?")
    assert both("EUR_USD") == (("instrument", "EUR_USD"), ("base", "EUR"))  # unmatched group: no tag
    with pytest.raises(PathSyntaxError, match="named groups"):
        TopicCapture(regex="EUR_.*")
    with pytest.raises(PathSyntaxError, match="also a group"):
        TopicCapture(tag="base", regex="(?P<base>.*)")
    # the payload is text_delimited: flat keys, as today
    paths = compile_paths({"time": Path.key("time"), "bid": Path.key("bid"), "ask": Path.key("ask")})
    assert paths.is_flat and paths.rows({"time": "t", "bid": "1", "ask": "2"}) == [("t", "1", "2")]
    assert unreachable("v20", "text_delimited", ["time", "bid", "ask"], paths) == []


def test_flat_msgpack_tick_is_flat():
    paths = compile_paths({"tags.instrument": Path.key("instrument"), "fields.bid": Path.key("bid"),
                           "time": Path.key("timestamp"), "fields.x": parse("$.x")})
    assert paths.is_flat
    assert paths.flat_keys == {"tags.instrument": "instrument", "fields.bid": "bid", "time": "timestamp",
                               "fields.x": "x"}
    assert paths.rows({"instrument": "EURUSD", "bid": 1.5}) == [("EURUSD", 1.5, None, None)]
    # one `.get` per source: the same work as the mapper's own flat fast path
    assert paths.source_code.count(".get(") == 4 and "try" not in paths.source_code
    assert not compile_paths({"x": parse("a.b")}).is_flat


def test_nested_values_and_root_paths_in_rows():
    record = {"ts": 7, "meta": {"venue": "k"}, "levels": [{"p": 1.0}, None, {"p": 2.0, "q": [5]}]}
    paths = compile_paths({"p": parse("p"), "q0": parse("q[0]"), "ts": parse("$.ts"), "venue": parse("$.meta.venue"),
                           "me": parse(".")}, parse("levels[<level>]", wildcards=True))
    assert paths.rows(record) == [(1.0, None, 7, "k", {"p": 1.0}, "0"), (2.0, 5, 7, "k", record["levels"][2], "2")]


# ---------------------------------------------------------------------------------------------
# Keys that can never match

def test_unreachable_keys_under_text_delimited():
    order = ["time", "bid", "ask"]
    paths = compile_paths({
        "mapping.fields.bid": Path.key("bid"),
        "mapping.fields.mid": Path.key("mid"),
        "mapping.tags.venue": parse("meta.venue"),
        "mapping.fields.first": parse("bid[0]"),
        "mapping.time": parse("$.time"),
        "mapping.tags.deep": parse("ask.x"),
    })
    messages = unreachable("v20", "text_delimited", order, paths)
    assert messages == [
        "subscription 'v20': mapping.fields.mid: path mid can never match: framing text_delimited yields only "
        "the keys 'time', 'bid', 'ask'",
        "subscription 'v20': mapping.tags.venue: path meta.venue can never match: framing text_delimited yields "
        "only the keys 'time', 'bid', 'ask'",
        "subscription 'v20': mapping.fields.first: path bid[0] can never match: bid is a string (framing "
        "text_delimited yields only string values), nothing is under it",
        "subscription 'v20': mapping.tags.deep: path ask.x can never match: ask is a string (framing "
        "text_delimited yields only string values), nothing is under it",
    ]


def test_unreachable_each_and_literal_dotted_keys():
    each = compile_paths({"p": parse("[0]")}, parse("levels[<level>]", wildcards=True))
    assert unreachable("kr", "text_delimited", ["levels"], each) == [
        "subscription 'kr': each: path levels[<level>] can never match: levels is a string (framing text_delimited "
        "yields only string values), nothing is under it"]
    assert unreachable("kr", "json", [], each) == []
    over_values = compile_paths({"v": parse(".")}, parse("<name>", wildcards=True))
    assert unreachable("kr", "text_delimited", ["a", "b"], over_values) == []
    literal = compile_paths({"mapping.tags.result.pair": Path.key("result.pair"), "mapping.time": parse("[0]")})
    assert unreachable("kr", "msgpack", [], literal) == [
        "subscription 'kr': mapping.tags.result.pair: 'result.pair' matches only a key spelled exactly so, not a "
        "nested value; to read the path result.pair, use the map form: tags: {pair: 'result.pair'}",
        "subscription 'kr': mapping.time: path [0] can never match: the record is a map, not a list"]
    # the same literal key under text_delimited is simply not one of the keys
    assert unreachable("kr", "text_delimited", ["a"], literal)[0].endswith("yields only the keys 'a'")


def test_null_is_absent_everywhere():
    paths = compile_paths({"v": parse("."), "x": parse("$.x.y")}, parse("m.<k>", wildcards=True))
    assert paths.rows({"m": {"a": None, "b": 1, "c": [None]}, "x": None}) == [(1, None, "b"), ([None], None, "c")]
    items = compile_paths({"v": parse("."), "w": parse("[0]")}, parse("l[<i>]", wildcards=True))
    assert items.rows({"l": [None, [1], [None, 2]]}) == [([1], 1, "1"), ([None, 2], None, "2")]
    only = compile_paths({"v": parse(".")}, parse("<k:a|b|c>", wildcards=True))
    assert only.rows({"c": 3, "a": None, "b": 2}) == [(2, "b"), (3, "c")]  # listed order, nulls skipped
    with pytest.raises(PathError) as caught:
        compile_paths({"v": parse(".")}, parse("m.n[*]", wildcards=True)).rows({"m": {"n": None}})
    assert caught.value.reason == "missing_field" and "m.n: no value" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# The documented examples (README, moved from the design document) stay true

def doc_blocks(language):
    import re
    from pathlib import Path as FilePath
    text = (FilePath(__file__).parents[1] / "README.md").read_text(encoding="utf-8")  # the mapping section
    # (the embedded default-config.yml is the configuration reference, tested against the code elsewhere)
    text = re.sub(r"<!-- BEGIN configuration reference.*?<!-- END configuration reference -->", "", text, flags=re.S)
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def mapping_paths(mapping):
    """Every path string of a mapping section written in the documented keys."""
    each = parse(mapping["each"], wildcards=True) if mapping.get("each") else None
    sources = {}
    for name, spec in (mapping.get("fields") or {}).items():
        sources[f"fields.{name}"] = parse(spec["path"]) if isinstance(spec, dict) else Path.key(name)
    tags = mapping.get("tags") or []
    for name in tags:
        sources[f"tags.{name}"] = parse(tags[name]) if isinstance(tags, dict) else Path.key(name)
    time = mapping.get("time") or {}
    if time.get("path") or time.get("field"):
        sources["time"] = parse(time["path"]) if time.get("path") else Path.key(time["field"])
    for i, derived in enumerate(mapping.get("derived_tags") or []):
        sources[f"derived_tags[{i}]"] = parse(derived["path"]) if "path" in derived else Path.key(derived["source"])
    return compile_paths(sources, each)


def test_design_document_examples_parse_and_compile():
    import tomllib

    import yaml
    mappings = []
    for block in doc_blocks("yaml"):
        data = yaml.safe_load(block)
        for item in data if isinstance(data, list) else data.get("subscriptions", [data]):
            if "mapping" in item:  # (the other blocks show other keys: ignore rules)
                mappings.append(item["mapping"])
    for block in doc_blocks("toml"):
        mappings += [s["mapping"] for s in tomllib.loads(block)["subscriptions"]]
    assert len(mappings) == 5
    compiled = [mapping_paths(m) for m in mappings]
    reference, kraken_yaml, v20, flat, kraken_toml = compiled  # yaml blocks in order, then toml
    assert reference.each is not None and not reference.is_flat
    assert kraken_yaml.rows(KRAKEN_DEPTH) == kraken_toml.rows(KRAKEN_DEPTH) == kraken_paths().rows(KRAKEN_DEPTH)
    assert v20.is_flat and flat.is_flat
    assert unreachable("oanda_v20", "text_delimited", ["time", "bid", "ask"], v20) == []


def test_hostile_sizes_and_keys():
    burst = compile_paths({"v": parse(".")}, parse("l[<i>]", wildcards=True), max_points=10)
    with pytest.raises(PathError) as caught:
        burst.rows({"l": [1] * 200_000})
    assert caught.value.reason == "too_many_points"
    assert len(burst.rows({"l": [None] * 100_000 + [1] * 10})) == 10  # skipped nulls are no rows
    deep = parse("".join(f'["k{i}"]' for i in range(200)))
    nested: object = "bottom"
    for i in reversed(range(200)):
        nested = {f"k{i}": nested}
    assert compile_paths({"d": deep}).rows(nested) == [("bottom",)]  # type: ignore[arg-type]
    many = compile_paths({f"s{i}": parse(f"a[{i}]") for i in range(300)})
    assert many.rows({"a": list(range(300))}) == [tuple(range(300))]
    code = "__import__('os').system('false') or ')"
    sneaky = compile_paths({"x": parse(f"m[{json.dumps(code)}]"), "y": Path.key(code)})
    assert code not in sneaky.source_code  # keys are bound as constants, never written into the code
    assert sneaky.rows({"m": {code: 1}, code: 2}) == [(1, 2)]


def test_check_config_hints_name_the_map_form_for_a_path_looking_literal_key():
    """Issue 21: `$.s` was "corrected" to '["$"].s' (a key named `$`) and `asks[0][0]` to
    '["asks[0][0]"]'; the hint names the path the key looks like and the map form that reads it."""
    literal = compile_paths({"mapping.fields.s": Path.key("$.s"), "mapping.fields.ask": Path.key("asks[0][0]"),
                             "mapping.time": Path.key("meta.ts")})
    assert unreachable("b", "json", [], literal) == [
        "subscription 'b': mapping.fields.s: '$.s' matches only a key spelled exactly so, not a nested value; "
        "to read the path $.s, use the map form: fields: {s: {path: '$.s', type: <its type>}}",
        "subscription 'b': mapping.fields.ask: 'asks[0][0]' matches only a key spelled exactly so, not a nested "
        "value; to read the path asks[0][0], use the map form: fields: {asks: {path: 'asks[0][0]', type: <its type>}}",
        "subscription 'b': mapping.time: 'meta.ts' matches only a key spelled exactly so, not a nested value; "
        "to read the path meta.ts, use the map form: time: {path: 'meta.ts', format: <its format>}"]


@pytest.mark.parametrize(("topics", "regex", "warned"), [
    (["kraken_tick"], r"^book\.(?P<pair>.*)", True),
    (["book."], r"^book\.(?P<pair>.*)", False),
    (["bo"], r"^book\.(?P<pair>.*)", False),  # "bo" prefixes topics "book.x" too
    ([""], r"^book\.(?P<pair>.*)", False),
    (["a", "kraken"], r"^kraken_(?P<p>.*)", False),  # one prefix that can match is enough
    (["x"], r"(?P<p>.*)", False),  # no literal start: not decided
    (["boo"], r"^books?x", False),  # the quantified letter is optional
])
def test_a_topic_regex_the_prefixes_can_never_match_is_warned(topics, regex, warned):
    import re
    found = topic_warnings("b", topics, re.compile(regex))
    assert bool(found) == warned, found
    if warned:
        assert "can never match a topic starting with" in found[0] and "unknown_topic" in found[0]


def test_each_points_sharing_a_time_in_one_series_are_warned():
    """Issue 21: levels sharing the message's time without a capture are nudged t, t+1, t+2 ns."""
    nudged = compile_paths({"mapping.fields.p": parse("[0]"), "mapping.time": parse("$.ts")},
                           parse("bids[*]", wildcards=True))
    (warning,) = shared_time_warnings("b", nudged)
    assert "[*]" in warning and "t+1, t+2 ns" in warning and "[<level>]" in warning
    captured = compile_paths({"mapping.fields.p": parse("[0]"), "mapping.time": parse("$.ts")},
                             parse("bids[<level>]", wildcards=True))
    assert shared_time_warnings("b", captured) == []
    per_element = compile_paths({"mapping.fields.p": parse("[0]"), "mapping.time": parse("[2]")},
                                parse("bids[*]", wildcards=True))
    assert shared_time_warnings("b", per_element) == []
    receive_time = compile_paths({"mapping.fields.p": parse("[0]")}, parse("bids[*]", wildcards=True))
    assert "the receive time" in shared_time_warnings("b", receive_time)[0]
