#!/usr/bin/env bash
# Prints how to reach the lab station that `make station` deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
secrets=inventories/local/group_vars/stations/secrets.yml
admin_pw=$(awk '/^influxdb_admin_password:/ {print $2}' "$secrets")
cat <<INFO

Station container: station-stack-station (Debian 12, systemd)
  InfluxDB API from this machine:  http://127.0.0.1:18086  (auth on; users admin, bridge, grafana)
  Shell on the station:            docker exec -it station-stack-station bash
  Bridge (station-bridge@kraken):  publish demo ticks, then count them:
    docker exec station-stack-station /opt/station-bridge/venv/bin/station-bridge publish-demo --count 1000
    docker exec station-stack-station influx -username admin -password '$admin_pw' -database tick -execute 'SELECT count(bid) FROM ticks'
  InfluxQL as admin:               docker exec -it station-stack-station influx -username admin -password '$admin_pw' -database tick
  Lab credentials:                 $secrets  (lab only: use ansible-vault on real stations)
  Re-converge (expect changed=0):  make station
  Remove:                          make station-down
INFO
