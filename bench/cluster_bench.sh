#!/usr/bin/env bash
# Measures, on a local 3-node cluster (real etcd, real PostgreSQL 15, release build):
#   - unplanned failover: kill -9 of the primary's agent and postmaster until the new
#     primary acknowledges a write, split into lease expiry (leader key deleted by etcd),
#     reaction (deletion -> new leader key) and promotion (new key -> first write);
#   - switchover write gap: longest pause between acknowledged writes of a client that
#     writes continuously while `POST /switchover` runs;
#   - agent memory: VmRSS of each agent process and of its write-fence keeper;
#   - DCS load: etcd gRPC requests per member per second in steady state.
#   - false failovers: leader changes during a pgbench run against the primary.
# Usage: bench/cluster_bench.sh [default|fast]   (default: ttl 30/loop 10/retry 10;
#        fast: ttl 2/loop 0.5/retry 0.75). Prints one result block; uses only loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-default}
case "$PROFILE" in
  default) export FULLAUTO_DEMO_TTL=30 FULLAUTO_DEMO_LOOP_WAIT=10 FULLAUTO_DEMO_RETRY_TIMEOUT=10 ;;
  fast)    export FULLAUTO_DEMO_TTL=2 FULLAUTO_DEMO_LOOP_WAIT=0.5 FULLAUTO_DEMO_RETRY_TIMEOUT=0.75 ;;
  *) echo "usage: $0 [default|fast]" >&2; exit 2 ;;
esac
export FULLAUTO_DEMO_DIR=${FULLAUTO_DEMO_DIR:-/tmp/fullauto-bench}
export FULLAUTO_DEMO_ETCD_PORT=${FULLAUTO_DEMO_ETCD_PORT:-23801}
DIR=$FULLAUTO_DEMO_DIR
ETCD=127.0.0.1:$FULLAUTO_DEMO_ETCD_PORT
BIN=target/release
now() { date +%s.%N; }
ms() { python3 -c "print(round(($2-$1)*1000))"; }
# The leader watch runs in its own process group so that etcdctl goes with it.
cleanup() {
  [ -n "${WRITER:-}" ] && kill "$WRITER" 2>/dev/null
  scripts/demo down >/dev/null 2>&1 || true
  [ -n "${WATCH_PID:-}" ] && kill -- "-$WATCH_PID" 2>/dev/null || true
}
trap cleanup EXIT

