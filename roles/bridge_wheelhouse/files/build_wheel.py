"""Builds the bridge's wheel from a copy of its source: `python build_wheel.py SOURCE WHEEL_DIR`.

pip builds a local directory in place (setuptools writes build/ and *.egg-info beside the
sources): from a copy, the source may be read-only (an installed collection) and a checkout stays
clean. Build outputs of the source (an in-place extension, byte code) are not copied.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.so", "*.pyc", "tests", "chaos",
                                "bench", ".pytest_cache", ".hypothesis")


def main() -> int:
    source, wheel_dir = Path(sys.argv[1]), Path(sys.argv[2])
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="station-bridge-build-") as scratch:
        copy = Path(scratch) / "bridge"
        shutil.copytree(source, copy, ignore=IGNORE)
        return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
                               str(wheel_dir), str(copy)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
