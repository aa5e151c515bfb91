"""station_stack.station.files: the module's plan (pure), the module on a real directory tree
(in-process), and the action plugin through a real ansible-playbook (local connection)."""

from __future__ import annotations

import grp
import json
import os
import pwd
from pathlib import Path

import pytest
from ansible_collections.station_stack.station.plugins.modules import files as mod

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def absent():
    return {"exists": False}


def a_file(content: bytes, mode="0644", uid=0, gid=0):
    return {"exists": True, "kind": "file", "mode": mode, "uid": uid, "gid": gid, "checksum": mod.sha1(content),
            "content": content}


def a_dir(mode="0755", uid=0, gid=0):
    return {"exists": True, "kind": "directory", "mode": mode, "uid": uid, "gid": gid}


IDS = {("user", "root"): 0, ("group", "root"): 0, ("group", "redis"): 107, ("user", "ghost"): None}

# --- plan (pure) ---------------------------------------------------------------------------------


def test_plan_unchanged_file_and_directory_change_nothing():
    entries = [{"dest": "/etc/x", "state": "directory", "owner": "root", "mode": "0755"},
               {"dest": "/etc/x/a.conf", "content": "a\n", "owner": "root", "group": "root", "mode": "0644"}]
    current = {"/etc/x": a_dir(), "/etc": a_dir(), "/etc/x/a.conf": a_file(b"a\n")}
    actions = mod.plan(entries, current, IDS)
    assert [a["changes"] for a in actions] == [[], []]
    assert mod.summary(actions) == {"changed": False, "changed_files": [], "changed_labels": [], "files": [
        {"dest": "/etc/x", "state": "directory", "changed": False, "changes": []},
        {"dest": "/etc/x/a.conf", "state": "file", "changed": False, "changes": []}]}


@pytest.mark.parametrize(("have", "entry", "changes"), [
    (a_file(b"old\n"), {"content": "new\n"}, ["content"]),
    (a_file(b"a\n", mode="0644"), {"content": "a\n", "mode": "640"}, ["mode"]),
    (a_file(b"a\n", gid=0), {"content": "a\n", "group": "redis"}, ["group"]),
    (a_file(b"old\n", mode="0600", uid=5), {"content": "new\n", "owner": "root", "mode": "0600"}, ["content", "owner"]),
    (absent(), {"content": ""}, ["created"]),
    (a_file(b"a\n"), {"state": "absent"}, ["removed"]),
    (absent(), {"state": "absent"}, []),
    # An owner that does not exist yet (check mode on a fresh host): a change, never "unchanged".
    (a_file(b"a\n"), {"content": "a\n", "owner": "ghost"}, ["owner"]),
])
def test_plan_names_exactly_what_differs(have, entry, changes):
    actions = mod.plan([dict(entry, dest="/etc/f")], {"/etc/f": have, "/etc": a_dir()}, IDS)
    assert actions[0]["changes"] == changes


def test_plan_a_parent_declared_earlier_is_not_missing_but_an_undeclared_one_is():
    entries = [{"dest": "/new", "state": "directory"}, {"dest": "/new/a", "content": "a"},
               {"dest": "/other/b", "content": "b"}]
    current = {"/new": absent(), "/": a_dir(), "/new/a": absent(), "/other/b": absent(), "/other": absent()}
    actions = mod.plan(entries, current, IDS)
    assert [a["missing"] for a in actions] == [[], [], ["parent directory /other"]]
    assert mod.summary(actions)["changed_files"] == ["/new", "/new/a", "/other/b"]


def test_plan_labels_of_changed_entries_once_in_order():
    entries = [{"dest": "/e/a.yml", "content": "1", "label": "a"},
               {"dest": "/e/a.env", "content": "2", "label": "a"},
               {"dest": "/e/b.yml", "content": "same", "label": "b"},
               {"dest": "/e/c.yml", "content": "3", "label": "c"}]
    current = {"/e": a_dir(), "/e/a.yml": absent(), "/e/a.env": a_file(b"old"), "/e/b.yml": a_file(b"same"),
               "/e/c.yml": a_file(b"old")}
    assert mod.summary(mod.plan(entries, current, IDS))["changed_labels"] == ["a", "c"]


