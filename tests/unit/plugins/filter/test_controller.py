"""controller_cache_dir: a checkout keeps its own .cache/, an installed collection is never written to."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.station_stack.station.plugins.filter.controller import controller_cache_dir


def test_a_checkout_keeps_its_cache_beside_it(tmp_path):
    (tmp_path / "galaxy.yml").write_text("namespace: station_stack\n")
    (tmp_path / "roles" / "bridge").mkdir(parents=True)
    assert controller_cache_dir(str(tmp_path / "roles" / "bridge")) == str(tmp_path / ".cache")


def test_an_installed_collection_uses_the_users_cache(tmp_path, monkeypatch):
    tree = tmp_path / "ansible_collections" / "station_stack" / "station"
    (tree / "playbooks").mkdir(parents=True)
    (tree / "MANIFEST.json").write_text("{}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert controller_cache_dir(str(tree / "playbooks")) == str(tmp_path / "home" / ".cache" / "station-stack")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert controller_cache_dir(str(tree / "playbooks")) == str(tmp_path / "xdg" / "station-stack")


@pytest.mark.parametrize("path", ["", None, "/"])
def test_a_path_outside_the_collection_is_refused(path):
    with pytest.raises(AnsibleFilterError):
        controller_cache_dir(path)
