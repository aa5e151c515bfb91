"""Measured figures live in docs/benchmarks.md (the last `make bench`) and docs/performance.md,
not in copies that drift from the run they came from: no README carries a date outside its
examples (code), none says how long the bench takes, and a doc that cites docs/benchmarks.md
next to a date gives that file's date."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", ROOT / "bridge" / "README.md", *sorted((ROOT / "roles").glob("*/README.md"))]
DATE = re.compile(r"\b20\d\d-\d\d-\d\d(?:[ T]\d\d:\d\d(?: UTC)?)?")


def prose(text: str) -> str:
    """The text without code blocks, code spans (examples: `--start 2026-11-24T00:00:00Z`) and the
    blocks generated from the code (tests/docs/generate.py)."""
    text = re.sub(r"<!-- BEGIN .*?<!-- END [^>]*-->", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def test_no_readme_carries_a_dated_figure_or_the_benchs_duration():
    found = []
    for readme in READMES:
        text = readme.read_text(encoding="utf-8")
        found += [f"{readme.relative_to(ROOT)}: {m}" for m in DATE.findall(prose(text))]
        found += [f"{readme.relative_to(ROOT)}: {line.strip()}" for line in text.splitlines()
                  if "bench/run.py" in line and re.search(r"\d+\s*(?:s|min|minutes?|seconds?)\b", line)]
    assert not found, "dated figures (they belong to docs/benchmarks.md, docs/performance.md):\n" + "\n".join(found)


def test_a_doc_citing_benchmarks_md_gives_its_date():
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    measured = re.search(r"Measured by `make bench` on (20\d\d-\d\d-\d\d(?: \d\d:\d\d UTC)?)", benchmarks).group(1)
    wrong = []
    for doc in [*READMES, *sorted((ROOT / "docs").glob("*.md"))]:
        if doc.name == "benchmarks.md":
            continue
        for paragraph in doc.read_text(encoding="utf-8").split("\n\n"):
            if "benchmarks.md" not in paragraph:
                continue
            for sentence in re.split(r"(?<=[.;])\s", paragraph):
                if "benchmarks.md" in sentence:
                    wrong += [f"{doc.relative_to(ROOT)}: {date} (docs/benchmarks.md: {measured})"
                              for date in DATE.findall(sentence) if not measured.startswith(date)
                              and not date.startswith(measured)]
    assert not wrong, "\n".join(wrong)
