"""The version (version.py: a digest of the bridge's code) and the compiled hot path
(src/station_bridge/_fastpath.c, see fastpath.py); everything else is in pyproject.toml.

The extension is built against Python's stable ABI (3.11+), so one wheel serves every station
Python from 3.11 on. It is required: a build that cannot compile it fails (a wheel tagged
cp311-abi3 without its extension would silently run pure Python on every station).
STATION_BRIDGE_PURE=1 builds a pure wheel (py3-none-any) on purpose, e.g. on a controller
without a C compiler; the bridge then runs its pure Python path.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from version import version


class BuildExt(build_ext):
    """build_ext whose failure says what to do instead."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            raise SystemExit(
                f"error: the bridge's compiled path ({ext.name}) could not be built: {exc}\n"
                "Install a C compiler and Python's headers (Debian: build-essential python3-dev), "
                "or set STATION_BRIDGE_PURE=1 to build a pure Python wheel (py3-none-any).") from exc


extensions = []
if os.environ.get("STATION_BRIDGE_PURE") != "1":
    extensions.append(Extension(
        "station_bridge._fastpath", ["src/station_bridge/_fastpath.c"], py_limited_api=True,
        define_macros=[("Py_LIMITED_API", "0x030B0000")], extra_compile_args=["-O2", "-std=gnu11"]))

setup(version=version(), ext_modules=extensions, cmdclass={"build_ext": BuildExt},
      options={"bdist_wheel": {"py_limited_api": "cp311"}} if extensions else {})
