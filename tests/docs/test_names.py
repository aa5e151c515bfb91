"""Every variable-like name the docs give under a role's or a playbook's prefix (`bridge_feeds`,
`rollout_max_unreachable`, `backfill_since`, `station_repo_exclusive`, a metric such as
`bridge_pending_points`) exists as a word in the code: the roles, playbooks, inventories,
molecule scenarios, plugins, the bridge's package, or ansible-core's own routing (the bare module
names the influxdb role's README explains). A renamed or removed variable leaves no stale name in
a README. A name ending in `_` (`bridge_write_seconds_*`) is a family: some word starts with it."""

from __future__ import annotations

import re
from pathlib import Path

import ansible

ROOT = Path(__file__).resolve().parents[2]
CODE = ["roles/**/*.yml", "roles/**/*.j2", "playbooks/**/*.yml", "inventories/**/*.yml", "molecule/**/*.yml",
        "molecule/**/*.py", "plugins/**/*.py", "bridge/src/**/*.py", "lab/**/*.yml", "Makefile"]
DOCS = [ROOT / "README.md", ROOT / "bridge" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "bridge" / "docs").glob("*.md")), *sorted((ROOT / "roles").glob("*/README.md"))]


def test_every_prefixed_name_the_docs_give_exists_in_the_code():
    words: set[str] = set()
    for pattern in CODE:
        for path in ROOT.glob(pattern):
            words |= set(re.findall(r"[a-z0-9_]+", path.read_text(encoding="utf-8", errors="replace")))
    routing = Path(ansible.__file__).parent / "config" / "ansible_builtin_runtime.yml"
    words |= set(re.findall(r"[a-z0-9_]+", routing.read_text(encoding="utf-8")))
    prefixes = {p.name for p in (ROOT / "roles").iterdir() if p.is_dir()}
    prefixes |= {p.stem for p in (ROOT / "playbooks").glob("*.yml")} | {"vault", "backup", "restore"}
    # In a code span, or passed as an extra variable (`-e backfill_window=2d`, `-e '{"rollout_serial": ...}'`).
    names = "|".join(sorted(prefixes, key=len, reverse=True))
    pattern = re.compile(r"(?:`|-e |-e '\{\"|\{\")((?:%s)_[a-z0-9_]+)" % names)
    missing, seen = [], 0
    for doc in DOCS:
        for name in sorted(set(pattern.findall(doc.read_text(encoding="utf-8")))):
            seen += 1
            exists = any(w.startswith(name) for w in words) if name.endswith("_") else name in words
            if not exists:
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert seen > 300
    assert not missing, "names the docs give that no code has:\n" + "\n".join(missing)


def test_every_environment_variable_the_docs_name_is_read_somewhere():
    """`STATION_BRIDGE_PURE`, `STATION_LAB_IMAGE`, `STATION_VALIDATE_INFLUX_PASSWORD`: each appears in
    a file of the checkout that is not a doc (a name with a placeholder, `..._<NAME>_...`, aside)."""
    import subprocess
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    words: set[str] = set()
    for name in tracked.split("\0"):
        path = ROOT / name
        if name and not name.endswith(".md") and path.is_file() and path.suffix not in (".png", ".gz", ".whl", ".deb"):
            words |= set(re.findall(r"[A-Z0-9_]+", path.read_text(encoding="utf-8", errors="replace")))
    missing, seen = [], 0
    for doc in DOCS:
        for name in sorted(set(re.findall(r"\b((?:STATION|MOLECULE)_[A-Z0-9_]+)\b(?!<)",
                                          doc.read_text(encoding="utf-8")))):
            seen += 1
            if name not in words:
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert seen > 5
    assert not missing, "environment variables the docs name that nothing reads:\n" + "\n".join(missing)
