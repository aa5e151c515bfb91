# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""station_stack.station.files: render every template and read every static source on the
controller, then make ONE call of the files module on the managed host (see the module's
documentation). Over a 300 ms link a template or copy task costs five remote executions, about
4 s, even when nothing changes; one call for a role's files costs one."""

from __future__ import annotations

import os

from ansible._internal._templating import _template_vars
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

ENTRY_KEYS = {"dest", "state", "template", "src", "content", "owner", "group", "mode", "diff", "validate",
              "label", "vars"}
DEFAULT_KEYS = {"owner", "group", "mode", "directory_mode", "diff", "directories"}


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = True

    def _render(self, entry, task_vars):
        source = self._find_needle("templates", entry["template"])
        data = trust_as_template(self._loader.get_text_file_contents(source))
        searchpath = list(task_vars.get("ansible_search_path", [])) + [self._loader._basedir, os.path.dirname(source)]
        searchpath = [q for p in searchpath for q in (os.path.join(p, "templates"), p)]
        variables = dict(task_vars)
        variables.update(entry.get("vars") or {})
        variables.update(_template_vars.generate_ansible_template_vars(
            path=entry["template"], fullpath=source, dest_path=entry["dest"],
            include_ansible_managed="ansible_managed" not in variables))
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)
        rendered = templar.template(data, escape_backslashes=False,
                                    overrides=dict(trim_blocks=True, lstrip_blocks=False, newline_sequence="\n"))
        return "" if rendered is None else to_text(rendered)

    def _read(self, entry):
        source = self._find_needle("files", entry["src"])
        with open(source, "rb") as f:
            data = f.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise AnsibleActionFail("%s: src %s is not UTF-8 text; the files module writes text only (use copy)"
                                    % (entry["dest"], source)) from None

    def _entries(self, task_vars):
        args = self._task.args
        unknown = set(args) - DEFAULT_KEYS - {"files"}
        if unknown:
            raise AnsibleActionFail("unsupported parameters: %s" % ", ".join(sorted(unknown)))
        files = args.get("files", [])
        directories = args.get("directories", [])
        if not isinstance(files, list) or not isinstance(directories, list):
            raise AnsibleActionFail("files and directories must be lists: files of entries (dest, and template, src or "
                                    "content), directories of paths or entries")
        # directories: paths (or entries) created before the files, with the task's owner, group and directory_mode.
        # The same path twice (dirname of one variable equal to another) is one directory, the first entry.
        unique = {}
        for d in directories:
            d = dict(d, state="directory") if isinstance(d, dict) else {"dest": d, "state": "directory"}
            unique.setdefault(os.path.normpath(str(d.get("dest"))), d)
        files = list(unique.values()) + files
        entries = []
        for number, given in enumerate(files, 1):
            if not isinstance(given, dict) or not given.get("dest"):
                raise AnsibleActionFail("files entry %d: a dict with dest is required" % number)
            unknown = set(given) - ENTRY_KEYS
            if unknown:
                raise AnsibleActionFail("%s: unsupported keys %s" % (given["dest"], ", ".join(sorted(unknown))))
            state = given.get("state", "file")
            sources = [k for k in ("template", "src", "content") if given.get(k) is not None]
            if state == "file" and len(sources) != 1:
                raise AnsibleActionFail("%s: give exactly one of template, src and content" % given["dest"])
            if state != "file" and sources:
                raise AnsibleActionFail("%s: state=%s takes no template, src or content" % (given["dest"], state))
            entry = {"dest": given["dest"], "state": state}
            if state != "absent":
                for key in ("owner", "group"):
                    if given.get(key, args.get(key)) is not None:
                        entry[key] = str(given.get(key, args.get(key)))
                mode = given.get("mode", args.get("directory_mode" if state == "directory" else "mode"))
                if mode is not None:
                    if isinstance(mode, int):
                        raise AnsibleActionFail("%s: mode must be a quoted octal string such as \"0640\", not %r"
                                                % (given["dest"], mode))
                    entry["mode"] = str(mode)
            entry["diff"] = bool(given.get("diff", args.get("diff", True)))
            for key in ("validate", "label"):
                if given.get(key) is not None:
                    entry[key] = str(given[key])
            try:
                if given.get("template") is not None:
                    entry["content"] = self._render(given, task_vars)
                elif given.get("src") is not None:
                    entry["content"] = self._read(given)
                elif given.get("content") is not None:
                    entry["content"] = to_text(given["content"])
            except AnsibleActionFail:
                raise
            except AnsibleError as e:
                # A template's error can quote the values it was rendering: not for a secret-bearing file.
                if entry["diff"]:
                    raise AnsibleActionFail("%s: %s" % (given["dest"], to_text(e))) from e
                raise AnsibleActionFail("%s: rendering failed (%s); the file holds secrets (diff: false), so the "
                                        "message is not shown: render it with the template module and -v to see it"
                                        % (given["dest"], type(e).__name__)) from None
            entries.append(entry)
        return entries

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        try:
            entries = self._entries(task_vars)
        except AnsibleActionFail as e:
            result.update(failed=True, msg=to_text(e))
            return result
        # The module's result names the files, never their content (its own invocation).
        result.update(self._execute_module(module_name="station_stack.station.files",
                                           module_args={"files": entries}, task_vars=task_vars))
        return result
