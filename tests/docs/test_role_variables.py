"""Every variable a role reads under a role's prefix (`<role>_...` in its tasks, handlers and
templates) is declared by the role that owns the prefix (the longest role name it starts with):
in its defaults, argument spec or vars, or made by its tasks (set_fact, register, a task's or
an include's `vars:`, a loop_var). A template reading `systemd_unit_relax` that no defaults file or
argument spec names fails here."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = {p.name: p for p in sorted((ROOT / "roles").iterdir()) if (p / "tasks" / "main.yml").is_file()}
# `station_` is no role's namespace: `station_code` is the inventory's, `station_bridge` the
# bridge's package and measurement (roles/station's own three variables are in its defaults).
PREFIXES = sorted(set(ROLES) - {"station"}, key=len, reverse=True)


def declared(role: Path) -> set[str]:
    out: set[str] = set()
    for name in ("defaults/main.yml", "vars/main.yml"):
        if (role / name).is_file():
            out |= set(yaml.safe_load((role / name).read_text(encoding="utf-8")) or {})
    if (role / "meta" / "argument_specs.yml").is_file():
        for entry in yaml.safe_load((role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))[
                "argument_specs"].values():
            out |= set(entry.get("options") or {})
    return out


def made(node: object, out: set[str]) -> set[str]:
    """Names a task list sets: register, set_fact, vars (of a task, block or include), loop_var."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "register" and isinstance(value, str):
                out.add(value)
            elif key in ("ansible.builtin.set_fact", "set_fact", "vars") and isinstance(value, dict):
                out |= set(value)
            elif key == "loop_control" and isinstance(value, dict) and "loop_var" in value:
                out.add(value["loop_var"])
            made(value, out)
    elif isinstance(node, list):
        for value in node:
            made(value, out)
    return out


def role_files(role: Path) -> list[Path]:
    return [f for f in sorted(role.rglob("*")) if f.is_file() and f.suffix in (".yml", ".j2")
            and f.relative_to(role).parts[0] not in ("defaults", "vars", "meta")]


def owner(name: str) -> str | None:
    owners = [r for r in PREFIXES if name.startswith(r + "_")]
    return max(owners, key=len) if owners else None


def test_every_role_prefixed_variable_a_role_reads_is_declared_by_its_owner():
    known = {}
    for name, role in ROLES.items():
        sets: set[str] = set()
        for f in role_files(role):
            if f.suffix == ".yml":
                made(yaml.safe_load(f.read_text(encoding="utf-8")), sets)
        known[name] = declared(role) | sets
    undeclared = []
    pattern = re.compile(r"\b(" + "|".join(PREFIXES) + r")_[a-z0-9_]*[a-z0-9]\b(?![.\w])")
    for name, role in ROLES.items():
        for f in role_files(role):
            for m in pattern.finditer(f.read_text(encoding="utf-8")):
                var = m.group(0)
                own = owner(var)
                if own and var not in ROLES and var not in known[own] and var not in known[name]:
                    undeclared.append(f"{f.relative_to(ROOT)}: {var} (role {own} declares no such variable)")
    assert not undeclared, "\n".join(sorted(set(undeclared)))


def test_the_check_finds_a_variable_nobody_declares():
    assert owner("systemd_unit_relax") == "systemd_unit" and owner("bridge_wheelhouse_files") == "bridge_wheelhouse"
    assert "systemd_unit_no_such_thing" not in declared(ROLES["systemd_unit"])
