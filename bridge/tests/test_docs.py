"""Docs that cannot drift (issue 23): the metrics the README lists are exactly those the code
emits, each with its HELP text, and exactly those a running bridge serves (but for a commented
allowlist of metrics that need an event); the configuration reference is the code's (test_stages)
and the README embeds it verbatim (tests/docs/test_generated.py)."""

from __future__ import annotations

import re
from pathlib import Path

from station_bridge.metrics import HELP

ROOT = Path(__file__).resolve().parents[1]


def emitted_in_code() -> set[str]:
    """Every metric name the package's code passes to the metrics (string literals bridge_*),
    HELP's own keys excluded."""
    names: set[str] = set()
    for path in (ROOT / "src" / "station_bridge").glob("**/*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name == "metrics.py":
            text = text[text.index("\n}\n"):]
        names |= set(re.findall(r'"(bridge_[a-z_]+)"', text))
    return names


def listed_in_readme() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Metrics"):text.index("\n## ", text.index("## Metrics") + 3)]
    return set(re.findall(r"`(bridge_[a-z_]+)", section))


def test_every_metric_the_code_emits_has_help_and_is_listed_and_none_is_listed_that_is_not_emitted():
    code, listed = emitted_in_code(), listed_in_readme()
    assert code - set(HELP) == set(), "emitted without HELP text"
    assert set(HELP) - code == set(), "HELP text for a metric nothing emits"
    assert code - listed == set(), "emitted but not in the README's metrics list"
    assert listed - code == set(), "in the README's metrics list but never emitted"


def _reference() -> dict:
    import yaml
    return yaml.safe_load((ROOT / "src" / "station_bridge" / "default-config.yml").read_text(encoding="utf-8"))


def test_the_readmes_configuration_overview_names_every_key_of_the_reference_and_no_other():
    """The overview in "Configuration" lists the top-level sections and each destination's and
    subscription's keys: each must be a key of default-config.yml (itself tested against the code),
    and each key there must be named in it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    overview = text[text.index("## Configuration"):text.index("\n### ", text.index("## Configuration"))]
    words = set(re.findall(r"[a-z][a-z0-9_]*", overview))
    reference = _reference()
    wanted = set(reference) | set(reference["destinations"][0]) | set(reference["subscriptions"][0])
    aliases = {"url": "url", "database": "database", "retention_policy": "retention", "username": "credentials",
               "password": "credentials", "name": "name", "endpoints": "endpoints", "mapping": "mapping"}
    missing = {key for key in wanted if aliases.get(key, key) not in words}
    assert not missing, f"keys of default-config.yml the README's overview does not name: {sorted(missing)}"
    everything: set[str] = set()

    def keys(node: object) -> None:
        if isinstance(node, dict):
            everything.update(node)
            for value in node.values():
                keys(value)
        elif isinstance(node, list):
            for value in node:
                keys(value)
    keys(reference)
    # A value the overview names (`text_delimited`) is one the reference names too.
    reference_text = (ROOT / "src" / "station_bridge" / "default-config.yml").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z][a-z0-9_]*)`", overview)) - {"null"}
    unknown = {name for name in named if name not in everything and not re.search(rf"\b{name}\b", reference_text)}
    assert not unknown, f"named in the overview, not in the reference: {sorted(unknown)}"


# Listed metrics a running bridge serves only after an event this test does not provoke (a
# labelled counter has no sample before its first increment). Each is emitted by name in the
# package (test_every_metric_the_code_emits... proves it); the test below fails when one of them is
# served after all (drop it from here) or when a listed metric is neither served nor here.
ONLY_AFTER_AN_EVENT = {
    # binning (a subscription with `binning`): a series evicted, a gap not filled, a bin skipped
    "bridge_binning_evicted_total", "bridge_binning_gaps_total", "bridge_binning_skipped_total",
    # the Redis cache (`cache` configured): updates, drops, errors, its queue
    "bridge_cache_dropped_total", "bridge_cache_errors_total", "bridge_cache_queue", "bridge_cache_updates_total",
    # dead letters that could not be written, were discarded (full) or truncated (too large)
    "bridge_dead_letter_errors_total", "bridge_dead_letters_discarded_total", "bridge_dead_letters_truncated_total",
    # a destination's backend dropping fields or points (numeric_only, time_resolution)
    "bridge_dropped_fields_total", "bridge_dropped_points_total",
    # /metrics and /healthz: connections refused over http.max_connections, requests timed out
    "bridge_http_refused_total", "bridge_http_timeouts_total",
    # the intake log or the journal failing or damaged, a ledger reset, points recovered at start
    "bridge_intake_errors_total", "bridge_journal_damaged_records_total", "bridge_ledger_resets_total",
    "bridge_recovered_points_total",
    # a destination failing: its writes, points journaled, a sink restarted, a stage's error
    "bridge_write_errors_total", "bridge_journaled_points_total", "bridge_sink_restarts_total",
    "bridge_stage_errors_total",
    # ZeroMQ: a handshake failed, a subscription's socket could not start, a dropped connection
    # libzmq does not retry re-opened
    "bridge_subscription_handshake_failures_total", "bridge_subscription_start_errors_total",
    "bridge_subscription_reconnects_total",
    # the uniqueness window's file unreadable or unwritable
    "bridge_uniqueness_restore_errors_total", "bridge_uniqueness_save_errors_total",
}


def test_every_metric_a_running_bridge_serves_is_documented_and_every_documented_one_is_served(
        tmp_path, influxd, database, endpoint, zmq_context):
    """Both directions on a real bridge: after the demo's ticks and a few events provoked here (a
    heartbeat ignored, a message refused and dead-lettered, one without its time field, the
    publisher gone and back, self-metrics, a SIGHUP), every served metric is listed and every
    listed one is served, but for ONLY_AFTER_AN_EVENT; the self-metrics points it writes carry
    exactly the tags and fields "Self-metrics" lists."""
    import signal

    import msgpack
    from harness import BridgeProcess, publisher, quiet_ledger, subscribed, wait_for

    from station_bridge.demo import publish
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"ignore": [{"name": "heartbeat", "path": "type", "in": ["HEARTBEAT"]}]},
                           self_metrics={"interval": "1s", "measurement": "doc_test_bridge",
                                         "feed_measurement": "doc_test_bridge_feed", "instance": "doc_test"}).start()
    publish(endpoint, "kraken_tick", 50, rate=0, duration=20)
    socket = publisher(zmq_context, endpoint)
    subscribed(socket, "kraken_tick")
    socket.send_multipart([b"kraken_tick", msgpack.packb({"type": "HEARTBEAT"})])
    socket.send_multipart([b"kraken_tick", b"\xc1 not msgpack"])
    socket.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "XBTUSD", "bid": 1.0, "ask": 2.0,
                                                          "volume": 3, "seq": 1})])
    bridge.process.send_signal(signal.SIGHUP)
    wanted = {"bridge_ignored_messages_total", "bridge_rejected_messages_total", "bridge_dead_letters_total",
              "bridge_timestamp_fallbacks_total", "bridge_reloads_total", "bridge_signals_total",
              "bridge_self_points_total"}
    wait_for(lambda: wanted <= {name for name, _ in bridge.samples()}, 30, "the provoked events' metrics",
             detail=lambda: str(sorted(wanted - {name for name, _ in bridge.samples()})))
    samples = quiet_ledger(bridge)
    served = {name for name, _ in samples}
    listed = listed_in_readme()
    assert ONLY_AFTER_AN_EVENT - (listed & emitted_in_code()) == set(), "allowlisted, no longer listed or emitted"
    assert served - set(HELP) == set()
    assert served - listed == set(), "served but not in the README's metrics list"
    assert listed - served - ONLY_AFTER_AN_EVENT == set(), "listed, emitted by no running bridge here"
    assert served & ONLY_AFTER_AN_EVENT == set(), "served without its event: drop it from ONLY_AFTER_AN_EVENT"
    # "Self-metrics": each measurement's tags and fields as the README lists them, both ways.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Self-metrics"):text.index("\n## ", text.index("### Self-metrics"))]
    bullets = dict(re.findall(r"(?ms)^- `(station_bridge(?:_feed)?)`(.*?)(?=^- |\Z)", section))
    assert set(bullets) == {"station_bridge", "station_bridge_feed"}
    for documented, written in (("station_bridge", "doc_test_bridge"), ("station_bridge_feed", "doc_test_bridge_feed")):
        keys: set[str] = set()
        wait_for(lambda w=written, k=keys: k.update(
            r["fieldKey"] for r in influxd.query(f"SHOW FIELD KEYS FROM {w}", db=database)) or k, 15, written)
        keys |= {r["tagKey"] for r in influxd.query(f"SHOW TAG KEYS FROM {written}", db=database)}
        named = set(re.findall(r"`([a-z_]+)`", bullets[documented]))
        assert named == keys, f"{documented}: listed, not written {sorted(named - keys)}; written, not listed " \
                              f"{sorted(keys - named)}"
    assert bridge.stop() == 0


def _commands() -> list[tuple[str, str]]:
    """(file, command line) of every `station-bridge ...` the docs give as a command: a code span
    that starts with it, or a code block's line (its comment cut off)."""
    files = [ROOT / "README.md", ROOT.parent / "README.md", *sorted((ROOT.parent / "docs").glob("*.md")),
             *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT.parent / "roles").glob("*/README.md"))]
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [re.sub(r"(^|\s)#.*", "", line) for block in blocks for line in block.splitlines()]
        spans = re.findall(r"`(station-bridge [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in [*lines, *spans]:
            for m in re.finditer(r"(?:^|[\s;|&(])station-bridge( [^|&;]*)", line):
                out.append((path.name, "station-bridge" + m.group(1).rstrip()))
    return out


def test_every_station_bridge_command_the_docs_give_parses():
    """Each documented subcommand exists and takes each `--option` the docs give it."""
    import argparse

    from station_bridge.cli import parser
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = _commands()
    assert len(commands) > 15
    wrong = []
    for name, line in commands:
        words = line.split()
        if len(words) < 2 or words[1].startswith("<"):
            continue
        subcommand = sub.choices.get(words[1])
        if subcommand is None:
            wrong.append(f"{name}: {line}: no subcommand {words[1]!r}")
            continue
        options = {o for a in subcommand._actions for o in a.option_strings}
        wrong += [f"{name}: {line}: {words[1]} has no {w.split('=')[0]}" for w in words[2:]
                  if w.startswith("--") and w.split("=")[0] not in options]
    assert not wrong, "\n".join(wrong)


CGROUP_FILES = {"memory.max", "memory.limit_in_bytes"}  # the kernel's, not configuration keys


def test_every_dotted_configuration_key_the_docs_name_is_in_the_reference():
    """`journal.max_bytes`, `cache.queue_max`, `health.handshake_grace`: a section of
    default-config.yml and a key of it (a commented example key of a section that is null by
    default counts: `cache` is off unless configured)."""
    reference = (ROOT / "src" / "station_bridge" / "default-config.yml").read_text(encoding="utf-8")
    chunks = dict(re.findall(r"(?ms)^([a-z_]+):(.*?)(?=^[a-z_]+:|\Z)", reference))
    files = [ROOT / "README.md", ROOT.parent / "README.md", *sorted((ROOT.parent / "docs").glob("*.md")),
             *sorted((ROOT / "docs").glob("*.md"))]
    wrong, seen = [], 0
    for path in files:
        for name, _ in re.findall(rf"`(({'|'.join(chunks)})\.[a-z_.]+)`", path.read_text(encoding="utf-8")):
            if name in CGROUP_FILES or re.search(r"\.(py|yml|bin|target|json)$", name):
                continue
            seen += 1
            section, *keys = name.split(".")
            if not all(re.search(rf"(?m)^[\s#]*-?\s*{key}:", chunks[section]) for key in keys):
                wrong.append(f"{path.name}: {name}")
    assert seen > 10
    assert not wrong, "dotted keys the docs name that default-config.yml does not have:\n" + "\n".join(wrong)


def test_the_validation_sections_option_defaults_are_the_parsers():
    """"(`--window`, 10 s)" in "Validation" is `station-bridge validate`'s default."""
    import argparse

    from station_bridge.cli import parser
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    defaults = {o: a.default for a in sub.choices["validate"]._actions for o in a.option_strings}
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Validation"):text.index("\n## ", text.index("## Validation") + 3)]
    stated = re.findall(r"`(--[a-z-]+)`(?:, | \()(\d+(?:\.\d+)?) s\b", section)
    assert len(stated) >= 4
    assert [(o, float(n)) for o, n in stated] == [(o, defaults.get(o)) for o, _ in stated]


def test_the_readmes_configuration_reference_is_what_print_config_prints(capsys):
    """The block tests/docs/generate.py embeds is `station-bridge print-config`'s output, verbatim."""
    from station_bridge.cli import main
    main(["print-config"])
    printed = capsys.readouterr().out
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    begin = text.index("<!-- BEGIN configuration reference")
    block = text[text.index("```yaml\n", begin) + len("```yaml\n"):text.index("```\n<!-- END configuration reference")]
    assert block == printed
