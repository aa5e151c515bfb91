#!/usr/bin/env bash
# Builds the lab base image (Debian bookworm with systemd as PID 1) with debootstrap
# and `docker import`, because no registry is reachable. The tag is a hash of this
# recipe and the apt sources, so it is built once per machine and rebuilt only when
# the recipe changes. STATION_LAB_IMAGE overrides it (e.g. an image from your registry).
# Prints the image reference on stdout.
set -euo pipefail

sources=/etc/apt/sources.list.d/debian.sources
packages=systemd,systemd-sysv,dbus,python3,ca-certificates,iproute2,procps

if [[ -n ${STATION_LAB_IMAGE:-} ]]; then
  echo "$STATION_LAB_IMAGE"; exit 0
fi

[[ -r $sources ]] || { echo "[lab] $sources not found: set STATION_LAB_MIRROR_SOURCES" >&2; exit 1; }
sources=${STATION_LAB_MIRROR_SOURCES:-$sources}
hash=$( { cat "$0"; echo "$packages"; cat "$sources"; } | sha256sum | cut -c1-12)
image="station-stack/lab-base:$hash"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "[lab] reusing $image" >&2; echo "$image"; exit 0
fi

mirror=$(awk '/^URIs:/ {print $2; exit}' "$sources")
rootfs=$(mktemp -d /var/tmp/station-stack-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "[lab] building $image from $mirror (about a minute)" >&2
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >&2
# apt inside the containers uses the same mirrors as this machine.
cp "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
rm -f "$rootfs/etc/apt/sources.list"
# No getty or udev churn in a container; a fixed machine-id is regenerated per container.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* 2>/dev/null || true
tar -C "$rootfs" -c . | docker import \
  -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
  - "$image" >&2
echo "$image"
