"""Fills the controller's wheelhouse; every file lands whole (written beside, then renamed in).

  python wheelhouse.py build SOURCE WHEEL_DIR
      the bridge's wheel, built from a copy of SOURCE: pip builds a local directory in place
      (setuptools writes build/ and *.egg-info beside the sources), and the source may be
      read-only (an installed collection); a checkout stays clean. Build outputs of the source
      (an in-place extension, byte code) are not copied.
  python wheelhouse.py download WHEEL_DIR PIP_DOWNLOAD_ARGUMENTS...
      `pip download` into WHEEL_DIR.
  python wheelhouse.py status WHEEL_DIR [SOURCE]
      prints what the wheelhouse holds as JSON, changing nothing: the version to install (SOURCE's
      version.py, or without SOURCE the highest station_bridge wheel in WHEEL_DIR), the pins (SOURCE's
      constraints.txt, or the copy kept beside the wheels), the wheel files a station installs (the
      bridge's, then one per pin), what a build would do (`todo`: build, download, constraints) and
      the problems that stop the role (a missing constraints file, a version that cannot be read).
  python wheelhouse.py fill WHEEL_DIR SOURCE PIP_DOWNLOAD_ARGUMENTS...
      what `status` lists under `todo`: builds the bridge's wheel, downloads the pins (with these
      `pip download` arguments and --requirement SOURCE/constraints.txt) and keeps the pins beside
      the wheels; then prints the status again. One controller process for what were three tasks
      (docs/slow-links.md, controller CPU).

Two playbooks filling one wheelhouse at once (two operators, two test scenarios side by side)
never let the other copy a wheel that is still being written: pip writes into a scratch
directory on the same file system, and each finished file is renamed into WHEEL_DIR.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.so", "*.pyc", "tests", "chaos",
                                "bench", ".pytest_cache", ".hypothesis")


def _land(pip_args: list[str], wheel_dir: Path, source: Path | None = None) -> int:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".station-bridge-", dir=wheel_dir) as scratch:
        out = Path(scratch) / "out"
        out.mkdir()
        args = list(pip_args)
        if source is not None:
            copy = Path(scratch) / "bridge"
            shutil.copytree(source, copy, ignore=IGNORE)
            args = ["wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(copy)]
        else:
            args = ["download", "--dest", str(out), *args]
        # pip's output on stderr: `fill` prints its status (JSON) on stdout.
        rc = subprocess.run([sys.executable, "-m", "pip", *args], check=False, stdout=sys.stderr).returncode
        if rc == 0:
            for made in sorted(out.iterdir()):
                os.replace(made, wheel_dir / made.name)
        return rc


CONSTRAINTS_NAME = "station-bridge-constraints.txt"


def _version_key(version: str) -> tuple:
    """community.general.version_sort's order (LooseVersion): numbers as numbers, the rest as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.findall(r"\d+|[a-z]+|[^a-z\d.]+", version.lower()))


def status(wheel_dir: Path, source: Path | None) -> dict:
    """What the wheelhouse holds and what a build would do; reads only."""
    problems: list[str] = []
    wheels = sorted(p.name for p in wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if source is not None:
        try:
            version = runpy.run_path(str(source / "version.py"), run_name="station_bridge_version")["version"]()
        except (OSError, SystemExit) as exc:
            version = ""
            problems.append(f"{source / 'version.py'}: {exc}")
        constraints = source / "constraints.txt"
    else:
        found = [m.group(1) for m in (re.match(r"^station_bridge-([^-]+)-.*\.whl$", w) for w in wheels) if m]
        version = sorted(found, key=_version_key)[-1] if found else ""
        constraints = wheel_dir / CONSTRAINTS_NAME
    try:
        text = constraints.read_text(encoding="utf-8")
    except OSError as exc:
        text = ""
        problems.append(f"the pins ({constraints}) cannot be read: {exc.strerror}")
    pins = [line for line in (re.sub(r"#.*$", "", raw).strip() for raw in text.splitlines()) if line]
    # A pin's wheel file name starts with its normalised name and version (PEP 427).
    pin_files = []
    for pin in pins:
        name, _, pinned = pin.lower().partition("==")
        prefix = f"{re.sub(r'[-_.]+', '_', name)}-{pinned}-"
        pin_files += [w for w in wheels if w.startswith(prefix)]
    bridge = [w for w in wheels if version and w.startswith(f"station_bridge-{version}-")][:1]
    todo = []
    if source is not None:
        if not bridge:
            todo.append("build")
        if len(pin_files) < len(pins):
            todo.append("download")
        kept = wheel_dir / CONSTRAINTS_NAME
        if not kept.is_file() or kept.read_text(encoding="utf-8") != text:
            todo.append("constraints")
    return {"version": version, "pins": pins, "files": bridge + pin_files, "todo": todo, "problems": problems}


def fill(wheel_dir: Path, source: Path, download_args: list[str]) -> int:
    """Does what status() lists under todo, then prints the status again."""
    todo = status(wheel_dir, source)["todo"]
    rc = 0
    if "build" in todo:
        rc = rc or _land([], wheel_dir, source=source)
    if "download" in todo:
        rc = rc or _land([*download_args, "--requirement", str(source / "constraints.txt")], wheel_dir)
    if "constraints" in todo and rc == 0:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=wheel_dir, prefix=".constraints-", delete=False) as out:
            out.write((source / "constraints.txt").read_bytes())
        os.chmod(out.name, 0o644)
        os.replace(out.name, wheel_dir / CONSTRAINTS_NAME)
    print(json.dumps({**status(wheel_dir, source), "done": todo}))
    return rc


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "build":
        return _land([], Path(argv[2]), source=Path(argv[1]))
    if len(argv) >= 2 and argv[0] == "download":
        return _land(argv[2:], Path(argv[1]))
    if len(argv) in (2, 3) and argv[0] == "status":
        print(json.dumps(status(Path(argv[1]), Path(argv[2]) if len(argv) == 3 and argv[2] else None)))
        return 0
    if len(argv) >= 3 and argv[0] == "fill":
        return fill(Path(argv[1]), Path(argv[2]), argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
