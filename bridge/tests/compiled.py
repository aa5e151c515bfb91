"""Whether the tests of the compiled path may skip: only where it cannot have been built.

A machine with a C compiler and Python's headers builds the extension (setup.py fails
otherwise), so there a missing or unusable extension fails these tests instead of skipping
them. They skip only without a compiler (the bridge then runs its pure Python path, as a
station does) or with STATION_BRIDGE_PURE=1 in the environment (pure Python on purpose).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
from pathlib import Path

import pytest

from station_bridge import fastpath


def c_compiler() -> str:
    """The C compiler setuptools would use, with Python.h beside it ("" when there is none)."""
    command = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    found = shutil.which(shlex.split(command)[0]) if command.strip() else None
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return found if found and headers.is_file() else ""


def require_compiled_path() -> None:
    """Returns when the compiled path runs here; skips where it cannot; fails where it should."""
    why = fastpath.unavailable()
    if not why:
        return
    if os.environ.get("STATION_BRIDGE_PURE") == "1":
        pytest.skip(f"compiled path: {why}")
    compiler = c_compiler()
    if compiler:
        pytest.fail(f"the compiled path is unavailable although {compiler} and Python.h are here "
                    f"(build it: cd bridge && python setup.py build_ext --inplace): {why}")
    pytest.skip(f"compiled path: {why} (no C compiler here)")
