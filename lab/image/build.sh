#!/usr/bin/env bash
# Builds the lab base images (Debian bookworm with systemd as PID 1) with debootstrap and
# `docker import`, because no registry is reachable. Two flavours, each tagged by a hash of
# this recipe, its package lists and the apt sources, so each is built once per machine:
#
#   bare   station-stack/lab-base:<hash>   debootstrap minbase + systemd: what a real first
#          install starts from (the offline scenario keeps using it, so a package the roles
#          forget to install is still found).
#   ready  station-stack/lab-ready:<hash>  bare + what every scenario installs anyway or needs
#          to be reached like a real host: openssh-server and sudo (SSH as a sudo user), acl
#          (temporary files for a become_user other than root), the apt modules' Python
#          library, Python's venv and packaging (the bridge), unzip (Grafana plugins).
#          Host keys are not baked: each container generates its own at first boot.
#
# Usage: lab/image/build.sh [ready|bare]   (default ready); prints the image reference.
# STATION_LAB_IMAGE / STATION_LAB_IMAGE_BARE override (e.g. images from your registry).
# STATION_LAB_MIRROR_SOURCES: the apt sources (deb822 .sources or one-line .list) to build
# from and to give the containers, when this machine's debian.sources is not the one to use.
set -euo pipefail

flavour=${1:-ready}
case $flavour in
  ready) [[ -z ${STATION_LAB_IMAGE:-} ]] || { echo "$STATION_LAB_IMAGE"; exit 0; } ;;
  bare) [[ -z ${STATION_LAB_IMAGE_BARE:-} ]] || { echo "$STATION_LAB_IMAGE_BARE"; exit 0; } ;;
  *) echo "usage: $0 [ready|bare]" >&2; exit 2 ;;
esac

base_packages=systemd,systemd-sysv,dbus,python3,ca-certificates,iproute2,procps
ready_packages="openssh-server sudo acl python3-apt python3-venv python3-packaging unzip"

# The override is read first: a machine without debian.sources must be able to use it.
sources=${STATION_LAB_MIRROR_SOURCES:-/etc/apt/sources.list.d/debian.sources}
if [[ ! -r $sources ]]; then
  if [[ -n ${STATION_LAB_MIRROR_SOURCES:-} ]]; then
    echo "[lab] STATION_LAB_MIRROR_SOURCES=$sources is not a readable file" >&2
  else
    echo "[lab] $sources not found: set STATION_LAB_MIRROR_SOURCES to an apt sources file" >&2
  fi
  exit 1
fi
# deb822 (URIs: ...) or one-line format (deb [options] URI suite ...).
mirror=$(awk '/^URIs:/ {print $2; exit} /^deb[ \t]/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$sources")
[[ -n $mirror ]] || { echo "[lab] no Debian mirror URI found in $sources" >&2; exit 1; }
case $sources in
  *.list) sources_dest=etc/apt/sources.list ;;
  *) sources_dest=etc/apt/sources.list.d/debian.sources ;;
esac

recipe=$( { cat "$0"; echo "$base_packages"; cat "$sources"; } | sha256sum | cut -c1-12)
bare="station-stack/lab-base:$recipe"
ready="station-stack/lab-ready:$( { echo "$recipe"; echo "$ready_packages"; } | sha256sum | cut -c1-12)"
want=$([[ $flavour == bare ]] && echo "$bare" || echo "$ready")

have() { docker image inspect "$1" >/dev/null 2>&1; }
if have "$want"; then
  echo "[lab] reusing $want" >&2; echo "$want"; exit 0
fi

# One build at a time on this machine (several worktrees share dockerd). Its own lock file:
# callers may hold /tmp/station-stack-image.lock around this script.
exec 9>/tmp/station-stack-image.build.lock
flock 9
if have "$want"; then
  echo "[lab] reusing $want (built meanwhile)" >&2; echo "$want"; exit 0
fi

if ! have "$bare"; then
  rootfs=$(mktemp -d /var/tmp/station-stack-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "[lab] building $bare from $mirror (about a minute)" >&2
  debootstrap --variant=minbase --include="$base_packages" bookworm "$rootfs" "$mirror" >&2
  # apt inside the containers uses the same mirrors as this machine.
  rm -f "$rootfs/etc/apt/sources.list"
  cp "$sources" "$rootfs/$sources_dest"
  # No getty or udev churn in a container; a fixed machine-id is regenerated per container.
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* 2>/dev/null || true
  tar -C "$rootfs" -c . | docker import \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    -c "LABEL io.station-stack.lab=bare" \
    - "$bare" >&2
  rm -rf "$rootfs"
  trap - EXIT
fi
[[ $flavour == bare ]] && { echo "$bare"; exit 0; }

# ready = bare + packages, installed in a throw-away container without systemd running.
echo "[lab] building $ready on $bare: $ready_packages" >&2
builder="station-stack-image-build-$$"
trap 'docker rm -f "$builder" >/dev/null 2>&1 || true' EXIT
docker run --name "$builder" "$bare" /bin/sh -euc "
  export DEBIAN_FRONTEND=noninteractive
  # No service starts in the build container.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get update -q
  apt-get install -y -q --no-install-recommends $ready_packages
  apt-get clean
  rm -f /usr/sbin/policy-rc.d
  # Every container gets its own host keys at first boot (ssh-keygen -A makes the missing ones).
  rm -f /etc/ssh/ssh_host_*
  mkdir -p /etc/systemd/system/ssh.service.d
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >/etc/systemd/system/ssh.service.d/station-stack-hostkeys.conf
" >&2
docker commit \
  -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
  -c "LABEL io.station-stack.lab=ready io.station-stack.bare=$bare" \
  "$builder" "$ready" >&2
echo "$ready"