export FULLAUTO_DEMO_API_PORT=${FULLAUTO_DEMO_API_PORT:-8041} FULLAUTO_DEMO_PG_PORT=${FULLAUTO_DEMO_PG_PORT:-5441}
scripts/demo up >/dev/null
port_of() { echo $((FULLAUTO_DEMO_PG_PORT + ${1#pg})); }
api_of() { echo $((FULLAUTO_DEMO_API_PORT + ${1#pg})); }
leader() { etcdctl --endpoints "$ETCD" get --print-value-only /service/demo/leader; }
psql_w() { psql -h 127.0.0.1 -p "$1" -U postgres -XAtq -v ON_ERROR_STOP=1 -c "$2" >/dev/null 2>&1; }

L=$(leader)
psql_w "$(port_of "$L")" "CREATE TABLE IF NOT EXISTS b (id bigserial primary key, at timestamptz default now())"
sleep 2

# --- memory -----------------------------------------------------------------
echo "profile: $PROFILE (ttl ${FULLAUTO_DEMO_TTL}, loop_wait ${FULLAUTO_DEMO_LOOP_WAIT}, retry_timeout ${FULLAUTO_DEMO_RETRY_TIMEOUT})"
for n in pg0 pg1 pg2; do
  pid=$(cat "$DIR/$n.pid")
  keeper=$(ps -o pid= --ppid "$pid" -o comm= | awk '$2=="fullauto"{print $1}' | head -1)
  echo "rss_kib $n agent=$(awk '/VmRSS/{print $2}' /proc/$pid/status) fence_keeper=$( [ -n "$keeper" ] && awk '/VmRSS/{print $2}' /proc/$keeper/status || echo none)"
done

# --- DCS requests in steady state ---------------------------------------------
# Per gRPC method, so a change in who calls what shows. Two windows: an idle cluster,
# then one row written per second on the primary (the WAL moves every cycle, so the
# leader publishes a new `status` each time).
requests_by_method() {
  curl -s "http://$ETCD/metrics" | awk '/^grpc_server_handled_total/ {
    match($0, /grpc_method="[^"]*"/); m = substr($0, RSTART + 13, RLENGTH - 14); n[m] += $2 }
    END { for (m in n) print m, n[m] }' | sort
}
measure_requests() {  # label window_s
  local before after
  before=$(requests_by_method); sleep "$2"; after=$(requests_by_method)
  python3 - "$1" "$2" "$before" "$after" <<'PY'
import sys
label, window = sys.argv[1], float(sys.argv[2])
parse = lambda t: {l.split()[0]: float(l.split()[1]) for l in t.splitlines() if l.strip()}
b, a = parse(sys.argv[3]), parse(sys.argv[4])
d = {m: a[m] - b.get(m, 0) for m in a if a[m] - b.get(m, 0) > 0}
per = lambda n: round(n / 3 / window, 3)
print(f"etcd_requests_per_member_per_s_{label} {per(sum(d.values()))} (window {window:g}s, 3 members; "
      + ", ".join(f"{m} {per(n)}" for m, n in sorted(d.items())) + ")")
PY
}
WINDOW=${DCS_WINDOW:-30}
measure_requests idle "$WINDOW"
LP=$(port_of "$(leader)")
( while true; do psql_w "$LP" "INSERT INTO b DEFAULT VALUES" || true; sleep 1; done ) & WRITER=$!
measure_requests writing "$WINDOW"
kill "$WRITER" 2>/dev/null || true; wait "$WRITER" 2>/dev/null || true; WRITER=

# --- false failovers under load -----------------------------------------------
L=$(leader)
if command -v pgbench >/dev/null; then
  pgbench -h 127.0.0.1 -p "$(port_of "$L")" -U postgres -i -s 5 postgres >/dev/null 2>&1 || true
  pgbench -h 127.0.0.1 -p "$(port_of "$L")" -U postgres -c 4 -j 2 -T "${LOAD_SECONDS:-30}" postgres >/dev/null 2>&1 || true
  echo "leader_after_load $(leader) (was $L)"
fi

# --- switchover write gap -------------------------------------------------------
# A client with one persistent connection per node (bench/write-probe) commits rows
# continuously; the gap is the longest pause between two acknowledged commits.
cargo build --release -q -p write-probe
L=$(leader); C=$(for n in pg0 pg1 pg2; do if [ "$n" != "$L" ]; then echo "$n"; fi; done | head -1)
"$BIN/write-probe" --ports "$(port_of pg0),$(port_of pg1),$(port_of pg2)" --seconds 7 > "$DIR/gap" & WP=$!
sleep 2
curl -s -XPOST "http://127.0.0.1:$(api_of "$L")/switchover" -d "{\"leader\":\"$L\",\"candidate\":\"$C\"}" >/dev/null
wait "$WP"
echo "switchover_$(cat "$DIR/gap") ($L -> $C)"

# --- unplanned failover ---------------------------------------------------------
sleep 3
L=$(leader)
export ETCD DIR
setsid bash -c 'etcdctl --endpoints "$ETCD" watch /service/demo/leader | while read -r line; do echo "$(date +%s.%N) $line"; done > "$DIR/watch"' & WATCH_PID=$!
sleep 1
T0=$(now)
kill -9 "$(cat "$DIR/$L.pid")" "$(head -1 "$DIR/data/$L/postmaster.pid")"
NEW=""; TW=""
while [ -z "$TW" ]; do
  for n in pg0 pg1 pg2; do
    [ "$n" = "$L" ] && continue
    if psql_w "$(port_of "$n")" "INSERT INTO b DEFAULT VALUES"; then NEW=$n; TW=$(now); break; fi
  done
done
sleep 1
TDEL=$(awk '$2=="DELETE"{print $1; exit}' "$DIR/watch")
TPUT=$(awk '$2=="PUT"{print $1; exit}' "$DIR/watch")
echo "failover_total_ms $(ms "$T0" "$TW") ($L -> $NEW)"
echo "  lease_expiry_ms $(ms "$T0" "$TDEL")  reaction_ms $(ms "$TDEL" "$TPUT")  promote_to_first_write_ms $(ms "$TPUT" "$TW")"
