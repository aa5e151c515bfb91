#!/usr/bin/env bash
# Creates the project virtualenv (.venv) with the pinned tools and the bridge package.
# Re-runs are no-ops unless requirements.txt, the bridge's build files or its C source changed.
# The editable install builds the bridge's extension in place (bridge/src/station_bridge/
# _fastpath.abi3.so, git-ignored); a changed _fastpath.c rebuilds it. Without a C compiler the
# install fails (bridge/setup.py) unless STATION_BRIDGE_PURE=1 is set: then pure Python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${STATION_VENV:-$root/.venv}
stamp=$venv/.station-stack-stamp
want=$(cat "$root/requirements.txt" "$root"/bridge/pyproject.toml "$root"/bridge/setup.py \
  "$root"/bridge/src/station_bridge/*.c 2>/dev/null | sha256sum | cut -c1-16 || true)

if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
echo "[lab] preparing $venv" >&2
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$root/requirements.txt"
if [[ -f $root/bridge/pyproject.toml ]]; then
  "$venv/bin/pip" install -q -e "$root/bridge[test]"
  # Says whether the compiled path is there (a station without a compiler runs pure Python).
  "$venv/bin/python" -c 'import station_bridge.fastpath as f; print("[lab] bridge fast path:", f.unavailable() or "compiled")' >&2 || true
fi
echo "$want" >"$stamp"
