#!/usr/bin/env bash
# Creates the project virtualenv (.venv) with the pinned tools and the bridge package.
# Re-runs are no-ops unless requirements.txt or bridge/pyproject.toml changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${STATION_VENV:-$root/.venv}
stamp=$venv/.station-stack-stamp
want=$(cat "$root/requirements.txt" "$root"/bridge/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16 || true)

if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
echo "[lab] preparing $venv" >&2
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$root/requirements.txt"
if [[ -f $root/bridge/pyproject.toml ]]; then
  "$venv/bin/pip" install -q -e "$root/bridge[test]"
fi
echo "$want" >"$stamp"
