#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: files
short_description: Many files and directories in one remote call
description:
  - Makes a list of files and directories exist as declared (content, owner, group, mode) or removes
    files, in B(one) execution on the managed host instead of several per file (over a slow link
    each remote execution costs round trips, see C(docs/slow-links.md)).
  - Used through its action plugin, which renders templates and reads static sources on the
    controller and sends their content; the module compares checksums and writes only what differs.
  - A file is written atomically (a temporary file in the same directory with owner, group and mode
    already applied, then renamed over the destination); with C(validate), every changed file is
    staged and validated before any of them replaces its destination, so a failed validation
    changes nothing.
  - Entries are handled in order; a file's parent directory must exist or be an earlier
    C(state=directory) entry. In check mode a missing parent, owner or group is reported as a
    change (an earlier task may create it) instead of failing.
  - Per file C(changed) and what changed (C(content), C(owner), C(group), C(mode), C(created),
    C(removed)); C(changed_labels) lists the labels of changed entries, for restarts per instance.
options:
  files:
    description: The entries, in the order they are applied.
    type: list
    elements: dict
    required: true
    suboptions:
      dest:
        description: Absolute path on the managed host.
        type: path
        required: true
      state:
        description: C(file) (content as given), C(directory), or C(absent) (a file or symlink is removed).
        type: str
        choices: [file, directory, absent]
        default: file
      content:
        description: The file's content (C(state=file)); the action plugin fills it from C(template) or C(src).
        type: str
      owner:
        description: Owner name; unmanaged when omitted (a new entry then belongs to the connection's user).
        type: str
      group:
        description: Group name; unmanaged when omitted.
        type: str
      mode:
        description:
          - Octal mode as a string (C("0640")); unmanaged when omitted (new files C(0600), directories C(0755)).
        type: str
      diff:
        description:
          - Whether the content may be shown under C(--diff). C(false) for a file holding a secret;
            its diff says only that the content changed, and a failed C(validate) does not return
            the validator's output (the error says how to run it by hand).
        type: bool
        default: true
      validate:
        description:
          - A command run when the file changes, before any destination is replaced. C(%s) is the
            staged new content; C(%{/other/dest}) is the path holding another entry's new content
            (its staged file when it changes too, else its destination). Run without a shell.
        type: str
      label:
        description: A name for C(changed_labels) (an instance, a service) when the entry changes.
        type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
author: station-stack contributors (@station-stack)
"""

EXAMPLES = r"""
- name: Write the service's configuration
  station_stack.station.files:
    owner: root
    group: redis
    mode: "0640"
    files:
      - dest: /etc/systemd/system/redis-server.service.d
        state: directory
        mode: "0755"
      - dest: /etc/redis/redis.conf
        template: redis.conf.j2
        diff: false
      - dest: /etc/systemd/system/redis-server.service.d/station-stack.conf
        template: override.conf.j2
        vars:
          systemd_unit_dropin: {Service: {Restart: always}}
  notify: Restart redis
"""

RETURN = r"""
files:
  description: Per entry, in order, what was (or would be, in check mode) done.
  returned: always
  type: list
  elements: dict
  contains:
    dest:
      description: The path.
      type: str
    state:
      description: The declared state.
      type: str
    changed:
      description: Whether the entry changed.
      type: bool
    changes:
      description: What changed, among C(created), C(content), C(owner), C(group), C(mode), C(removed).
      type: list
      elements: str
changed_files:
  description: The paths that changed.
  returned: always
  type: list
  elements: str
changed_labels:
  description: The labels of the entries that changed, each once, in order.
  returned: always
  type: list
  elements: str
assumed:
  description:
    - In check mode, the parent directories, users and groups that do not exist yet, assumed to be
      created by an earlier task (a package, a user task) before this one runs; a real run fails on them.
  returned: success
  type: list
  elements: str
"""

import grp
import hashlib
import os
import pwd
import re
import shlex
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

HIDDEN = "[content hidden: diff: false]\n"
REFERENCE = re.compile(r"%\{([^}]+)\}")


class PlanError(Exception):
    """A declared entry that cannot be applied; the message names it."""


def sha1(data):
    return hashlib.sha1(data).hexdigest()


def observe(path, read_content):
    """The managed host's state of one path: a dict the plan compares against, no writes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    current = {"exists": True, "mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISDIR(st.st_mode):
        current["kind"] = "directory"
    elif stat.S_ISLNK(st.st_mode):
        current["kind"] = "link"
    elif stat.S_ISREG(st.st_mode):
        current["kind"] = "file"
        if read_content:
            with open(path, "rb") as f:
                data = f.read()
            current["checksum"] = sha1(data)
            current["content"] = data
    else:
        current["kind"] = "other"
    return current


def normal_mode(mode, dest):
    if mode is None:
        return None
    text = to_native(mode)
    if not re.match(r"^0?[0-7]{3,4}$", text):
        raise PlanError("%s: mode %r is not an octal mode such as \"0640\"" % (dest, mode))
    return "%04o" % int(text, 8)


def plan(entries, current, ids):
    """Pure: declared entries + observed paths -> per-entry actions.

    `current` maps a dest to observe()'s dict; `ids` maps ("user"|"group", name) to a number, or
    None where the name does not exist. Returns a list of dicts (dest, state, changes, and what to
    apply); missing parents, owners and groups are listed under "missing" for the caller to fail
    on (or, in check mode, to accept as created by an earlier task).
    """
    planned_dirs = set()
    seen = set()
    actions = []
    for entry in entries:
        dest = entry["dest"]
        if not os.path.isabs(dest):
            raise PlanError("%s: dest must be an absolute path" % dest)
        dest = os.path.normpath(dest)
        if dest in seen:
            raise PlanError("%s: declared twice" % dest)
        seen.add(dest)
        state = entry.get("state") or "file"
        have = current[dest]
        action = {"dest": dest, "state": state, "changes": [], "missing": [], "label": entry.get("label"),
                  "diff": entry.get("diff", True), "validate": entry.get("validate")}
        actions.append(action)
        if state == "absent":
            if have["exists"]:
                if have["kind"] == "directory":
                    raise PlanError("%s: is a directory; state=absent removes files only" % dest)
                action["changes"].append("removed")
                action["before"] = have.get("content")
            continue
        if state == "file" and entry.get("content") is None:
            raise PlanError("%s: a file needs content (template, src or content)" % dest)
        mode = normal_mode(entry.get("mode"), dest)
        uid = gid = None
        for kind, name in (("user", entry.get("owner")), ("group", entry.get("group"))):
            if name is None:
                continue
            number = ids.get((kind, name))
            if number is None:
                action["missing"].append("%s %s" % (kind, name))
            elif kind == "user":
                uid = number
            else:
                gid = number
        action.update(mode=mode, uid=uid, gid=gid)
        parent = os.path.dirname(dest)
        if not have["exists"]:
            if parent not in planned_dirs and not current[parent]["exists"]:
                action["missing"].append("parent directory %s" % parent)
            action["changes"].append("created")
        elif have["kind"] != ("directory" if state == "directory" else "file"):
            raise PlanError("%s: exists as a %s, declared as a %s" % (dest, have["kind"], state))
        if state == "directory":
            planned_dirs.add(dest)
        else:
            data = to_bytes(entry["content"], errors="surrogate_or_strict")
            action["data"] = data
            action["before"] = have.get("content", b"")
            if have["exists"] and have["checksum"] != sha1(data):
                action["changes"].append("content")
        if have["exists"]:
            if uid is not None and have["uid"] != uid:
                action["changes"].append("owner")
            if gid is not None and have["gid"] != gid:
                action["changes"].append("group")
            if mode is not None and have["mode"] != mode:
                action["changes"].append("mode")
        # An owner or group that does not exist yet (check mode): a change, whatever the path has now.
        for kind, missing in (("owner", "user "), ("group", "group ")):
            if have["exists"] and kind not in action["changes"] \
                    and any(m.startswith(missing) for m in action["missing"]):
                action["changes"].append(kind)
    return actions


def diff_of(action):
    """The entry's diff for --diff: content unless the entry says diff: false."""
    dest = action["dest"]
    header = {"before_header": dest, "after_header": dest}
    if action["state"] == "directory":
        return dict(header, before={"path": dest, "state": "absent" if "created" in action["changes"] else "directory"},
                    after={"path": dest, "state": "directory"})
    if not action["diff"]:
        before = "" if "created" in action["changes"] else HIDDEN
        after = "" if action["state"] == "absent" else HIDDEN
        if "content" in action["changes"]:
            before, after = "[content hidden: diff: false, before]\n", "[content hidden: diff: false, after]\n"
        return dict(header, before=before, after=after)
    before = to_text(action.get("before") or b"", errors="surrogate_then_replace")
    after = "" if action["state"] == "absent" else to_text(action["data"], errors="surrogate_then_replace")
    return dict(header, before=before, after=after)


def summary(actions):
    files = [{"dest": a["dest"], "state": a["state"], "changed": bool(a["changes"]), "changes": list(a["changes"])}
             for a in actions]
    labels = []
    for a in actions:
        if a["changes"] and a["label"] and a["label"] not in labels:
            labels.append(a["label"])
    return {
        "changed": any(a["changes"] for a in actions),
        "files": files,
        "changed_files": [a["dest"] for a in actions if a["changes"]],
        "changed_labels": labels,
    }


def lookup_ids(entries):
    ids = {}
    for entry in entries:
        for kind, name in (("user", entry.get("owner")), ("group", entry.get("group"))):
            if name is None or (kind, name) in ids:
                continue
            try:
                if kind == "user":
                    ids[(kind, name)] = int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
                else:
                    ids[(kind, name)] = int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
            except KeyError:
                ids[(kind, name)] = None
    return ids


def apply_attrs(path, action, fd=None):
    uid = -1 if action["uid"] is None else action["uid"]
    gid = -1 if action["gid"] is None else action["gid"]
    if fd is not None:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        if action["mode"] is not None:
            os.fchmod(fd, int(action["mode"], 8))
        return
    if uid != -1 or gid != -1:
        os.lchown(path, uid, gid)
    if action["mode"] is not None:
        os.chmod(path, int(action["mode"], 8))


def stage(action):
    """The new content in a temporary file next to the destination, attributes applied."""
    directory, name = os.path.split(action["dest"])
    fd, path = tempfile.mkstemp(dir=directory, prefix=".%s." % name, suffix=".tmp")
    try:
        view = memoryview(action["data"])
        while view:
            view = view[os.write(fd, view):]
        apply_attrs(path, action, fd)
        os.fsync(fd)
    except Exception:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def validation_argv(action, command, paths, staged):
    """The validate command's words: %s is the entry's staged file, %{dest} another entry's new content."""

    def reference(match):
        other = os.path.normpath(match.group(1))
        if other not in paths:
            raise PlanError("%s: validate names %s, which is not an entry of this call" % (action["dest"], other))
        return staged.get(other, other)

    return [REFERENCE.sub(reference, word).replace("%s", staged[action["dest"]]) for word in shlex.split(command)]


def run_validations(module, actions, staged):
    paths = {a["dest"] for a in actions}
    for action in actions:
        command = action["validate"]
        if not command or action["dest"] not in staged:
            continue
        if "%s" not in command:
            raise PlanError("%s: validate must name the staged file with %%s: %s" % (action["dest"], command))
        argv = validation_argv(action, command, paths, staged)
        rc, out, err = module.run_command(argv)
        if rc != 0:
            if action["diff"]:
                detail = "%s%s" % (out, err)
            else:
                detail = ("its output is not shown: the file holds secrets (diff: false); run the validation "
                          "by hand on the host to see it: %s" % command)
            raise PlanError("%s: validation failed (rc %d), nothing was replaced: %s"
                            % (action["dest"], rc, detail.strip()))


def apply(module, actions):
    """Directories first in order, then every changed file staged, validated, and renamed."""
    staged = {}
    try:
        for action in actions:
            if action["state"] == "directory" and action["changes"]:
                if "created" in action["changes"]:
                    os.mkdir(action["dest"], int(action["mode"] or "0755", 8))
                apply_attrs(action["dest"], action)
        for action in actions:
            if action["state"] == "file" and ("created" in action["changes"] or "content" in action["changes"]):
                staged[action["dest"]] = stage(action)
        run_validations(module, actions, staged)
        for action in actions:
            if action["dest"] in staged:
                os.rename(staged.pop(action["dest"]), action["dest"])
            elif action["state"] == "file" and action["changes"]:
                apply_attrs(action["dest"], action)
            elif action["state"] == "absent" and action["changes"]:
                os.unlink(action["dest"])
    finally:
        for path in staged.values():
            try:
                os.unlink(path)
            except OSError:
                pass


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=dict(
                dest=dict(type="path", required=True),
                state=dict(type="str", default="file", choices=["file", "directory", "absent"]),
                content=dict(type="str"),
                owner=dict(type="str"),
                group=dict(type="str"),
                mode=dict(type="str"),
                diff=dict(type="bool", default=True),
                validate=dict(type="str"),
                label=dict(type="str"),
            )),
        ),
        supports_check_mode=True,
        # The arguments hold every file's content (secrets among them): not logged on the host.
        no_log=True,
    )
    entries = module.params["files"]
    # The result's invocation names the files, never their content: a connection prints the raw
    # result at -vvv (the SSH connection does), before the action plugin could take anything out.
    invocation = {"module_args": {"files": [{k: v for k, v in e.items() if k != "content"} for e in entries]}}
    current = {}
    try:
        for entry in entries:
            dest = os.path.normpath(entry["dest"])
            current[dest] = observe(dest, entry.get("state") in (None, "file", "absent"))
            parent = os.path.dirname(dest)
            if parent not in current:
                current[parent] = observe(parent, False)
        actions = plan(entries, current, lookup_ids(entries))
    except (PlanError, OSError) as e:
        module.fail_json(msg=to_native(e), files=[], changed_files=[], changed_labels=[], invocation=invocation)
    missing = ["%s: %s does not exist" % (a["dest"], m) for a in actions for m in a["missing"]]
    result = summary(actions)
    result["invocation"] = invocation
    if missing and not module.check_mode:
        module.fail_json(msg="; ".join(missing), **result)
    # Check mode on a fresh host: what an earlier task (a package, a user) would create first.
    result["assumed"] = missing
    if module._diff:
        result["diff"] = [diff_of(a) for a in actions if a["changes"]]
    if not module.check_mode and result["changed"]:
        try:
            apply(module, actions)
        except (PlanError, OSError) as e:
            result.pop("diff", None)
            module.fail_json(msg=to_native(e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
