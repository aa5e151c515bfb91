"""The wheel carries the compiled path, or says it is pure: never a binary-tagged wheel without it.

setup.py builds the extension as a required part: where it cannot be compiled (here: CC=false,
a compiler that fails) `pip wheel` fails and names STATION_BRIDGE_PURE=1, which builds a pure
wheel (py3-none-any) on purpose. Each build runs on a copy of the bridge's sources in tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from compiled import c_compiler, require_compiled_path

from station_bridge import fastpath

BRIDGE = Path(__file__).resolve().parent.parent


def _sources(tmp_path: Path) -> Path:
    copy = tmp_path / "bridge"
    shutil.copytree(BRIDGE, copy, ignore=shutil.ignore_patterns(
        "tests", "chaos", "bench", "docs", "build", "*.egg-info", "*.so", "__pycache__", ".hypothesis"))
    return copy


def _wheel(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = tmp_path / "wheels"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
                          str(_sources(tmp_path))], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=300)
    return run, sorted(p.name for p in out.glob("*.whl")) if out.is_dir() else []


def test_without_a_working_compiler_the_wheel_build_fails_and_says_what_to_do(tmp_path):
    run, wheels = _wheel(tmp_path, CC="false", STATION_BRIDGE_PURE="")
    assert run.returncode != 0 and wheels == [], (run.returncode, wheels)
    assert "could not be built" in run.stderr + run.stdout and "STATION_BRIDGE_PURE=1" in run.stderr + run.stdout


def test_station_bridge_pure_builds_a_pure_wheel(tmp_path):
    run, wheels = _wheel(tmp_path, CC="false", STATION_BRIDGE_PURE="1")
    assert run.returncode == 0, run.stderr
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl"), wheels


def test_a_missing_extension_fails_the_tests_where_a_compiler_is(monkeypatch):
    if not c_compiler():
        pytest.skip("no C compiler here")
    monkeypatch.setattr(fastpath, "_fastpath", None)
    monkeypatch.setattr(fastpath, "_IMPORT_ERROR", "the compiled extension is not installed (test)")
    monkeypatch.delenv("STATION_BRIDGE_PURE", raising=False)
    with pytest.raises(pytest.fail.Exception, match="unavailable although"):
        require_compiled_path()
    monkeypatch.setenv("CC", "/nonexistent/cc")  # no compiler: the tests of the compiled path skip
    with pytest.raises(pytest.skip.Exception, match="no C compiler"):
        require_compiled_path()
    monkeypatch.setenv("STATION_BRIDGE_PURE", "1")
    with pytest.raises(pytest.skip.Exception):
        require_compiled_path()
