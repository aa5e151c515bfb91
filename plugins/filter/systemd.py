# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""systemd unit directives, and the station's hardening baseline merged into a unit's own settings.

Every unit and drop-in station-stack renders writes its [Service] hardening through
systemd_hardening: the baseline's one owner is roles/systemd_unit (systemd_unit_hardening), the
unit templates live in the roles that run the units (bridge, station_services), and no template
imports another role's macros (which an installed collection could not resolve).
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def _value_lines(key, value):
    if isinstance(value, bool):
        return ["%s=%s" % (key, "yes" if value else "no")]
    if isinstance(value, (str, int, float)):
        return ["%s=%s" % (key, value)]
    if isinstance(value, (list, tuple)):
        lines = []
        for item in value:
            if isinstance(item, (Mapping, list, tuple)) or item is None:
                raise AnsibleFilterError("systemd_directives: %s: a list item must be a scalar, got %r" % (key, item))
            lines.extend(_value_lines(key, item))
        return lines
    raise AnsibleFilterError("systemd_directives: %s: expected a string, number, boolean or list, got %r"
                             % (key, value))


def systemd_directives(settings):
    """{key: value} -> systemd lines, each ending in a newline: a boolean is yes/no, a list repeats
    the key, an empty string resets the key (systemd semantics)."""
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError("systemd_directives: expects a dict, got %s" % type(settings).__name__)
    return "".join(line + "\n" for key, value in settings.items() for line in _value_lines(key, value))


def systemd_hardening(own, baseline, relax=None):
    """A unit's own [Service] settings, then the hardening baseline without the keys the unit sets
    itself or relaxes (relax: a list of keys), under a comment that names what was left out."""
    if not isinstance(own, Mapping) or not isinstance(baseline, Mapping):
        raise AnsibleFilterError("systemd_hardening: expects dicts (own settings, baseline)")
    relax = list(relax or [])
    left_out = set(relax) | set(own)
    rest = {key: value for key, value in baseline.items() if key not in left_out}
    note = ", without " + ", ".join(relax) if relax else ""
    return (systemd_directives(own)
            + "# Hardening baseline (roles/systemd_unit: systemd_unit_hardening)%s.\n" % note
            + systemd_directives(rest))


class FilterModule:
    def filters(self):
        return {"systemd_directives": systemd_directives, "systemd_hardening": systemd_hardening}
