"""Stand-in for get-pip.py, which ansible-test fetches from ci-files.testing.ansible.com (unreachable here).

ansible-test runs it in a new virtualenv created without pip, with pip's install arguments
(`pip==X`, `--no-setuptools`, `--no-wheel`): pip comes from Python's bundled ensurepip, then
the requested version from the package index like every other requirement.
"""

import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
