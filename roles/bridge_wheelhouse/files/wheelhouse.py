"""Fills the controller's wheelhouse; every file lands whole (written beside, then renamed in).

  python wheelhouse.py build SOURCE WHEEL_DIR
      the bridge's wheel, built from a copy of SOURCE: pip builds a local directory in place
      (setuptools writes build/ and *.egg-info beside the sources), and the source may be
      read-only (an installed collection); a checkout stays clean. Build outputs of the source
      (an in-place extension, byte code) are not copied.
  python wheelhouse.py download WHEEL_DIR PIP_DOWNLOAD_ARGUMENTS...
      `pip download` into WHEEL_DIR.

Two playbooks filling one wheelhouse at once (two operators, two test scenarios side by side)
never let the other copy a wheel that is still being written: pip writes into a scratch
directory on the same file system, and each finished file is renamed into WHEEL_DIR.
"""

from __future__ import annotations

import os
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
        rc = subprocess.run([sys.executable, "-m", "pip", *args], check=False).returncode
        if rc == 0:
            for made in sorted(out.iterdir()):
                os.replace(made, wheel_dir / made.name)
        return rc


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "build":
        return _land([], Path(argv[2]), source=Path(argv[1]))
    if len(argv) >= 2 and argv[0] == "download":
        return _land(argv[2:], Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
