"""Docs that cannot drift (issue 23): the metrics the README lists are exactly those the code
emits, each with its HELP text; the configuration reference is the code's (test_stages)."""

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


def test_every_metric_a_running_bridge_serves_is_documented(tmp_path, influxd, database, endpoint):
    from harness import BridgeProcess, quiet_ledger

    from station_bridge.demo import publish
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    publish(endpoint, "kraken_tick", 50, rate=0, duration=20)
    samples = quiet_ledger(bridge)
    served = {name for name, _ in samples}
    assert served - set(HELP) == set()
    assert served - listed_in_readme() == set()
    assert len(served) > 30
    assert bridge.stop() == 0
