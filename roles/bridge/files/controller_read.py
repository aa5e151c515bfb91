"""The bridge role's controller side in one process (tasks/preflight.yml): checks that this Python
can run the bridge's own parser, then reads each instance's effective configuration
(`station-bridge check-config --json`) and tries each sample (`station-bridge try`), each in a
process of its own, exactly as on the command line. Reads a JSON document on stdin:

  {"instances": {name: {"config": YAML text, "environment": [names]}},
   "samples": {name: {"config": YAML text, "environment": [names], "subscription": ..., "file": ...}},
   "max_rejected_share": "0"}

and prints {"probe": {...}, "configs": {name: {rc, stdout, stderr}}, "samples": {...}}. The
environment's names get placeholder values (the secrets are not needed to read a configuration);
PYTHONPATH (the bridge's code) and STATION_BRIDGE_FILES_ELSEWHERE come from this process's own
environment. Nothing is read when the probe finds this Python unfit: the role names what is
missing instead of a traceback. Written for old Pythons too (it must run to say it is too old)."""

import importlib.util
import json
import os
import subprocess
import sys


def run(argv, config, names):
    env = dict(os.environ)
    env.update(dict((name, "(not read)") for name in names))
    proc = subprocess.run([sys.executable, "-m", "station_bridge.cli"] + argv, input=config,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def main():
    request = json.load(sys.stdin)
    missing = [name for name, module in (("PyYAML", "yaml"), ("msgpack", "msgpack"))
               if importlib.util.find_spec(module) is None]
    probe = {"version": "%d.%d.%d" % sys.version_info[:3], "missing": missing, "old": sys.version_info < (3, 11)}
    out = {"probe": probe, "configs": {}, "samples": {}}
    if not missing and not probe["old"]:
        for name, instance in request.get("instances", {}).items():
            out["configs"][name] = run(["check-config", "--json", "/dev/stdin"], instance["config"],
                                       instance.get("environment", []))
        for name, sample in request.get("samples", {}).items():
            out["samples"][name] = run(["try", "--config", "/dev/stdin", "--subscription", sample["subscription"],
                                        "--max-rejected-share", str(request.get("max_rejected_share", "0")),
                                        sample["file"]], sample["config"], sample.get("environment", []))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
