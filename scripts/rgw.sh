#!/usr/bin/env bash
# rgw.sh: a throw-away S3 server for pagewise's tests and `pagewise bench
# remote`: one Ceph monitor, one OSD keeping its data in RAM (memstore) and
# one RADOS Gateway, all bound to 127.0.0.1 and owned by the caller.
#
#   rgw.sh start DIR      build a fresh cluster in DIR (must be empty or made
#                         by this script) and start it; prints KEY=VALUE lines
#                         (S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                         AWS_REGION), also saved in DIR/s3.env
#   rgw.sh stop DIR       stop every daemon of DIR (gateway, OSD, monitor, in
#                         that order) and delete DIR
#   rgw.sh gateway-stop DIR / gateway-start DIR
#                         stop or restart only the gateway: the objects stay
#                         in the OSD (tests of an S3 outage)
#
# Ports: RGW_PORT (S3), MON_PORT and MON_V1_PORT (monitor), 127.0.0.1 only;
# defaults 7480/3300/6789. Parallel jobs must each choose their own, below
# the kernel's ephemeral range (ip_local_port_range), where connect(2) may
# take them; a busy monitor port fails `start` with exit status 75 so that
# a caller can pick others.
# Keys: S3_ACCESS_KEY / S3_SECRET_KEY (test keys by default).
# RGW_OWNER_PID: stop the cluster (and delete DIR) once that process is gone,
# so that a crashed test leaves nothing running.
# Needs the Debian packages ceph-mon ceph-osd radosgw ceph-common
# (scripts/install-deps.sh installs them).
#
# Only processes whose pid files live in DIR/run and whose command line names
# DIR/ceph.conf are ever signalled.
set -euo pipefail

cmd=${1:-}
DIR=${2:-}
if [ -z "$cmd" ] || [ -z "$DIR" ]; then
  echo "usage: rgw.sh start|stop|gateway-stop|gateway-start DIR" >&2
  exit 2
fi
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-3300}
MON_V1_PORT=${MON_V1_PORT:-6789}
ACCESS=${S3_ACCESS_KEY:-PAGEWISETESTKEY00001}
SECRET=${S3_SECRET_KEY:-pagewise-test-secret-key-000000000000001}
WAIT_SECONDS=${RGW_WAIT_SECONDS:-120}

say() { echo "rgw.sh: $*" >&2; }

# Our daemons only: the pid in DIR/run/NAME.pid runs with DIR/ceph.conf.
our_pid() {
  local f=$DIR/run/$1.pid p
  [ -f "$f" ] || return 1
  p=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF -- "$DIR/ceph.conf" || return 1
  echo "$p"
}

# Stops one daemon: TERM, wait up to 10 s, then KILL.
stop_daemon() {
  local p i
  p=$(our_pid "$1") || { rm -f "$DIR/run/$1.pid"; return 0; }
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 200); do
    [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] || break
    sleep 0.05
  done
  if [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
    say "$1 (pid $p) ignored TERM; killing it"
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$DIR/run/$1.pid"
}

