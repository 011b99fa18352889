#!/usr/bin/env bash
# The fullauto proxy side by side with a direct connection, HAProxy and pgbouncer, in
# one run on the demo cluster (3 release-build agents, etcd, PostgreSQL 15, loopback):
#   1. pgbench select-only (simple protocol, persistent connections): latency p50/p99
#      from pgbench's per-transaction log and throughput, direct to the primary vs
#      through fullauto-proxy (clients authenticate to it, SCRAM), HAProxy (Patroni's
#      documented check) and pgbouncer (session pooling, SCRAM), in interleaved rounds;
#   2. switchovers: bench/write-probe (one persistent connection, one commit at a time)
#      through HAProxy and through fullauto-proxy during `POST /switchover`, alternating:
#      the longest pause between two acknowledged commits and the errors the client saw.
# Usage: bench/proxy_bench.sh   (env: ROUNDS=3 SECONDS_PER_RUN=10 CLIENTS=4
#        SWITCHOVERS=3; FULLAUTO_SKIP_BUILD=1 to use target/release as it is).
# Needs haproxy and pgbouncer (scripts/setup installs them). Prints one result block.
set -euo pipefail
cd "$(dirname "$0")/.."
export FULLAUTO_DEMO_DIR=${FULLAUTO_DEMO_DIR:-/tmp/fullauto-proxybench}
export FULLAUTO_DEMO_ETCD_PORT=${FULLAUTO_DEMO_ETCD_PORT:-23831}
export FULLAUTO_DEMO_API_PORT=${FULLAUTO_DEMO_API_PORT:-8161}
export FULLAUTO_DEMO_PG_PORT=${FULLAUTO_DEMO_PG_PORT:-5561}
DIR=$FULLAUTO_DEMO_DIR
ETCD=127.0.0.1:$FULLAUTO_DEMO_ETCD_PORT
BIN=target/release
PROXY_PORT=${PROXY_PORT:-6561} HAPROXY_PORT=${HAPROXY_PORT:-6562}
BOUNCER_PORT=${BOUNCER_PORT:-6563} METRICS_PORT=${METRICS_PORT:-6564}
ROUNDS=${ROUNDS:-3} SECONDS_PER_RUN=${SECONDS_PER_RUN:-10} CLIENTS=${CLIENTS:-4}
SWITCHOVERS=${SWITCHOVERS:-3}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench

if [ -z "${FULLAUTO_SKIP_BUILD:-}" ]; then
  cargo build --release -p agent-bin -p write-probe
fi
export FULLAUTO_SKIP_BUILD=1
for tool in haproxy pgbouncer; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup" >&2; exit 1; }
done

cleanup() {
  for p in "${PROXY_PID:-}" "${HAPROXY_PID:-}" "${BOUNCER_PID:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  scripts/demo down >/dev/null 2>&1 || true
}
trap cleanup EXIT

