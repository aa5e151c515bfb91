"""station_stack.station.files' action plugin through a real ansible-playbook (local connection):
templates rendered on the controller, static sources read there, one module call, --check --diff
truthful on a fresh tree, a secret-bearing file (diff: false) never in the output, even at -vvv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    who: world
  tasks:
    - name: Files
      station_stack.station.files:
        mode: "0640"
        directory_mode: "0750"
        directories: ["{root}/etc", "{root}/etc"]
        files:
          - {{dest: "{root}/etc/greeting", template: greeting.j2, vars: {{extra: "!"}}, label: greeting}}
          - {{dest: "{root}/etc/secret.env", content: "PASSWORD={{{{ secret }}}}\\n", mode: "0600", diff: false,
              label: secret}}
          - {{dest: "{root}/etc/static", src: static.txt}}
      register: written
    - name: Show
      ansible.builtin.debug:
        msg: "{{{{ written.changed_labels }}}}"
"""


def playbook(tmp_path: Path, collections_path: Path, *args: str, secret: str = "pl4ybook-secret", who="world"):
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "templates/greeting.j2").write_text("hello {{ who }}{{ extra }}\n")
    (tmp_path / "files/static.txt").write_text("static\n")
    (tmp_path / "play.yml").write_text(PLAY.format(root=tmp_path / "tree"))
    (tmp_path / "tree").mkdir(exist_ok=True)
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_RETRY_FILES_ENABLED="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"))
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                           str(tmp_path / "play.yml"), "-e", "secret=" + secret, "-e", "who=" + who, *args],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_action_renders_on_the_controller_and_is_truthful_in_check_diff(tmp_path, collections_path):
    tree = tmp_path / "tree/etc"
    out = playbook(tmp_path, collections_path, "--check", "--diff", "-vvv")
    assert "+hello world!" in out and "+static" in out and "content hidden" in out
    assert "pl4ybook-secret" not in out
    assert "changed=1" in out and not tree.exists()

    out = playbook(tmp_path, collections_path, "--diff", "-vvv")
    assert "pl4ybook-secret" not in out
    assert (tree / "greeting").read_text() == "hello world!\n"
    assert (tree / "secret.env").read_text() == "PASSWORD=pl4ybook-secret\n"
    assert (tree / "static").read_text() == "static\n"
    assert oct(tree.stat().st_mode & 0o777) == "0o750"

    out = playbook(tmp_path, collections_path, "--diff")
    assert "changed=0" in out

    out = playbook(tmp_path, collections_path, "--diff", who="mars")
    assert "-hello world!" in out and "+hello mars!" in out and "changed=1" in out
    assert '"greeting"' in out and '"secret"' not in out
