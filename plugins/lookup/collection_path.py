# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
name: collection_path
author: station-stack contributors (@station-stack)
version_added: 1.0.0
short_description: A path inside the station_stack.station collection, found from this plugin's own location
description:
  - Returns the directory of the collection this plugin belongs to (the checkout of the repository,
    or the installed collection under a collections path), joined with each term.
  - The roles and playbooks find what the collection ships beside them (the bridge's sources,
    C(bridge/)) with it instead of climbing directories from C(role_path) or C(playbook_dir).
  - A missing path is an error naming it (a collection built without it).
options:
  _terms:
    description: Paths relative to the collection's root; none for the root itself.
    type: list
    elements: str
    required: false
"""

EXAMPLES = r"""
- name: The bridge's sources shipped in the collection
  ansible.builtin.debug:
    msg: "{{ lookup('station_stack.station.collection_path', 'bridge') }}"
"""

RETURN = r"""
_raw:
  description: One absolute controller path per term (the root when no term is given).
  type: list
  elements: path
"""

# Imports below the documentation, as ansible-test's validate-modules wants for plugins.
import os  # noqa: E402

from ansible.errors import AnsibleLookupError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

# plugins/lookup/collection_path.py -> the collection's root, three levels up.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        paths = []
        for term in terms or [""]:
            if not isinstance(term, str) or os.path.isabs(term) or ".." in term.split("/"):
                raise AnsibleLookupError("collection_path: %r is not a path inside the collection" % (term,))
            path = os.path.normpath(os.path.join(ROOT, term))
            if not os.path.exists(path):
                raise AnsibleLookupError("collection_path: %s is not in the collection at %s" % (term, ROOT))
            paths.append(path)
        return paths
