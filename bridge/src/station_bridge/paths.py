"""Mapping paths: where a value lives in a decoded record, and how one record becomes several points.

A subscription's paths are parsed and compiled once, at start, into one generated function
(`PathSet.rows`); no path is parsed per message. The syntax (docs/mapping-paths.md has the
full specification and worked examples):

    result.XXBTZCAD.asks      map keys, separated by dots (bare keys: A-Z a-z 0-9 _ -)
    ["a.b"]  .["x y"]         any other key, as a JSON string in brackets
    asks[0]  asks[-1]         list index (negative: from the end)
    .                         the element itself (see `each`)
    $.meta.venue              from the record, not from the element
    .<pair>  .*               each entry of a map, its key captured as tag `pair` (or not captured)
    .<side:asks|bids>         only these keys (in this order), key captured as `side`
    [<level>]  [*]            each element of a list, its index captured as `level` (or not)

Wildcards appear only in the subscription's `each` path: it turns a record into one row per
element it matches (nested wildcards multiply); every other path reads one value, relative to
the row's element (the record itself when there is no `each`) or, with `$`, to the record.

Values: a path that does not reach a value (absent key, null on the way, index out of range)
yields None, as `record.get(key)` does for a flat mapping. A container of the wrong kind (a
list where a map is expected, a string where a list is) refuses the message (`wrong_type`);
so does an `each` path whose fixed steps do not reach a value (`missing_field`), one that
matches nothing (`no_points`) or more than `max_points` rows (`too_many_points`), and a topic
the topic pattern does not match (`unknown_topic`). Null is absent everywhere: wildcards skip
null entries and elements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .textcache import TextCache

_BARE = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_INDEX = re.compile(r"-?[0-9]+", re.ASCII)
_INDEX_LIMIT = 2**31  # an index beyond it is a typo, not a list position


class PathSyntaxError(ValueError):
    """A path that cannot be parsed or is not allowed where it is used (config time)."""


class PathError(ValueError):
    """A record the paths cannot map; `reason` names the rejection counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Steps and paths


@dataclass(frozen=True, slots=True)
class Key:
    key: str


@dataclass(frozen=True, slots=True)
class Index:
    index: int


@dataclass(frozen=True, slots=True)
class EachKey:
    """Each entry of a map (`.*`, `.<name>`, `.<name:a|b>`)."""

    name: str | None
    only: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class EachItem:
    """Each element of a list (`[*]`, `[<name>]`)."""

    name: str | None


Step = Key | Index | EachKey | EachItem


