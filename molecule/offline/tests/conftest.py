"""Verifier helpers live in molecule/_shared/verifier.py, shared by every scenario."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))

from verifier import ADMIN, READER, WRITER, Influx, http, influx, run_converge, wait_until  # noqa: E402,F401