@pytest.mark.parametrize(("entries", "current", "message"), [
    ([{"dest": "rel/a", "content": ""}], {"rel/a": absent(), "rel": absent()}, "absolute"),
    ([{"dest": "/a", "content": ""}, {"dest": "/a/", "content": ""}], {"/a": absent(), "/": a_dir()}, "declared twice"),
    ([{"dest": "/a", "state": "directory"}], {"/a": a_file(b""), "/": a_dir()}, "exists as a file"),
    ([{"dest": "/a", "content": ""}], {"/a": a_dir(), "/": a_dir()}, "exists as a directory"),
    ([{"dest": "/a", "state": "absent"}], {"/a": a_dir(), "/": a_dir()}, "removes files only"),
    ([{"dest": "/a", "content": "", "mode": "rw-r--r--"}], {"/a": absent(), "/": a_dir()}, "not an octal mode"),
    ([{"dest": "/a"}], {"/a": absent(), "/": a_dir()}, "needs content"),
])
def test_plan_refuses_what_it_cannot_apply(entries, current, message):
    with pytest.raises(mod.PlanError, match=message):
        mod.plan(entries, current, IDS)


def test_diff_of_a_secret_never_holds_its_content():
    entries = [{"dest": "/e/s.env", "content": "PASSWORD=new-secret\n", "diff": False},
               {"dest": "/e/n.env", "content": "PASSWORD=other-secret\n", "diff": False},
               {"dest": "/e/plain", "content": "visible\n"}]
    current = {"/e": a_dir(), "/e/s.env": a_file(b"PASSWORD=old-secret\n"), "/e/n.env": absent(),
               "/e/plain": a_file(b"before\n")}
    diffs = [mod.diff_of(a) for a in mod.plan(entries, current, IDS)]
    text = json.dumps(diffs)
    assert "secret" not in text.replace("content hidden", "")
    assert diffs[0]["before"] != diffs[0]["after"]  # a changed secret still shows as changed
    assert diffs[1]["before"] == "" and diffs[1]["after"]
    assert (diffs[2]["before"], diffs[2]["after"]) == ("before\n", "visible\n")

# --- the module on a real tree -------------------------------------------------------------------


def entries_in(root: Path, secret="s3cret-value"):
    return [
        {"dest": str(root / "etc"), "state": "directory", "mode": "0750", "owner": ME, "group": MY_GROUP},
        {"dest": str(root / "etc/app.conf"), "content": "port = 1\n", "mode": "0640", "label": "app"},
        {"dest": str(root / "etc/app.env"), "content": "PASSWORD=%s\n" % secret, "mode": "0600", "diff": False,
         "label": "app"},
        {"dest": str(root / "etc/other.conf"), "content": "other\n", "mode": "0644", "label": "other"},
    ]


def test_check_mode_on_a_fresh_tree_reports_every_file_and_writes_nothing(run, tmp_path):
    result = run("files", {"files": entries_in(tmp_path)}, check=True)
    assert result["changed"] and not result.get("failed")
    assert [f["changes"] for f in result["files"]] == [["created"]] * 4
    assert result["changed_labels"] == ["app", "other"]
    assert result["assumed"] == []
    assert not (tmp_path / "etc").exists()
    # Nowhere in what the module prints, its invocation included (the SSH connection shows it at -vvv).
    assert "s3cret-value" not in json.dumps(result)
    assert result["invocation"]["module_args"]["files"][2]["dest"].endswith("app.env")


