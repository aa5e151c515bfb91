"""Each role's README against the role: its tag table names exactly the tags its tasks carry (besides
the role's own name and `always`) with tasks files that exist, every variable a README table names is
declared (defaults or argument spec), and every default is in the argument spec with a description."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())


def task_tags(role: Path, tasks_file: Path, seen: set[Path] | None = None) -> set[str]:
    """Tags on the tasks of a file, its blocks and the files it imports (statically: import_tasks)."""
    seen = seen if seen is not None else set()
    if tasks_file in seen or not tasks_file.is_file():
        return set()
    seen.add(tasks_file)
    tags: set[str] = set()

    def walk(tasks: list) -> None:
        for task in tasks or []:
            value = task.get("tags", [])
            tags.update([value] if isinstance(value, str) else value)
            for key in ("block", "rescue", "always"):
                walk(task.get(key))
            imported = task.get("ansible.builtin.import_tasks") or task.get("import_tasks")
            if isinstance(imported, str) and "{{" not in imported:
                tags.update(task_tags(role, role / "tasks" / imported, seen))

    walk(yaml.safe_load(tasks_file.read_text(encoding="utf-8")))
    return tags


def role_defaults(role: Path) -> set[str]:
    path = role / "defaults" / "main.yml"
    return set(yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else set()


def spec_options(role: Path) -> dict:
    path = role / "meta" / "argument_specs.yml"
    if not path.is_file():
        return {}
    out: dict = {}
    for entry in yaml.safe_load(path.read_text(encoding="utf-8"))["argument_specs"].values():
        out.update(entry.get("options") or {})
    return out


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_the_tag_table_is_the_roles_tags(role):
    text = (role / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"(?m)^\| ((?:`[a-z_]+`(?: \(always(?: runs)?\))?(?:, )?)+) \| "
                      r"((?:`tasks/[^`]+`(?:, )?)+) \|", text)
    documented = {tag for tags, _ in rows for tag in re.findall(r"`([a-z_]+)`", tags)}
    documented |= set(re.findall(r"\b[Tt]ag `([a-z_]+)`", text))  # a sub-tag named in prose
    files = [f for _, names in rows for f in re.findall(r"`(tasks/[^`]+)`", names)]
    assert not [f for f in files if not (role / f).is_file()], "tasks files the README names that do not exist"
    actual = task_tags(role, role / "tasks" / "main.yml") - {"always", role.name}
    assert documented == actual, f"README documents {sorted(documented)}, the tasks carry {sorted(actual)}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_variable_named_in_a_readme_table_is_declared(role):
    text = (role / "README.md").read_text(encoding="utf-8")
    defaults = role_defaults(role)
    outputs = role / "vars" / "main.yml"  # what the role computes for the others, documented as such
    declared = defaults | set(spec_options(role)) | (set(yaml.safe_load(outputs.read_text(encoding="utf-8")) or {})
                                                     if outputs.is_file() else set())
    first_cells = re.findall(r"(?m)^\| ([^|]*`[a-z][a-z0-9_]+`[^|]*) \|", text)
    named = {m for cell in first_cells for m in re.findall(r"`([a-z][a-z0-9_]+)`", cell)
             if m.startswith(role.name + "_")}
    assert named <= declared, f"named in README but declared nowhere: {sorted(named - declared)}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_in_the_argument_spec_with_a_description(role):
    defaults = role_defaults(role)
    options = spec_options(role)
    assert defaults <= set(options), f"defaults without an argument spec: {sorted(defaults - set(options))}"
    assert not [name for name, o in options.items() if not o.get("description")], "options without a description"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_declared_variable_is_named_in_a_readme_table(role):
    """The other direction: each default and argument-spec option is in a table of the README (its
    own, or the one tests/docs/generate.py writes from the argument spec between its markers)."""
    text = (role / "README.md").read_text(encoding="utf-8")
    first_cells = re.findall(r"(?m)^\| ([^|]*`[a-z][a-z0-9_]+`[^|]*) \|", text)
    named = {m for cell in first_cells for m in re.findall(r"`([a-z][a-z0-9_]+)`", cell)}
    missing = (role_defaults(role) | set(spec_options(role))) - named
    assert not missing, (f"declared but in no table of {role.name}/README.md: {sorted(missing)} "
                         "(add them to its table, or add the generated table's markers and run `make docs`)")


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_the_default_a_readme_table_gives_is_the_roles(role):
    """A hand-written row `| `var` | `value` |` states var's default: it is defaults/main.yml's
    (compared as YAML; a default computed by Jinja is described in words, not compared)."""
    path = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
    text = re.sub(r"<!-- BEGIN .*?<!-- END [^>]*-->", "", (role / "README.md").read_text(encoding="utf-8"), flags=re.S)
    wrong = []
    for name, cell in re.findall(r"(?m)^\| `([a-z][a-z0-9_]+)` \| `([^`|]*)` \|", text):
        if name not in defaults or "{{" in str(defaults[name]):
            continue
        try:
            stated = yaml.safe_load(cell)
        except yaml.YAMLError:
            stated = cell
        if stated != defaults[name]:
            wrong.append(f"{name}: README `{cell}`, defaults/main.yml {defaults[name]!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_the_argument_specs_defaults_are_the_defaults_files(role):
    """An option's `default` in meta/argument_specs.yml (what ansible-doc and the generated README
    table show) is defaults/main.yml's value, unless that one is computed by Jinja."""
    path = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
    wrong = [f"{name}: spec {o['default']!r}, defaults/main.yml {defaults[name]!r}"
             for name, o in spec_options(role).items()
             if "default" in o and name in defaults and "{{" not in str(defaults[name])
             and o["default"] != defaults[name]]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_commented(role):
    """Each variable of defaults/main.yml sits under a comment: its own line's, or the one that opens
    its block (a comment covers the variables after it up to the next blank line)."""
    path = role / "defaults" / "main.yml"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    bare = []
    for i, line in enumerate(lines):
        name = re.match(r"^([a-z][a-z0-9_]*):", line)
        if not name or "#" in line:
            continue
        j = i - 1
        while j >= 0 and lines[j].strip() not in ("", "---") and not lines[j].startswith("#"):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            bare.append(name.group(1))
    assert not bare, f"defaults without a comment: {bare}"
