"""The top-level README's lists against the code they describe: the tags against
`ansible-playbook --list-tags` of playbooks/site.yml (both ways), the order of roles/station's
list, the molecule scenarios against molecule/*/ (also docs/testing.md's), every path of the
Layout table, every make target and playbook the docs name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = [ROOT / "README.md", ROOT / "bridge" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "bridge" / "docs").glob("*.md")), *sorted((ROOT / "roles").glob("*/README.md"))]


def ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else shutil.which("ansible-playbook") or "ansible-playbook"


def test_the_tag_list_is_what_ansible_playbook_lists():
    start = README.index("Tags per concern:")
    paragraph = README[start:README.index("`--check --diff`", start)]
    documented = set(re.findall(r"`([a-z_]+)`", paragraph))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_HOME": os.environ.get("ANSIBLE_HOME", str(ROOT / ".cache" / "ansible"))}
    run = subprocess.run([ansible_playbook(), "-i", str(ROOT / "inventories" / "fleet-example"), "--list-tags",
                          str(ROOT / "playbooks" / "site.yml")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    listed = {tag for tags in re.findall(r"TAGS: \[([^\]]*)\]", run.stdout) for tag in re.split(r",\s*", tags) if tag}
    listed -= {"always"}
    assert len(listed) > 10, run.stdout
    assert documented - listed == set(), "in the README's tag list, no task carries it"
    assert listed - documented == set(), "a tag of site.yml the README's tag list misses"
    # The role names among them are roles.
    roles_part = paragraph[paragraph.index("each role's name"):]
    assert {t for t in re.findall(r"`([a-z_]+)`", roles_part)} <= {p.name for p in (ROOT / "roles").iterdir()}


def test_the_roles_said_to_have_a_preflight_have_one_and_no_other():
    stated = re.search(r"the roles whose values need more than a type\s+check \(([^)]*)\)", README)
    assert stated, "the README no longer lists the roles with a tasks/preflight.yml (update this test)"
    named = set(re.findall(r"`([a-z_]+)`", stated.group(1)))
    assert named == {p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "preflight.yml").is_file()}


def test_the_order_of_roles_station_is_its_meta_list():
    stated = re.search(r"`roles/station` runs ((?:`[a-z_]+`,?\s+(?:and\s+)?)+)in that order", README)
    assert stated, "the README no longer states roles/station's order (update this test)"
    order = re.findall(r"`([a-z_]+)`", stated.group(1))
    meta = yaml.safe_load((ROOT / "roles" / "station" / "meta" / "main.yml").read_text(encoding="utf-8"))
    assert order == [d["role"] if isinstance(d, dict) else d for d in meta["dependencies"]]


SCENARIOS = {p.name for p in (ROOT / "molecule").iterdir() if p.is_dir() and not p.name.startswith("_")}


def test_the_readmes_scenarios_are_molecules():
    row = re.search(r"(?m)^\| `molecule/` \| (.*) \|$", README).group(1)
    assert set(re.findall(r"`([a-z_]+)` \(", row)) == SCENARIOS


def test_docs_testing_describes_every_scenario():
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    assert set(re.findall(r"(?m)^- `([a-z_]+)`:", text)) == SCENARIOS


def test_every_path_the_layout_table_names_exists():
    layout = README[README.index("## Layout"):README.index("\n## ", README.index("## Layout") + 3)]
    missing = []
    for cell in re.findall(r"(?m)^\| ([^|]+) \|", layout):
        names = re.findall(r"`([^`]+)`", cell)
        base = ""
        for name in names:
            path = ROOT / (base + name if "/" not in name else name)
            if "/" in name:
                base = name.rsplit("/", 1)[0] + "/" if not name.endswith("/") else ""
            if not path.exists():
                missing.append(name)
    assert not missing, f"in the Layout table, no such path: {missing}"


def test_the_layout_table_lists_every_role_and_playbook():
    layout = README[README.index("## Layout"):README.index("\n## ", README.index("## Layout") + 3)]
    missing = [f"roles/{p.name}/" for p in sorted((ROOT / "roles").iterdir())
               if p.is_dir() and f"`roles/{p.name}/`" not in layout]
    missing += [f"playbooks/{p.name}" for p in sorted((ROOT / "playbooks").glob("*.yml"))
                if f"`playbooks/{p.name}`" not in layout and f"`{p.name}`" not in layout]
    assert not missing, f"not in the README's Layout table: {missing}"


def test_the_layout_table_names_every_module_filter_and_callback():
    """`influxdb1_*` covers the InfluxDB modules; every other plugin is named."""
    row = re.search(r"(?m)^\| `galaxy.yml`, `meta/runtime.yml`, `plugins/` \| (.*) \|$", README).group(1)
    named = re.findall(r"`([a-z0-9_]+\*?)`", row)
    plugins = [p.stem for kind in ("modules", "callback", "action") for p in (ROOT / "plugins" / kind).glob("*.py")]
    plugins += [p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml") if not p.stem.endswith("_error")]
    missing = [p for p in plugins if not any(p == n or (n.endswith("*") and p.startswith(n[:-1])) for n in named)]
    assert not missing, f"plugins the README's Layout table does not name: {missing}"


def test_every_make_target_the_docs_name_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"(?m)^([a-z][a-z0-9_-]*)(?: [a-z][a-z0-9_ -]*)?:", makefile))
    targets |= {t for line in re.findall(r"(?m)^([a-z][a-z0-9_ -]*):", makefile) for t in line.split()}
    unknown = []
    for doc in DOCS:
        for target in re.findall(r"`make ([a-z][a-z0-9_-]*)", doc.read_text(encoding="utf-8")):
            if target not in targets:
                unknown.append(f"{doc.relative_to(ROOT)}: make {target}")
    assert not unknown, "\n".join(unknown)


def test_every_playbook_and_repository_path_the_docs_name_exists():
    """A backticked path under one of the checkout's top directories (`playbooks/backfill.yml`,
    `roles/fleet/README.md`, `molecule/_shared/`) exists; a bare playbook name (`restore.yml`)
    next to one is a playbook."""
    tops = "|".join(["playbooks", "roles", "molecule", "inventories", "tests", "lab", "docs", "plugins", "bridge"])
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for path in re.findall(rf"`((?:{tops})/[A-Za-z0-9_./@-]*)`", text):
            if "<" in path or "*" in path:
                continue
            bases = [ROOT, doc.parent] + ([ROOT / "bridge"] if "bridge" in doc.relative_to(ROOT).parts else [])
            if not any((base / path).exists() for base in bases):
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert not missing, "paths the docs name that do not exist:\n" + "\n".join(missing)


def test_every_file_name_the_docs_give_exists_or_is_made_by_the_code():
    """A backticked file name (`test_links.py`, `override.conf.j2`, `fleet-overview-vm.json`) is a
    file of the checkout, or one the code writes (its name appears in a file that is not a doc)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    paths = [p for p in tracked.split("\0") if p]
    names = {Path(p).name for p in paths}
    code = "\n".join((ROOT / p).read_text(encoding="utf-8", errors="replace") for p in paths
                     if not p.endswith(".md") and (ROOT / p).is_file()
                     and Path(p).suffix not in (".png", ".gz", ".whl", ".deb", ".so"))
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for name in sorted(set(re.findall(r"`([A-Za-z0-9_./@-]+\.(?:py|yml|yaml|j2|sh|c|json|toml|cfg|txt))`", text))):
            base = Path(name).name
            if base not in names and not any(p.endswith(name) for p in paths) and base not in code:
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing, "file names the docs give that nothing has:\n" + "\n".join(missing)


def test_docs_testing_gives_each_molecule_stage_the_makefiles_scenarios():
    """"`molecule-a` (scenarios `station`, `redis`)" is the Makefile's MOLECULE_A."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    lanes = {f"molecule-{m.group(1).lower()}": m.group(2).split()
             for m in re.finditer(r"(?m)^MOLECULE_([A-Z]) := (.*)$", makefile)}
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    stated = {stage: re.findall(r"`([a-z_]+)`", names)
              for stage, names in re.findall(r"`(molecule-[a-z])`\s+\(scenarios?\s+([^)]*)\)", text)}
    assert stated == lanes