def _quote(key: str) -> str:
    text = json.dumps(key, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep the text printable and encodable
        text = json.dumps(key)
    return text


def _word(key: str) -> str:
    return key if _BARE.fullmatch(key) else _quote(key)


def _render_step(step: Step, first: bool) -> str:
    if isinstance(step, Key):
        if _BARE.fullmatch(step.key):
            return step.key if first else f".{step.key}"
        return f"[{_quote(step.key)}]"
    if isinstance(step, Index):
        return f"[{step.index}]"
    if isinstance(step, EachKey):
        dot = "" if first else "."
        if step.name is None:
            return f"{dot}*"
        only = ":" + "|".join(_word(k) for k in step.only) if step.only is not None else ""
        return f"{dot}<{step.name}{only}>"
    return f"[<{step.name}>]" if step.name is not None else "[*]"


@dataclass(frozen=True)
class Path:
    """A parsed path. `root`: from the record (`$`), else from the row's element."""

    steps: tuple[Step, ...]
    root: bool = False
    literal: bool = False  # made by Path.key(): a plain top-level key of the flat config forms
    text: str = field(default="", compare=False)

    @classmethod
    def key(cls, name: str) -> Path:
        """The path of one literal top-level key (today's `tags: [name]`, `fields: {name: type}`)."""
        return cls((Key(name),), literal=True, text=name)

    def __str__(self) -> str:
        return self.text or self.render()

    def render(self) -> str:
        """The canonical text of this path; parse(render()) == self."""
        if not self.steps:
            return "$" if self.root else "."
        parts = [_render_step(step, i == 0 and not self.root) for i, step in enumerate(self.steps)]
        text = "".join(parts)
        if self.root:
            return "$" + (text if text[0] in ".[" else "." + text)
        return text

    @property
    def wild(self) -> bool:
        return any(isinstance(s, EachKey | EachItem) for s in self.steps)

    @property
    def captures(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps if isinstance(s, EachKey | EachItem) and s.name is not None)

    @property
    def flat_key(self) -> str | None:
        """The top-level key when the path is exactly one map key, else None."""
        if len(self.steps) == 1 and isinstance(self.steps[0], Key):
            return self.steps[0].key
        return None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def fail(self, message: str) -> PathSyntaxError:
        return PathSyntaxError(f"path {self.text!r}, at character {self.i + 1}: {message}")

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.text.startswith(char, self.i):
            self.i += len(char)
            return True
        return False

    def expect(self, char: str, what: str) -> None:
        if not self.take(char):
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(f"expected {char!r} {what}, found {found}")

    def bare(self, what: str) -> str:
        match = _BARE.match(self.text, self.i)
        if not match:
            raise self.fail(f"expected {what} (letters, digits, _ or -; quote other keys: [\"...\"])")
        self.i = match.end()
        return match.group()

    def string(self) -> str:
        start = self.i
        self.i += 1  # the opening quote
        while self.i < len(self.text):
            char = self.text[self.i]
            if char == "\\":
                self.i += 2
                continue
            self.i += 1
            if char == '"':
                try:
                    return json.loads(self.text[start:self.i])
                except ValueError as exc:
                    self.i = start
                    raise self.fail(f"invalid quoted key: {exc}") from None
        self.i = start
        raise self.fail("unterminated quoted key (a JSON string: \"...\" with backslash escapes)")

    def capture(self) -> tuple[str, tuple[str, ...] | None]:
        # after "<": name [":" alternative ("|" alternative)*] ">"
        name = self.bare("a capture name after '<'")
        only = None
        if self.take(":"):
            alternatives = []
            while True:
                alternatives.append(self.string() if self.peek() == '"' else self.bare("a key after ':' or '|'"))
                if not self.take("|"):
                    break
            if len(set(alternatives)) != len(alternatives):
                raise self.fail(f"capture <{name}> lists a key twice")
            only = tuple(alternatives)
        self.expect(">", f"to close <{name}")
        return name, only


def parse(text: object, *, wildcards: bool = False) -> Path:
    """Parses a path; `wildcards` allows the `each` forms (only in a subscription's `each`)."""
    if not isinstance(text, str):
        hint = " (in YAML, quote a path that starts with '[': \"[0]\")" if isinstance(text, list) else ""
        raise PathSyntaxError(f"a path is a string, got {text!r}{hint}")
    s = _Scanner(text)
    root = s.take("$")
    if not text:
        raise PathSyntaxError("empty path (`.` is the element itself, `$` the record)")
    if text == ".":
        return Path((), text=text)
    steps: list[Step] = []
    first = True
    while s.i < len(text):
        if s.take("["):
            if s.peek() == '"':
                steps.append(Key(s.string()))
            elif s.take("*"):
                steps.append(EachItem(None))
            elif s.take("<"):
                name, only = s.capture()
                if only is not None:
                    raise s.fail(f"[<{name}:...>]: key alternatives apply to maps (.<{name}:a|b>), not lists")
                steps.append(EachItem(name))
            else:
                match = _INDEX.match(text, s.i)
                if not match:
                    raise s.fail("expected a list index (ASCII digits), a quoted key, '*' or '<name>' after '['")
                index = int(match.group())
                if abs(index) >= _INDEX_LIMIT:
                    raise s.fail(f"list index {index} is out of range")
                s.i = match.end()
                steps.append(Index(index))
            s.expect("]", "to close '['")
        else:
            dotted = s.take(".")
            if not dotted and not (first and not root):
                raise s.fail("expected '.' or '[' between steps")
            if dotted and s.peek() == "[" and first:
                continue  # `.[0]` and `$.[0]`: the leading dot is optional
            if s.take("*"):
                steps.append(EachKey(None))
            elif s.take("<"):
                steps.append(EachKey(*s.capture()))
            else:
                steps.append(Key(s.bare("a key" + (" after '.'" if dotted else ""))))
        first = False
    path = Path(tuple(steps), root=root, text=text)
    if path.wild and not wildcards:
        raise PathSyntaxError(f"path {text!r}: wildcards (*, <name>) are allowed only in `each`")
    names = path.captures
    duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if duplicate is not None:
        raise PathSyntaxError(f"path {text!r}: capture <{duplicate}> appears twice")
    return path


# ---------------------------------------------------------------------------------------------
# Walking values (the precise semantics; the generated code falls back to these)


def _is_map(value: object) -> bool:
    return type(value) is dict


def _is_list(value: object) -> bool:
    return type(value) is list or type(value) is tuple


def _kind(value: object) -> str:
    names = {dict: "a map", list: "a list", tuple: "a list", str: "a string", bytes: "binary data",
             int: "an integer", float: "a float", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def _where(path: Path, upto: int) -> str:
    if upto == 0:
        return "$" if path.root or path.wild else "."
    return Path(path.steps[:upto], path.root).render()


def _wrong(path: Path, upto: int, expected: str, value: object) -> PathError:
    return PathError("wrong_type", f"{_where(path, upto)}: expected a {expected}, got {_kind(value)} "
                                   f"(path {path})")


def resolve(path: Path, value: object) -> object:
    """The value `path` (no wildcards) reaches from `value`; None when it reaches none.

    Raises PathError("wrong_type") where a container of the other kind (or a scalar) stands
    where a map or list is needed.
    """
    for i, step in enumerate(path.steps):
        if value is None:
            return None
        if type(step) is Key:
            if not _is_map(value):
                raise _wrong(path, i, "map", value)
            value = value.get(step.key)  # type: ignore[attr-defined]
        else:
            if not _is_list(value):
                raise _wrong(path, i, "list", value)
            try:
                value = value[step.index]  # type: ignore[index, union-attr]
            except IndexError:
                return None
    return value


def _missing(path: Path, upto: int) -> PathError:
    return PathError("missing_field", f"{_where(path, upto + 1)}: no value (path {path})")


def _step_key(value: object, key: str, path: Path, upto: int) -> object:
    if not _is_map(value):
        raise _missing(path, upto - 1) if value is None else _wrong(path, upto, "map", value)
    found = value.get(key)  # type: ignore[attr-defined]
    if found is None:
        raise _missing(path, upto)
    return found


def _step_index(value: object, index: int, path: Path, upto: int) -> object:
    if not _is_list(value):
        raise _wrong(path, upto, "list", value)
    try:
        found = value[index]  # type: ignore[index]
    except IndexError:
        raise _missing(path, upto) from None
    if found is None:
        raise _missing(path, upto)
    return found


def _a_map(value: object, path: Path, upto: int) -> dict:
    if not _is_map(value):
        raise _wrong(path, upto, "map", value)
    return value  # type: ignore[return-value]


def _a_list(value: object, path: Path, upto: int) -> list | tuple:
    if not _is_list(value):
        raise _wrong(path, upto, "list", value)
    return value  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Compiling a subscription's paths


@dataclass(frozen=True)
class PathSet:
    """A subscription's compiled paths.

    `rows(record)` returns one tuple per row: the value of each source (in `sources` order,
    None where absent), then each capture's text (in `captures` order). It raises PathError.
    `is_flat`: no `each` and every source is one top-level key (`flat_keys`): the mapper's
    own `record.get(key)` fast path is exactly what rows() would compute.
    """

    sources: Mapping[str, Path]
    each: Path | None
    max_points: int
    rows: Callable[[dict], list[tuple]] = field(repr=False, compare=False)
    source_code: str = field(repr=False, compare=False)

    @property
    def captures(self) -> tuple[str, ...]:
        return self.each.captures if self.each is not None else ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.sources, *self.captures)

    @property
    def is_flat(self) -> bool:
        return self.each is None and all(p.flat_key is not None for p in self.sources.values())

    @property
    def flat_keys(self) -> dict[str, str]:
        return {name: p.flat_key for name, p in self.sources.items() if p.flat_key is not None}


class _Gen:
    """Source text of the generated function; constants are bound by name, never inlined."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}
        self.lines: list[str] = []
        self.n = 0

    def const(self, value: object) -> str:
        self.n += 1
        name = f"C{self.n}"
        self.env[name] = value
        return name

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _emit_source(gen: _Gen, indent: int, target: str, path: Path, base: str, base_is_map: bool) -> None:
    """`target = resolve(path, base)` as straight-line code: the common case is one optimistic
    expression; anything unusual (absent key, null, wrong kind) falls back to resolve()."""
    steps = path.steps
    if not steps:
        gen.emit(indent, f"{target} = {base}")
        return
    if len(steps) == 1 and type(steps[0]) is Key and base_is_map:
        gen.emit(indent, f"{target} = {base}.get({gen.const(steps[0].key)})")
        return
    slow = gen.const(path)
    gen.emit(indent, "try:")
    expr = base
    for step in steps:
        if type(step) is Key:
            expr += f"[{gen.const(step.key)}]"
        else:
            gen.emit(indent + 1, f"{target} = {expr}")
            gen.emit(indent + 1, f"if type({target}) is not list:")
            gen.emit(indent + 2, "raise TypeError")
            expr = f"{target}[{step.index}]"  # type: ignore[union-attr]
    gen.emit(indent + 1, f"{target} = {expr}")
    gen.emit(indent, "except (KeyError, IndexError, TypeError):")
    gen.emit(indent + 1, f"{target} = resolve({slow}, {base})")


def compile_paths(sources: Mapping[str, Path], each: Path | None = None, *, max_points: int = 10_000,
                  name: str = "paths") -> PathSet:
    """Compiles a subscription's paths (source name -> Path) and its optional `each` path."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    for source, path in sources.items():
        if path.wild:
            raise PathSyntaxError(f"{source}: path {path}: wildcards are allowed only in `each`")
    if each is not None and not each.wild:
        raise PathSyntaxError(f"each: path {each} has no wildcard (*, <name>): it would make one row; "
                              "use a plain path in the source instead")
    gen = _Gen()
    gen.env.update(PathError=PathError, resolve=resolve, step_key=_step_key, step_index=_step_index,
                   a_map=_a_map, a_list=_a_list, MAX=max_points, EACH=each)
    gen.emit(0, "def rows(record):")
    values = {source: gen.var("s") for source in sources}
    rooted = {s: p for s, p in sources.items() if p.root or each is None}
    for source, path in rooted.items():
        _emit_source(gen, 1, values[source], path, "record", True)
    if each is None:
        gen.emit(1, f"return [({''.join(v + ', ' for v in values.values())})]")
    else:
        gen.emit(1, "out = []")
        indent, current, captured = 1, "record", []
        for i, step in enumerate(each.steps):
            nxt = gen.var("v")
            if type(step) is Key:
                gen.emit(indent, f"{nxt} = step_key({current}, {gen.const(step.key)}, EACH, {i})")
            elif type(step) is Index:
                gen.emit(indent, f"{nxt} = step_index({current}, {step.index}, EACH, {i})")
            else:
                # Lazy loops: a hostile message costs at most max_points rows of work, plus
                # the entries it skips (null, or yielding no row), bounded by its size.
                key = gen.var("k")
                if type(step) is EachItem:
                    gen.emit(indent, f"for {key}, {nxt} in enumerate(a_list({current}, EACH, {i})):")
                elif step.only is None:
                    gen.emit(indent, f"for {key}, {nxt} in a_map({current}, EACH, {i}).items():")
                else:
                    table = gen.var("m")
                    gen.emit(indent, f"{table} = a_map({current}, EACH, {i})")
                    gen.emit(indent, f"for {key} in {gen.const(step.only)}:")
                    gen.emit(indent + 1, f"{nxt} = {table}.get({key})")
                indent += 1
                gen.emit(indent, f"if {nxt} is None:")
                gen.emit(indent + 1, "continue")
                if step.name is not None:
                    captured.append(f"str({key})" if type(step) is EachItem else key)
            current = nxt
        for source, path in sources.items():
            if source not in rooted:
                _emit_source(gen, indent, values[source], path, current, False)
        row = ", ".join([*values.values(), *captured])
        gen.emit(indent, f"out.append(({row},))")
        gen.emit(indent, "if len(out) > MAX:")
        gen.emit(indent + 1, "raise PathError('too_many_points', f'each {EACH}: more than {MAX} rows')")
        gen.emit(1, "if not out:")
        gen.emit(2, "raise PathError('no_points', f'each {EACH}: no element matched')")
        gen.emit(1, "return out")
    code = "\n".join(gen.lines)
    exec(compile(code, f"<paths {name}>", "exec"), gen.env)
    return PathSet(dict(sources), each, max_points, gen.env["rows"], code)


# ---------------------------------------------------------------------------------------------
# Topic capture


class TopicCapture:
    """Tags from the topic: the whole topic as tag `tag`, and/or the named groups of `regex`
    (matched from the topic's start, as derived_tags do: end it with `$` to anchor the end).
    A topic the regex does not match is refused (`unknown_topic`); empty or unmatched optional
    groups add no tag. Results are cached per topic (bounded)."""

    def __init__(self, tag: str | None = None, regex: str | re.Pattern[str] | None = None) -> None:
        self.tag = tag
        self.regex = re.compile(regex) if isinstance(regex, str) else regex
        if self.regex is not None and not self.regex.groupindex:
            raise PathSyntaxError("topic regex needs named groups, e.g. ^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$")
        names = ([tag] if tag else []) + list(self.regex.groupindex if self.regex else [])
        if len(set(names)) != len(names):
            raise PathSyntaxError(f"topic tag {tag!r} is also a group of the topic regex")
        self.names: tuple[str, ...] = tuple(names)
        self._cache: TextCache[tuple[tuple[str, str], ...]] = TextCache(10_000)

    def __call__(self, topic: str) -> tuple[tuple[str, str], ...]:
        found = self._cache.get(topic)
        if found is not None:
            return found
        tags: list[tuple[str, str]] = []
        if self.tag and topic:
            tags.append((self.tag, topic))
        if self.regex is not None:
            match = self.regex.match(topic)
            if match is None:
                raise PathError("unknown_topic", f"topic {topic!r} does not match {self.regex.pattern!r}")
            tags += [(g, v) for g, v in match.groupdict().items() if v]
        result = tuple(tags)
        self._cache.put(topic, result)
        return result


# ---------------------------------------------------------------------------------------------
# Keys that can never match


_FLAT_STRING_FRAMINGS = ("text_delimited",)


@dataclass(frozen=True)
class _Shape:
    """What a framing can put at a place: any value, the delimited record (keys), or a string."""

    kind: str  # "any" | "record" | "string"
    keys: tuple[str, ...] = ()


def _follow(shape: _Shape, step: Step, where: str, framing: str) -> tuple[_Shape | None, str | None]:
    if shape.kind == "any":
        return shape, None
    if shape.kind == "string":
        return None, f"{where} is a string (framing {framing} yields only string values), nothing is under it"
    # the decoded record: a map of exactly these keys (text_delimited) or of anything (others)
    if isinstance(step, Index | EachItem):
        return None, f"{where or 'the record'} is a map, not a list"
    if framing not in _FLAT_STRING_FRAMINGS:
        return _Shape("any"), None
    if isinstance(step, Key):
        if step.key not in shape.keys:
            return None, f"framing {framing} yields only the keys {', '.join(map(repr, shape.keys))}"
        return _Shape("string"), None
    present = [k for k in (step.only or shape.keys) if k in shape.keys]
    if not present:
        return None, f"framing {framing} yields only the keys {', '.join(map(repr, shape.keys))}"
    return _Shape("string"), None


def _walk_shape(path: Path, start: _Shape, framing: str) -> tuple[_Shape | None, str | None]:
    shape: _Shape | None = start
    for i, step in enumerate(path.steps):
        assert shape is not None
        shape, why = _follow(shape, step, Path(path.steps[:i], path.root).render() if i else "", framing)
        if shape is None:
            return None, why
    return shape, None


def map_form_hint(source: str, key: str) -> str:
    """How to write `key` (given as a literal key) as the path it looks like: the map form of
    the source it was given in (a literal key form cannot hold a path)."""
    try:
        path = parse(key)
    except PathSyntaxError as exc:
        return f"it is not a path either ({exc}): quote the key as it is sent, or fix the path"
    if path.wild:
        return "a path with wildcards belongs in `each`, not in a tag or field"
    text = path.render()
    last = next((s.key for s in reversed(path.steps) if isinstance(s, Key)), None)
    if source.startswith("mapping.fields."):
        name = last or source[len("mapping.fields."):]
        form = f"fields: {{{_word(name)}: {{path: '{text}', type: <its type>}}}}"
    elif source.startswith("mapping.tags."):
        name = last or source[len("mapping.tags."):]
        form = f"tags: {{{_word(name)}: '{text}'}}"
    elif source == "mapping.time":
        form = f"time: {{path: '{text}', format: <its format>}}"
    elif source.startswith("mapping.derived_tags["):
        form = f"derived_tags: [{{path: '{text}', regex: ...}}]"
    else:
        form = f"measurement_path: '{text}'"
    return f"to read the path {text}, use the map form: {form}"


def topic_warnings(subscription: str, topics: Sequence[str], regex: re.Pattern[str] | None) -> list[str]:
    """A topic regex that no topic of the subscription's prefixes can match: every message would be
    refused `unknown_topic`. Decided on the regex's literal start (`^abc...`): a prefix and that
    start must agree on their common length."""
    if regex is None:
        return []
    pattern = regex.pattern
    literal = ""
    if pattern.startswith("^"):
        for char in pattern[1:]:
            if char in ".^$*+?{}[]\\|()":
                break
            literal += char
    if not literal:
        return []
    # A quantifier right after the literal start makes its last character optional.
    rest = pattern[1 + len(literal):]
    if rest[:1] in ("*", "?", "{"):
        literal = literal[:-1]
    dead = [t for t in topics if not (t.startswith(literal) or literal.startswith(t))]
    if not dead or len(dead) < len(topics):
        return []
    return [f"subscription {subscription!r}: mapping.topic.regex {pattern!r} can never match a topic starting "
            f"with {', '.join(map(repr, topics))} (the subscription's topic prefixes): every message would be "
            f"refused unknown_topic"]


def shared_time_warnings(subscription: str, paths: PathSet) -> list[str]:
    """With `each`, points of one message share the message's time unless the time is read per
    element; an element step captured nowhere (`*`, `[*]`) leaves such points in one series, so
    the uniqueness rule moves them to t+1, t+2 ns: say so, and how to keep exact times."""
    if paths.each is None:
        return []
    time = paths.sources.get("mapping.time")
    per_element = time is not None and not time.root and not time.literal
    uncaptured = [s for s in paths.each.steps if isinstance(s, EachKey | EachItem) and s.name is None]
    if per_element or not uncaptured:
        return []
    where = "the receive time" if time is None else f"the message's time ({time})"
    return [f"subscription {subscription!r}: each: {paths.each} captures no name for "
            f"{', '.join(_render_step(s, False) for s in uncaptured)}: its points share {where} in one series and "
            f"are moved to t+1, t+2 ns (uniqueness); capture it (e.g. [<level>], .<key>) to keep exact times"]


def unreachable(subscription: str, framing: str, field_order: Sequence[str], paths: PathSet) -> list[str]:
    """Messages for sources that can never reach a value of any record this framing decodes
    (for `check-config` to print as warnings), naming the subscription and the source.

    - text_delimited records are flat maps of strings with exactly the `field_order` keys: a
      key outside it, anything below a value, any list step can never match;
    - every framing decodes a map: a list step on the record can never match;
    - a literal key (the flat forms `tags: [name]`, `fields: {name: type}`, `time.field`) that
      holds `.` or `[` is one key with that name, never a nested path: said as a warning, since
      a JSON or msgpack producer may really send such a key.
    """
    record = _Shape("record", tuple(field_order))
    out: list[str] = []
    element: _Shape | None = record
    if paths.each is not None:
        element, why = _walk_shape(paths.each, record, framing)
        if element is None:
            out.append(f"subscription {subscription!r}: each: path {paths.each} can never match: {why}")
    for source, path in paths.sources.items():
        if path.literal and framing not in _FLAT_STRING_FRAMINGS and re.search(r"[.\[$]", path.steps[0].key):  # type: ignore[union-attr]
            key = path.steps[0].key  # type: ignore[union-attr]
            out.append(f"subscription {subscription!r}: {source}: {key!r} matches only a key spelled "
                       f"exactly so, not a nested value; {map_form_hint(source, key)}")
            continue
        start = record if (path.root or paths.each is None) else element
        if start is None:
            continue  # the each path already said why
        shape, why = _walk_shape(path, start, framing)
        if shape is None:
            out.append(f"subscription {subscription!r}: {source}: path {path} can never match: {why}")
    return out
