#!/usr/bin/env bash
# ansible-test on the collection station_stack.station: `tests/ansible-test.sh sanity|units [args]`.
# ansible-test wants the collection under .../ansible_collections/<namespace>/<name>/ and does
# not follow directory symlinks, so the collection's plugins, metadata and tests are copied
# into .cache/ansible-test/ansible_collections/station_stack/station/ first (a few hundred kB).
# Sanity tests run in virtualenvs ansible-test builds from PyPI (cached under .cache/); the unit
# tests run in the project's venv (--local), where their pinned requirements and influxd are.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command=${1:?usage: tests/ansible-test.sh sanity|units [ansible-test args]}
shift
tree=$root/.cache/ansible-test/ansible_collections/station_stack/station
mkdir -p "$tree"
for path in galaxy.yml meta plugins tests/unit tests/sanity; do
  rm -rf "${tree:?}/$path"
  if [[ -e $root/$path ]]; then
    mkdir -p "$(dirname "$tree/$path")"
    cp -a "$root/$path" "$tree/$path"
  fi
done
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
cd "$tree"
# ansible-test lists content with git where it finds a repository, walking up: this checkout's
# would hide the ignored .cache/. A repository of its own (files untracked) answers instead.
if [[ ! -d .git ]]; then
  git init -q .
  printf '/tests/output/\n' >.gitignore
fi
# ansible-test keeps its sanity virtualenvs under ~/.ansible/test: keep them in the tree too.
export HOME=$root/.cache/ansible-test/home
# New virtualenvs get pip from a bootstrap script ansible-test downloads from a host that is not
# reachable here; its documented cache location holds tests/get-pip-standin.py instead.
pip_version=$("$(dirname "$(command -v ansible-test)")/python" -c 'import ansible_test, pathlib, re
source = (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
print(re.search(r"pip=.([0-9.]+)", source)[1].replace(".", "_"))')
mkdir -p "$HOME/.ansible/test/cache"
cp "$root/tests/get-pip-standin.py" "$HOME/.ansible/test/cache/get_pip_$pip_version.py"
case $command in
  sanity)
    exec ansible-test sanity --local --python 3.11 --color no "$@" ;;
  units)
    exec ansible-test units --local --python 3.11 --color no "$@" ;;
  *)
    echo "unknown command $command: sanity or units" >&2; exit 2 ;;
esac