scripts/demo up >/dev/null
port_of() { echo $((FULLAUTO_DEMO_PG_PORT + ${1#pg})); }
api_of() { echo $((FULLAUTO_DEMO_API_PORT + ${1#pg})); }
leader() { etcdctl --endpoints "$ETCD" get --print-value-only /service/demo/leader; }
ready() { pg_isready -q -h 127.0.0.1 -p "$1" -U postgres; }
L=$(leader)
LP=$(port_of "$L")

# --- the three middlemen ---------------------------------------------------------
printf '"postgres" "bench"\n' > "$DIR/users.txt"
chmod 644 "$DIR/users.txt"
cat > "$DIR/proxy.yml" <<YAML
scope: demo
namespace: /service/
etcd3:
  hosts: $ETCD
proxy:
  name: bench-proxy
  listen_rw: 127.0.0.1:$PROXY_PORT
  metrics_listen: 127.0.0.1:$METRICS_PORT
  pause_deadline: 30
  auth_file: $DIR/users.txt
YAML
"$BIN/fullauto-proxy" "$DIR/proxy.yml" > "$DIR/proxy.log" 2>&1 & PROXY_PID=$!

# Patroni's documented HAProxy set-up, with the check the issue names.
{
  cat <<CFG
global
    maxconn 200
defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
listen primary
    bind 127.0.0.1:$HAPROXY_PORT
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
CFG
  for n in pg0 pg1 pg2; do
    echo "    server $n 127.0.0.1:$(port_of "$n") maxconn 100 check port $(api_of "$n")"
  done
} > "$DIR/haproxy.cfg"
haproxy -db -f "$DIR/haproxy.cfg" > "$DIR/haproxy.log" 2>&1 & HAPROXY_PID=$!

# pgbouncer does not follow the primary: it points at the current one.
cat > "$DIR/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$LP dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $DIR/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
logfile = $DIR/bouncer/pgbouncer.log
INI
chmod 644 "$DIR/pgbouncer.ini"
mkdir -p "$DIR/bouncer" && chown postgres "$DIR/bouncer"
pgbouncer -u postgres "$DIR/pgbouncer.ini" > /dev/null 2>&1 & BOUNCER_PID=$!

export PGPASSWORD=bench
for p in "$LP" "$PROXY_PORT" "$HAPROXY_PORT" "$BOUNCER_PORT"; do
  for _ in $(seq 100); do ready "$p" && break; sleep 0.2; done
  ready "$p" || { echo "nothing answers on port $p" >&2; exit 1; }
done

# --- select-only latency and throughput -----------------------------------------
"$PGBENCH" -h 127.0.0.1 -p "$LP" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
declare -A PORT=([direct]=$LP [fullauto-proxy]=$PROXY_PORT [haproxy]=$HAPROXY_PORT [pgbouncer]=$BOUNCER_PORT)
TARGETS=(direct fullauto-proxy haproxy pgbouncer)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    (cd "$DIR" && "$PGBENCH" -h 127.0.0.1 -p "${PORT[$t]}" -U postgres -n -S -M simple \
      -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -l --log-prefix "lat-$t-$round" postgres \
      > "$DIR/out-$t-$round" 2>&1) || { echo "pgbench through $t failed:"; cat "$DIR/out-$t-$round"; exit 1; }
  done
done
echo "load average after pgbench: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$DIR" "$ROUNDS" "${TARGETS[@]}" <<'PY'
import glob, re, sys
d, rounds, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
res = {}
for t in targets:
    lat = []
    for f in glob.glob(f"{d}/lat-{t}-*"):
        lat += [int(l.split()[2]) for l in open(f) if l.strip()]
    lat.sort()
    tps = [float(re.search(r"tps = ([0-9.]+)", open(f"{d}/out-{t}-{r}").read()).group(1))
           for r in range(1, rounds + 1)]
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
    res[t] = (q(0.5), q(0.99), sum(tps) / len(tps), min(tps), max(tps))
base = res["direct"]
print("| path | p50 latency | p99 latency | throughput (tps, mean of rounds) | p50 vs direct | tps vs direct |")
print("|---|---|---|---|---|---|")
for t in targets:
    p50, p99, tps, lo, hi = res[t]
    print(f"| {t} | {p50:.3f} ms | {p99:.3f} ms | {tps:.0f} ({lo:.0f}–{hi:.0f}) | "
          f"{(p50 / base[0] - 1) * 100:+.1f} % | {(tps / base[2] - 1) * 100:+.1f} % |")
PY

# --- switchovers: HAProxy vs the fullauto proxy -----------------------------------
psql -h 127.0.0.1 -p "$LP" -U postgres -XAtq -c "CREATE TABLE IF NOT EXISTS b (id bigserial primary key, at timestamptz default now())" >/dev/null
switchover() {  # through_port label
  local l c
  l=$(leader)
  c=$(for n in pg0 pg1 pg2; do if [ "$n" != "$l" ]; then echo "$n"; fi; done | head -1)
  "$BIN/write-probe" --ports "$1" --seconds 9 --password bench --attempt-timeout 30 > "$DIR/gap" &
  local wp=$!
  sleep 3
  curl -s -XPOST "http://127.0.0.1:$(api_of "$l")/switchover" -d "{\"leader\":\"$l\",\"candidate\":\"$c\"}" >/dev/null
  wait "$wp"
  echo "switchover through $2 ($l -> $c): $(cat "$DIR/gap")"
  # Let the old primary rejoin and HAProxy's checks settle.
  sleep 6
}
for i in $(seq "$SWITCHOVERS"); do
  switchover "$HAPROXY_PORT" "haproxy"
  switchover "$PROXY_PORT" "fullauto-proxy"
done
echo "fullauto-proxy metrics: $(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^fullauto_proxy_(sessions_moved|pauses|pause_seconds|sessions_fenced)' | tr '\n' ' ')"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