def test_apply_then_rerun_changes_nothing_then_one_file_changes_alone(run, tmp_path):
    first = run("files", {"files": entries_in(tmp_path)})
    assert first["changed"] and first["changed_files"] == [e["dest"] for e in entries_in(tmp_path)]
    assert (tmp_path / "etc/app.env").read_text() == "PASSWORD=s3cret-value\n"
    assert oct((tmp_path / "etc/app.env").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "etc").stat().st_mode & 0o777) == "0o750"
    assert oct((tmp_path / "etc/app.conf").stat().st_mode & 0o777) == "0o640"

    again = run("files", {"files": entries_in(tmp_path)})
    assert not again["changed"] and again["changed_files"] == [] and again.get("diff", []) == []

    inode = (tmp_path / "etc/other.conf").stat().st_ino
    changed = run("files", {"files": entries_in(tmp_path, secret="rotated")})
    assert changed["changed_files"] == [str(tmp_path / "etc/app.env")]
    assert changed["changed_labels"] == ["app"]
    assert (tmp_path / "etc/app.env").read_text() == "PASSWORD=rotated\n"
    assert (tmp_path / "etc/other.conf").stat().st_ino == inode  # untouched, not rewritten
    diff = json.dumps(changed["diff"])
    assert "rotated" not in diff and "s3cret" not in diff and "content hidden" in diff
    # No temporary file is left next to the destinations.
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["app.conf", "app.env", "other.conf"]


def test_mode_drift_is_repaired_without_rewriting_the_content(run, tmp_path):
    run("files", {"files": entries_in(tmp_path)})
    conf = tmp_path / "etc/app.conf"
    conf.chmod(0o666)
    inode = conf.stat().st_ino
    result = run("files", {"files": entries_in(tmp_path)})
    assert [f["changes"] for f in result["files"] if f["changed"]] == [["mode"]]
    assert oct(conf.stat().st_mode & 0o777) == "0o640" and conf.stat().st_ino == inode


def test_a_failed_validation_replaces_no_file_of_the_call(run, tmp_path):
    run("files", {"files": entries_in(tmp_path)})
    entries = entries_in(tmp_path, secret="new")
    entries[1]["content"] = "port = 2\n"
    # app.conf validated against app.env's staged new content; app.env's validation fails.
    entries[1]["validate"] = "grep -q PASSWORD=new %%{%s} %%s" % entries[2]["dest"]
    entries[2]["validate"] = "grep -q NOT-THERE %s"
    result = run("files", {"files": entries})
    assert result["failed"] and "app.env: validation failed" in result["msg"]
    assert "nothing was replaced" in result["msg"] and "run the validation by hand" in result["msg"]
    assert (tmp_path / "etc/app.conf").read_text() == "port = 1\n"
    assert (tmp_path / "etc/app.env").read_text() == "PASSWORD=s3cret-value\n"
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["app.conf", "app.env", "other.conf"]

    entries[2]["validate"] = "grep -q PASSWORD=new %s"
    result = run("files", {"files": entries})
    assert not result.get("failed") and result["changed_labels"] == ["app"]
    assert (tmp_path / "etc/app.conf").read_text() == "port = 2\n"


def test_a_validation_referencing_an_undeclared_file_is_refused(run, tmp_path):
    entries = entries_in(tmp_path)
    entries[1]["validate"] = "test -f %{/etc/passwd} -a -f %s"
    result = run("files", {"files": entries})
    assert result["failed"] and "not an entry of this call" in result["msg"]


def test_a_missing_parent_or_owner_fails_a_real_run_clearly(run, tmp_path):
    result = run("files", {"files": [{"dest": str(tmp_path / "nowhere/a"), "content": "a"}]})
    assert result["failed"] and "parent directory %s does not exist" % (tmp_path / "nowhere") in result["msg"]
    result = run("files", {"files": [{"dest": str(tmp_path / "a"), "content": "a", "owner": "no-such-user-x"}]})
    assert result["failed"] and "user no-such-user-x does not exist" in result["msg"]
    assert not (tmp_path / "a").exists()
    # In check mode both are what an earlier task would create: reported, not failed.
    result = run("files", {"files": [{"dest": str(tmp_path / "nowhere/a"), "content": "a", "owner": "no-such-user-x"}]},
                 check=True)
    assert result["changed"] and not result.get("failed") and len(result["assumed"]) == 2


def test_absent_removes_a_file(run, tmp_path):
    (tmp_path / "gone.yml").write_text("x")
    result = run("files", {"files": [{"dest": str(tmp_path / "gone.yml"), "state": "absent"}]})
    assert result["files"][0]["changes"] == ["removed"] and not (tmp_path / "gone.yml").exists()
    assert not run("files", {"files": [{"dest": str(tmp_path / "gone.yml"), "state": "absent"}]})["changed"]
