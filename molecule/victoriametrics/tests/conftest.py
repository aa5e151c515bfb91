"""Verifier helpers live in molecule/_shared/verifier.py; the bridge's test harness in bridge/tests."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "molecule" / "_shared"))
sys.path.insert(0, str(ROOT / "bridge" / "tests"))
sys.path.insert(0, str(ROOT / "bridge" / "src"))
