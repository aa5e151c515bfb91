"""Every test publisher goes through `harness.publisher`.

Two CI failures came from tests' own publishers, not from the bridge: a PUB that slept and hoped the
bridge had subscribed (its first frames went nowhere under load), and a PUB with the default SNDHWM
that dropped 232 messages of a 2,000-message burst before the bridge could take them. The fix was
made once, in `harness.publisher` (XPUB, SNDHWM 0, verbose) and `harness.subscribed`; this test
keeps every test and chaos file on it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = re.compile(r"\.socket\(\s*zmq\.X?PUB\s*\)")


def test_no_test_makes_its_own_pub_or_xpub_socket():
    offenders = []
    for folder in ("tests", "chaos"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "harness.py" or path == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if RAW.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "make test publishers with harness.publisher (and wait with harness.subscribed):\n" + \
        "\n".join(offenders)


def test_the_check_sees_a_raw_publisher():
    assert RAW.search("pub = zmq_context.socket(zmq.PUB)") and RAW.search("s = ctx.socket( zmq.XPUB )")
    assert not RAW.search("sub = ctx.socket(zmq.SUB)")
