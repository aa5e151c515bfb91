"""The systemd filters every unit and drop-in is rendered through (plugins/filter/systemd.py)."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.station_stack.station.plugins.filter.systemd import systemd_directives, systemd_hardening

BASELINE = {"ProtectSystem": "strict", "NoNewPrivileges": True, "MemoryDenyWriteExecute": True,
            "ReadWritePaths": "", "SystemCallFilter": "@system-service"}


def test_directives_render_systemd_values():
    text = systemd_directives({"A": True, "B": False, "C": 5, "D": "", "E": ["x", "y"], "F": "1G"})
    assert text == "A=yes\nB=no\nC=5\nD=\nE=x\nE=y\nF=1G\n"


@pytest.mark.parametrize("bad", [{"A": None}, {"A": {"b": 1}}, {"A": [None]}, {"A": [["x"]]}, ["A=1"]])
def test_directives_refuse_what_systemd_cannot_take(bad):
    with pytest.raises(AnsibleFilterError):
        systemd_directives(bad)


def test_hardening_puts_the_unit_first_and_leaves_out_what_it_sets_or_relaxes():
    text = systemd_hardening({"ReadWritePaths": "/var/lib/x"}, BASELINE, ["MemoryDenyWriteExecute"])
    assert text.splitlines() == [
        "ReadWritePaths=/var/lib/x",
        "# Hardening baseline (roles/systemd_unit: systemd_unit_hardening), without MemoryDenyWriteExecute.",
        "ProtectSystem=strict", "NoNewPrivileges=yes", "SystemCallFilter=@system-service"]


def test_hardening_without_relax_keeps_the_whole_baseline():
    text = systemd_hardening({}, BASELINE)
    assert "without" not in text and text.count("\n") == 1 + len(BASELINE)