# until CMD succeeds, for at most WAIT_SECONDS
wait_until() {
  local what=$1 deadline=$((SECONDS + WAIT_SECONDS))
  shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "timed out waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

gateway_answers() {
  [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$RGW_PORT/")" = 200 ]
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_gateway() {
  radosgw -c "$DIR/ceph.conf" -n client.rgw.gw
  wait_until "the gateway on port $RGW_PORT" gateway_answers
}

write_conf() {
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon_host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_V1_PORT]
public_addr = 127.0.0.1
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $DIR/keyring
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
crash_dir = $DIR/log
mon_cluster_log_file = $DIR/log/cluster.log
log_to_stderr = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
mon_data_avail_warn = 2
mon_data_avail_crit = 1
[mon]
mon_data = $DIR/mon
# A single monitor commits map changes every 50 ms instead of every second:
# the cluster is up in seconds instead of a quarter of a minute.
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
auth_allow_insecure_global_id_reclaim = false
[osd]
osd_data = $DIR/osd
osd_objectstore = memstore
memstore_device_bytes = ${MEMSTORE_BYTES:-4294967296}
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
[client.rgw.gw]
# tcp_nodelay: error replies otherwise wait ~40 ms for Nagle's algorithm.
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw_data = $DIR/rgw
rgw_thread_pool_size = 64
rgw_enable_usage_log = false
# Free the RAM of deleted objects after seconds, not hours.
rgw_gc_obj_min_wait = 5
rgw_gc_processor_period = 10
EOF
}

start_cluster() {
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/.pagewise-rgw" ]; then
    say "$DIR is not empty and was not made by rgw.sh: refusing to use it"
    exit 1
  fi
  for p in "$RGW_PORT" "$MON_PORT" "$MON_V1_PORT"; do
    if port_in_use "$p"; then
      say "port 127.0.0.1:$p is in use (choose RGW_PORT/MON_PORT/MON_V1_PORT)"
      exit 75
    fi
  done
  stop_all
  rm -rf "${DIR:?}"/* "$DIR/.pagewise-rgw"
  touch "$DIR/.pagewise-rgw"
  mkdir -p "$DIR"/run "$DIR"/log "$DIR"/mon "$DIR"/osd "$DIR"/rgw
  write_conf
  export CEPH_CONF=$DIR/ceph.conf
  local kr=$DIR/keyring
  ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' \
    --cap mgr 'allow profile osd' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.rgw.gw --cap mon 'allow rw' --cap osd 'allow rwx' \
    >/dev/null
  monmaptool --create --fsid "$(awk '/^fsid/ {print $3}' "$DIR/ceph.conf")" \
    --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_V1_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$kr" 2>"$DIR/log/mon-mkfs.err" || {
    say "ceph-mon --mkfs failed: $(cat "$DIR/log/mon-mkfs.err")"
    return 1
  }
  ceph-mon -c "$DIR/ceph.conf" -i a
  # The ports were free when checked above, but an outgoing connection of
  # another process may take one since (the check only sees listeners). The
  # monitor then logs "unable to bind" and gives up after 15 s, and the OSD
  # would wait 300 s for it: say so at once with status 75 (choose others).
  local deadline=$((SECONDS + WAIT_SECONDS))
  until timeout 6 ceph --connect-timeout 3 mon stat >/dev/null 2>&1; do
    if grep -q "unable to bind" "$DIR/log/mon.a.log" 2>/dev/null; then
      say "the monitor could not bind 127.0.0.1:$MON_PORT/$MON_V1_PORT (taken since the check)"
      stop_all
      exit 75
    fi
    if [ $SECONDS -ge $deadline ]; then
      say "timed out waiting for the monitor"
      return 1
    fi
    sleep 0.1
  done
  local uuid
  uuid=$(cat /proc/sys/kernel/random/uuid)
  ceph-osd -i 0 --mkfs --osd-uuid "$uuid" >"$DIR/log/osd-mkfs.log" 2>&1 || {
    say "ceph-osd --mkfs failed: $(tail -3 "$DIR/log/osd-mkfs.log")"
    return 1
  }
  [ "$(timeout 60 ceph osd new "$uuid" 0)" = 0 ] || { say "ceph osd new failed"; return 1; }
  ceph-osd -c "$DIR/ceph.conf" -i 0 2>>"$DIR/log/osd.stderr"
  osd_up() { timeout 20 ceph osd dump -f json | grep -q '"up":1'; }
  wait_until "the OSD" osd_up
  start_gateway
  timeout 120 radosgw-admin user create --uid=pagewise-test --display-name="pagewise tests" \
    --access-key="$ACCESS" --secret-key="$SECRET" >"$DIR/log/user.json" 2>"$DIR/log/user.err" || {
    say "radosgw-admin user create failed: $(cat "$DIR/log/user.err")"
    return 1
  }
  cat >"$DIR/s3.env" <<EOF
S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
AWS_ACCESS_KEY_ID=$ACCESS
AWS_SECRET_ACCESS_KEY=$SECRET
AWS_REGION=us-east-1
EOF
  cat "$DIR/s3.env"
  if [ -n "${RGW_OWNER_PID:-}" ]; then
    # Watchdog: when the owner dies (even by a crash) the cluster goes too.
    local self
    self=$(readlink -f "$0")
    (
      while kill -0 "$RGW_OWNER_PID" 2>/dev/null && [ -f "$DIR/.pagewise-rgw" ]; do sleep 1; done
      bash "$self" stop "$DIR"
    ) </dev/null >/dev/null 2>&1 &
  fi
}

stop_all() {
  # Gateway first: it hangs in shutdown when the OSD or monitor vanish first.
  for name in client.rgw.gw osd.0 mon.a; do stop_daemon "$name"; done
}

case $cmd in
  start)
    if ! start_cluster; then
      for f in "$DIR"/log/*.log; do [ -s "$f" ] && { say "--- $f"; tail -n 8 "$f" >&2; }; done
      stop_all
      exit 1
    fi
    ;;
  stop)
    [ -d "$DIR" ] || exit 0
    DIR=$(cd "$DIR" && pwd)
    stop_all
    if [ -f "$DIR/.pagewise-rgw" ]; then rm -rf "${DIR:?}"; fi
    ;;
  gateway-stop)
    DIR=$(cd "$DIR" && pwd)
    stop_daemon client.rgw.gw
    ;;
  gateway-start)
    DIR=$(cd "$DIR" && pwd)
    export CEPH_CONF=$DIR/ceph.conf
    eval "$(grep '^S3_ENDPOINT' "$DIR/s3.env")"
    RGW_PORT=${S3_ENDPOINT##*:}
    start_gateway
    ;;
  *)
    echo "rgw.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
