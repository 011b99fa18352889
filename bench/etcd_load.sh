#!/usr/bin/env bash
# What many members cost one etcd: starts a single etcd (port 23931, its own data dir)
# and runs dcs-etcd's `etcd_load` example against it for each count in COUNTS (default
# "100 1000"): that many members' worth of the real etcd backend (one EtcdDcs each,
# with its own connections, lease, keepalive stream and watch), in clusters of 3, each
# making an idle HA cycle's calls every LOOP_WAIT (default 10; TTL 30, RETRY_TIMEOUT 10),
# no Postgres. Prints etcd's started calls/streams per minute by method, per member,
# and etcd's CPU seconds per minute and RSS.
#   COUNTS="100 1000" SECONDS_WINDOW=60 SETTLE=40 bench/etcd_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-"100 1000"}
PORT=${BENCH_ETCD_PORT:-23931}
DIR=${BENCH_DIR:-/tmp/fullauto-etcd-load}
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release -q -p dcs-etcd --example etcd_load
ulimit -n 65536 2>/dev/null || true
for n in $COUNTS; do
  rm -rf "$DIR"; mkdir -p "$DIR"
  /usr/bin/etcd --name load --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
    --listen-peer-urls "http://127.0.0.1:$((PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 1))" \
    --initial-cluster "load=http://127.0.0.1:$((PORT + 1))" >"$DIR/etcd.log" 2>&1 &
  ETCD_PID=$!
  trap 'kill $ETCD_PID 2>/dev/null || true' EXIT
  sleep 2
  echo "== $n members"
  target/release/examples/etcd_load --endpoint "127.0.0.1:$PORT" --etcd-pid "$ETCD_PID" \
    --members "$n" --loop-wait "${LOOP_WAIT:-10}" --ttl "${TTL:-30}" --retry-timeout "${RETRY_TIMEOUT:-10}" \
    --settle "${SETTLE:-40}" --seconds "${SECONDS_WINDOW:-60}"
  kill "$ETCD_PID"; wait "$ETCD_PID" 2>/dev/null || true
done
