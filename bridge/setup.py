"""The version (version.py: a digest of the bridge's code) and the optional compiled hot path
(src/station_bridge/_fastpath.c, see fastpath.py); everything else is in pyproject.toml.

The extension is built against Python's stable ABI (3.11+), so one wheel serves every station
Python from 3.11 on. It is optional: without a C compiler the build goes on and the bridge runs
its pure Python path; STATION_BRIDGE_PURE=1 builds a pure wheel (py3-none-any) on purpose.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from version import version

extensions = []
if os.environ.get("STATION_BRIDGE_PURE") != "1":
    extensions.append(Extension(
        "station_bridge._fastpath", ["src/station_bridge/_fastpath.c"], py_limited_api=True,
        define_macros=[("Py_LIMITED_API", "0x030B0000")], extra_compile_args=["-O2", "-std=gnu11"],
        optional=True))

setup(version=version(), ext_modules=extensions,
      options={"bdist_wheel": {"py_limited_api": "cp311"}} if extensions else {})
