"""Only the version is computed here (version.py); everything else is in pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from version import version

setup(version=version())
