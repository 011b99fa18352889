#!/usr/bin/env bash
# What the dashboard costs the agent: CPU time of one agent (pg0 of a local 3-node demo
# cluster) over the same period with nobody watching, then with one dashboard event
# stream (/ui/events) open, and how fast the page itself is served.
#
#   bench/ui_cpu.sh [SECONDS]          (default 60 s per phase)
#
# Uses the release binaries (FULLAUTO_DEMO_BIN=target/debug to measure a debug build);
# starts and stops the cluster with scripts/demo in its own directory and ports.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
export FULLAUTO_DEMO_DIR=${FULLAUTO_DEMO_DIR:-/tmp/fullauto-ui-bench}
export FULLAUTO_DEMO_ETCD_PORT=${FULLAUTO_DEMO_ETCD_PORT:-24571}
export FULLAUTO_DEMO_API_PORT=${FULLAUTO_DEMO_API_PORT:-8641}
export FULLAUTO_DEMO_PG_PORT=${FULLAUTO_DEMO_PG_PORT:-6741}
API=$FULLAUTO_DEMO_API_PORT
trap 'scripts/demo down >/dev/null 2>&1 || true' EXIT
scripts/demo up >/dev/null
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$API/replica" >/dev/null || curl -sf "http://127.0.0.1:$API/primary" >/dev/null && break
  sleep 1
done
PID=$(cat "$FULLAUTO_DEMO_DIR/pg0.pid")
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
sleep 5
a=$(ticks); sleep "$SECS"; b=$(ticks)
idle_ms=$(( (b - a) * 1000 / HZ ))
curl -sN "http://127.0.0.1:$API/ui/events" >/dev/null &
WATCH=$!
sleep 2
a=$(ticks); sleep "$SECS"; b=$(ticks)
kill "$WATCH" 2>/dev/null || true
watch_ms=$(( (b - a) * 1000 / HZ ))
page=$(curl -so /dev/null -w '%{time_total} s, %{size_download} bytes' "http://127.0.0.1:$API/ui")
js=$(curl -so /dev/null -w '%{size_download}' "http://127.0.0.1:$API/ui/app.js")
css=$(curl -so /dev/null -w '%{size_download}' "http://127.0.0.1:$API/ui/style.css")
echo "agent pg0 CPU over ${SECS} s: nobody watching ${idle_ms} ms, one dashboard open ${watch_ms} ms"
echo "GET /ui: ${page}; app.js ${js} bytes, style.css ${css} bytes"
