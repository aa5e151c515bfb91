"""station-bridge's version: the release in pyproject.toml plus, as its local label, a digest of
the package's files (0.1.0+src.1a2b3c4d5e6f). Every change of the code is a new version, so pip
upgrades a station normally, and a wheel's name says what it holds. Read by setup.py at build
time and by roles/bridge_wheelhouse (`python version.py`) to name the wheel before building it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def release() -> str:
    match = re.search(r'(?m)^release = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    if not match:
        raise SystemExit("pyproject.toml: [tool.station-bridge] release = \"X.Y.Z\" is missing")
    return match.group(1)


# Build outputs, never sources: the in-place extension (setup.py build_ext --inplace, editable
# installs), byte code, and what compilers and editors leave beside the sources.
BUILD_OUTPUTS = (".so", ".pyd", ".dll", ".dylib", ".o", ".pyc", ".pyo", ".tmp", "~")


def sources(package: Path) -> list[Path]:
    """The package's source files, in a stable order (build outputs left out)."""
    return sorted(p for p in package.rglob("*")
                  if p.is_file() and not {"__pycache__", "build"} & set(p.relative_to(package).parts)
                  and not p.name.endswith(BUILD_OUTPUTS))


def digest() -> str:
    """SHA-256 over the package's source files (path and content), in a stable order."""
    package = ROOT / "src" / "station_bridge"
    sha = hashlib.sha256()
    for path in sources(package):
        sha.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def version() -> str:
    return f"{release()}+src.{digest()[:12]}"


if __name__ == "__main__":
    print(version())
