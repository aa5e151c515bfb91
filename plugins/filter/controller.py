# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""Where the controller keeps what station-stack makes on it (wheels, .deb caches, backups, rollout reports).

In a checkout of the repository: its own `.cache/`. In an installed collection (a directory the
user may not own, replaced whole by the next `ansible-galaxy collection install`): the user's
cache directory, `$XDG_CACHE_HOME/station-stack` (default `~/.cache/station-stack`). Never inside
the installed collection.
"""

from __future__ import annotations

import os
from pathlib import Path

from ansible.errors import AnsibleFilterError


def _collection_root(path):
    for candidate in (path, *path.parents):
        if (candidate / "galaxy.yml").is_file() or (candidate / "MANIFEST.json").is_file():
            return candidate
    return None


def controller_cache_dir(path):
    """A path inside the collection (role_path, playbook_dir) -> the controller's cache directory."""
    if not isinstance(path, str) or not path:
        raise AnsibleFilterError("controller_cache_dir: expects a path inside the collection, got %r" % (path,))
    root = _collection_root(Path(path).resolve())
    if root is None:
        raise AnsibleFilterError("controller_cache_dir: %s is not inside the station_stack.station collection" % path)
    if not (root / "MANIFEST.json").is_file():
        return str(root / ".cache")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "station-stack")


class FilterModule:
    def filters(self):
        return {"controller_cache_dir": controller_cache_dir}
