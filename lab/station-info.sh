#!/usr/bin/env bash
# Prints how to reach the lab station that `make station` deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The lab's secrets are vault-encrypted with the documented lab password (not a real secret).
lab_secret() {
  ANSIBLE_VAULT_PASSWORD_FILE=inventories/local/lab-vault-password ANSIBLE_CALLBACKS_ENABLED=ansible.posix.timer \
    ansible -i inventories/local station-stack-station \
    -m ansible.builtin.debug -a "msg={{ $1 }}" 2>/dev/null | sed -nE 's/^ *msg: (.*)$/\1/p'
}
admin_pw=$(lab_secret vault_influxdb_admin_password)
redis_pw=$(lab_secret vault_redis_admin_password)
cat <<INFO

Station container: station-stack-station (Debian 12, systemd)
  InfluxDB API from this machine:  http://127.0.0.1:18086  (auth on; users admin, bridge, grafana)
  Shell on the station:            docker exec -it station-stack-station bash
  Bridge (station-bridge@kraken):  publish demo ticks, then count them:
    docker exec station-stack-station /opt/station-bridge/venv/bin/station-bridge publish-demo --count 1000
    docker exec station-stack-station influx -username admin -password '$admin_pw' -database tick -execute 'SELECT count(bid) FROM ticks'
  InfluxQL as admin:               docker exec -it station-stack-station influx -username admin -password '$admin_pw' -database tick
  Latest tick in Redis:            docker exec -e REDISCLI_AUTH='$redis_pw' station-stack-station redis-cli --user admin --no-auth-warning \\
                                     hgetall 'latest:ticks,base=EUR,instrument=EURUSD,station=lab,term=USD'
  Stop / start the station:        make station-service STATE=stopped   (started, restarted)
  Lab credentials:                 inventories/local/group_vars/stations/vault.yml, vault password file
                                   inventories/local/lab-vault-password (lab only: never reuse on real stations)
  Re-converge (expect changed=0):  make station
  Remove:                          make station-down
INFO
