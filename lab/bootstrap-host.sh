#!/usr/bin/env bash
# Installs what the lab needs on a Debian 12 controller (run as root) and starts
# the Docker engine when none answers. Safe to run again: it only acts on what is missing.
set -euo pipefail

log() { printf '[lab] %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v influxd >/dev/null 2>&1 || need_pkgs+=(influxdb)         # real influxd for unit tests
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)  # real redis for bridge tests
command -v victoria-metrics >/dev/null 2>&1 || need_pkgs+=(victoria-metrics)  # real VictoriaMetrics for bridge tests
command -v make >/dev/null 2>&1 || need_pkgs+=(make)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)     # the fleet scenario reaches hosts over SSH
# The bridge's compiled hot path (bridge/setup.py, optional: without them the pure Python path
# is built and 20 tests of it are skipped) needs a C compiler and Python's headers.
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))' \
  >/dev/null 2>&1 || need_pkgs+=(python3-dev)
# Debian's python3 has no ensurepip until python3-venv is installed.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_pkgs+=(python3-venv)

if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing ${need_pkgs[*]} and not root: install them or run as root"; exit 1
  fi
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The host has no init: keep package scripts from starting services here.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/station-stack-dockerd.log)"
  # Its own session: the engine outlives the make target (and a test stage's process group) that started it.
  setsid nohup dockerd >/var/log/station-stack-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer in 60 s"; tail -20 /var/log/station-stack-dockerd.log; exit 1; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}') ready"
