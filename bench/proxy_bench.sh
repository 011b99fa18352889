#!/usr/bin/env bash
# The fullauto proxy side by side with a direct connection, HAProxy and pgbouncer, in
# one run on the demo cluster (3 release-build agents, etcd, PostgreSQL 15, loopback):
#   1. pgbench select-only (simple protocol, persistent connections): latency p50/p99
#      from pgbench's per-transaction log and throughput, direct to the primary vs
#      through fullauto-proxy (clients authenticate to it, SCRAM), HAProxy (Patroni's
#      documented check) and pgbouncer (session pooling, SCRAM), in interleaved rounds;
#   2. switchovers (`POST /switchover` while bench/write-probe, one persistent
#      connection, commits one row at a time): the longest pause between two
#      acknowledged commits and the errors the client saw, in interleaved rounds of
#        - direct: the probe holds a connection to each of the 3 fullauto nodes and
#          writes wherever a commit succeeds (the agents' own write gap);
#        - fullauto-proxy (with auth_file, so sessions move) on the fullauto cluster;
#        - HAProxy with Patroni's documented check on the same fullauto cluster;
#        - HAProxy with the same check on a 3-node Patroni 3.0.2 cluster (Debian's
#          package) on the same etcd, same timing: the set-up the issue replaces.
# Usage: bench/proxy_bench.sh   (env: ROUNDS=3 SECONDS_PER_RUN=10 CLIENTS=4
#        SWITCHOVERS=3; FULLAUTO_SKIP_BUILD=1 to use target/release as it is;
#        PATRONI=0 leaves the Patroni cluster out; LATENCY=0 skips the select-only
#        part, for the switchovers alone).
# Runs as root (Postgres and Patroni run as the postgres user). Needs haproxy,
# pgbouncer and patroni (scripts/setup installs them). Prints one result block.
# Ports (loopback): etcd 23831-23832, fullauto REST 8161-8163 and Postgres 5561-5563,
# Patroni REST 8171-8173 and Postgres 5571-5573, middlemen 6561-6567 (and 6664, the
# pass-through proxy's metrics). Logs are kept in $KEEP_LOGS (default
# /tmp/fullauto-proxybench-logs).
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
PATRONI=${PATRONI:-1}
LATENCY=${LATENCY:-1}
PASS_PORT=${PASS_PORT:-6565} HAPROXY_PATRONI_PORT=${HAPROXY_PATRONI_PORT:-6566}
HAPROXY_STATIC_PORT=${HAPROXY_STATIC_PORT:-6567}
PATRONI_API_PORT=${PATRONI_API_PORT:-8171} PATRONI_PG_PORT=${PATRONI_PG_PORT:-5571}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench

if [ -z "${FULLAUTO_SKIP_BUILD:-}" ]; then
  cargo build --release -p agent-bin -p write-probe
fi
export FULLAUTO_SKIP_BUILD=1
TOOLS="haproxy pgbouncer"
if [ "$PATRONI" = 1 ]; then TOOLS="$TOOLS patroni"; fi
for tool in $TOOLS; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup" >&2; exit 1; }
done

cleanup() {
  for p in "${PROXY_PID:-}" "${PASS_PID:-}" "${HAPROXY_PID:-}" "${BOUNCER_PID:-}" "${CHECK_PID:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for n in pt0 pt1 pt2; do
    local pid pm
    pid=$(cat "$DIR/patroni/$n.pid" 2>/dev/null || true)
    pm=$(head -1 "$DIR/patroni/data/$n/postmaster.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    sleep 1
    [ -n "$pm" ] && kill -9 "$pm" 2>/dev/null || true
  done
  # The logs outlive the run (scripts/demo down removes $DIR).
  mkdir -p "$KEEP"
  cp "$DIR"/*.log "$KEEP"/ 2>/dev/null || true
  cp "$DIR"/patroni/*.log "$KEEP"/ 2>/dev/null || true
  scripts/demo down >/dev/null 2>&1 || true
}
KEEP=${KEEP_LOGS:-/tmp/fullauto-proxybench-logs}
rm -rf "$KEEP"
trap cleanup EXIT

scripts/demo up >/dev/null
port_of() { echo $((FULLAUTO_DEMO_PG_PORT + ${1#pg})); }
api_of() { echo $((FULLAUTO_DEMO_API_PORT + ${1#pg})); }
leader() { etcdctl --endpoints "$ETCD" get --print-value-only /service/demo/leader; }
ready() { pg_isready -q -h 127.0.0.1 -p "$1" -U postgres; }
L=$(leader)
LP=$(port_of "$L")

# --- the middlemen ---------------------------------------------------------------
printf '"postgres" "bench"\n' > "$DIR/users.txt"
chmod 644 "$DIR/users.txt"
proxy_config() {  # name port metrics-port [auth_file]
  cat <<YAML
scope: demo
namespace: /service/
etcd3:
  hosts: $ETCD
proxy:
  name: $1
  listen_rw: 127.0.0.1:$2
  metrics_listen: 127.0.0.1:$3
  pause_deadline: 30
YAML
  [ -n "${4:-}" ] && echo "  auth_file: $4"
  return 0
}
# Clients log in to this one (SCRAM); it logs in to the servers and moves sessions.
proxy_config bench-proxy "$PROXY_PORT" "$METRICS_PORT" "$DIR/users.txt" > "$DIR/proxy.yml"
"$BIN/fullauto-proxy" "$DIR/proxy.yml" > "$DIR/proxy.log" 2>&1 & PROXY_PID=$!
# Authentication passes through this one to the servers (bytes relayed as they come).
proxy_config bench-pass "$PASS_PORT" $((METRICS_PORT + 100)) > "$DIR/pass.yml"
"$BIN/fullauto-proxy" "$DIR/pass.yml" > "$DIR/pass.log" 2>&1 & PASS_PID=$!

# Patroni's documented HAProxy set-up, with the check the issue names, in front of
# the fullauto cluster and (below) of the Patroni cluster.
haproxy_listen() {  # name bind-port pg-base api-base
  cat <<CFG
listen $1
    bind 127.0.0.1:$2
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
CFG
  for i in 0 1 2; do
    echo "    server node$i 127.0.0.1:$(($3 + i)) maxconn 100 check port $(($4 + i))"
  done
}
{
  cat <<CFG
global
    maxconn 200
    log stdout format raw local0
defaults
    log global
    option log-health-checks
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
CFG
  haproxy_listen fullauto "$HAPROXY_PORT" "$FULLAUTO_DEMO_PG_PORT" "$FULLAUTO_DEMO_API_PORT"
  # For the latency runs: the current primary, no health check (see the README:
  # with the check, a busy primary's /primary answered 503 twice in a row now and
  # then, and HAProxy shut the pgbench sessions down).
  printf 'listen static\n    bind 127.0.0.1:%s\n    server primary 127.0.0.1:%s\n' "$HAPROXY_STATIC_PORT" "$LP"
  if [ "$PATRONI" = 1 ]; then
    haproxy_listen patroni "$HAPROXY_PATRONI_PORT" "$PATRONI_PG_PORT" "$PATRONI_API_PORT"
  fi
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
for p in "$LP" "$PROXY_PORT" "$PASS_PORT" "$HAPROXY_PORT" "$HAPROXY_STATIC_PORT" "$BOUNCER_PORT"; do
  for _ in $(seq 100); do ready "$p" && break; sleep 0.2; done
  ready "$p" || { echo "nothing answers on port $p" >&2; exit 1; }
done

# --- select-only latency and throughput -----------------------------------------
if [ "$LATENCY" = 1 ]; then
"$PGBENCH" -h 127.0.0.1 -p "$LP" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
declare -A PORT=([direct]=$LP [fullauto-proxy]=$PROXY_PORT [fullauto-proxy-passthrough]=$PASS_PORT
                 [haproxy]=$HAPROXY_STATIC_PORT [pgbouncer]=$BOUNCER_PORT)
TARGETS=(direct fullauto-proxy fullauto-proxy-passthrough haproxy pgbouncer)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
# Patroni's HAProxy check against the primary's agent during the pgbench runs: every
# 100 ms, the status of OPTIONS /primary (a healthy primary under load answers 200).
( while :; do
    curl -s -o /dev/null -m 5 -w '%{http_code}\n' -X OPTIONS "http://127.0.0.1:$(api_of "$L")/primary" || echo 000
    sleep 0.1
  done ) > "$DIR/primary-checks" 2>/dev/null & CHECK_PID=$!
# The middleman's own CPU time (user + system, all threads) per transaction: unlike
# latency, it hardly depends on what else the machine runs.
declare -A MPID=([fullauto-proxy]=$PROXY_PID [fullauto-proxy-passthrough]=$PASS_PID
                 [haproxy]=$HAPROXY_PID [pgbouncer]=$BOUNCER_PID)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    before=0
    if [ -n "${MPID[$t]:-}" ]; then before=$(ticks "${MPID[$t]}"); fi
    (cd "$DIR" && "$PGBENCH" -h 127.0.0.1 -p "${PORT[$t]}" -U postgres -n -S -M simple \
      -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -l --log-prefix "lat-$t-$round" postgres \
      > "$DIR/out-$t-$round" 2>&1) || { echo "pgbench through $t failed:"; cat "$DIR/out-$t-$round"; tail -n 20 "$DIR/haproxy.log"; exit 1; }
    if [ -n "${MPID[$t]:-}" ]; then echo "$(( $(ticks "${MPID[$t]}") - before ))" >> "$DIR/cpu-$t"; fi
  done
done
echo "load average after pgbench: $(cut -d' ' -f1-3 /proc/loadavg)"
kill "$CHECK_PID" 2>/dev/null || true
echo "OPTIONS /primary on the primary during the pgbench runs (every 100 ms): $(sort "$DIR/primary-checks" | uniq -c | awk '{printf "%s x%s ", $2, $1}')"
python3 - "$DIR" "$ROUNDS" "$(getconf CLK_TCK)" "${TARGETS[@]}" <<'PY'
import os, re, statistics, sys
d, rounds, hz, targets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
res = {}
for t in targets:
    lat, p50s, tps, count = [], [], [], 0
    for r in range(1, rounds + 1):
        mine = []
        for f in os.listdir(d):
            if f.startswith(f"lat-{t}-{r}."):
                mine += [int(l.split()[2]) for l in open(f"{d}/{f}") if l.strip()]
        mine.sort()
        p50s.append(mine[len(mine) // 2] / 1000)
        lat += mine
        out = open(f"{d}/out-{t}-{r}").read()
        tps.append(float(re.search(r"tps = ([0-9.]+)", out).group(1)))
        count += int(re.search(r"actually processed: ([0-9]+)", out).group(1))
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
    cpu = None
    if os.path.exists(f"{d}/cpu-{t}"):
        ticks = sum(int(l) for l in open(f"{d}/cpu-{t}") if l.strip())
        cpu = ticks / hz * 1e6 / count
    res[t] = (q(0.5), min(p50s), max(p50s), q(0.99), statistics.mean(tps), min(tps), max(tps), cpu)
base = res["direct"]
print("| path | p50 latency (rounds' p50s) | p99 latency | throughput, tps (rounds) | p50 vs direct | tps vs direct | middleman CPU per transaction |")
print("|---|---|---|---|---|---|---|")
for t in targets:
    p50, lo50, hi50, p99, tps, lo, hi, cpu = res[t]
    cpu = "–" if cpu is None else f"{cpu:.1f} µs"
    print(f"| {t} | {p50:.3f} ms ({lo50:.3f}–{hi50:.3f}) | {p99:.3f} ms | {tps:.0f} ({lo:.0f}–{hi:.0f}) | "
          f"{(p50 / base[0] - 1) * 100:+.1f} % | {(tps / base[4] - 1) * 100:+.1f} % | {cpu} |")
PY
fi

# --- a Patroni cluster on the same etcd (started after the latency runs) -----------
patroni_config() {  # i
  local n=pt$1
  cat <<YAML
scope: bench-patroni
namespace: /service/
name: $n
restapi:
  listen: 127.0.0.1:$((PATRONI_API_PORT + $1))
  connect_address: 127.0.0.1:$((PATRONI_API_PORT + $1))
etcd3:
  hosts: $ETCD
bootstrap:
  dcs:
    ttl: ${FULLAUTO_DEMO_TTL:-10}
    loop_wait: ${FULLAUTO_DEMO_LOOP_WAIT:-2}
    retry_timeout: ${FULLAUTO_DEMO_RETRY_TIMEOUT:-3}
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_keep_size: 128MB
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$((PATRONI_PG_PORT + $1))
  connect_address: 127.0.0.1:$((PATRONI_PG_PORT + $1))
  data_dir: $DIR/patroni/data/$n
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: $DIR/patroni/pgpass-$n
  parameters:
    unix_socket_directories: $DIR/patroni/run
  authentication:
    superuser: {username: postgres}
    replication: {username: postgres}
    rewind: {username: postgres}
log:
  level: INFO
YAML
}
pleader() { etcdctl --endpoints "$ETCD" get --print-value-only /service/bench-patroni/leader; }
# A primary that streams to both replicas.
streaming_to_two() {  # pg-port
  [ "$(psql -h 127.0.0.1 -p "$1" -U postgres -XAtq -c "SELECT CASE WHEN pg_is_in_recovery() THEN -1 ELSE (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming') END" 2>/dev/null)" = 2 ]
}
if [ "$PATRONI" = 1 ]; then
  mkdir -p "$DIR/patroni/data" "$DIR/patroni/run"
  for i in 0 1 2; do patroni_config "$i" > "$DIR/patroni/pt$i.yml"; done
  chown -R postgres "$DIR/patroni"
  for i in 0 1 2; do
    setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$DIR/patroni" \
      patroni "$DIR/patroni/pt$i.yml" >> "$DIR/patroni/pt$i.log" 2>&1 &
    echo $! > "$DIR/patroni/pt$i.pid"
    sleep 2
  done
  for _ in $(seq 300); do
    PL=$(pleader 2>/dev/null || true)
    [ -n "$PL" ] && streaming_to_two $((PATRONI_PG_PORT + ${PL#pt})) && break
    sleep 1
  done
  streaming_to_two $((PATRONI_PG_PORT + ${PL#pt})) || { echo "the Patroni cluster did not come up" >&2; tail -5 "$DIR"/patroni/pt*.log >&2; exit 1; }
  psql -h 127.0.0.1 -p $((PATRONI_PG_PORT + ${PL#pt})) -U postgres -XAtq \
    -c "CREATE TABLE IF NOT EXISTS b (id bigserial primary key, at timestamptz default now())" >/dev/null
  for _ in $(seq 100); do ready "$HAPROXY_PATRONI_PORT" && break; sleep 0.2; done
fi

# --- switchovers ---------------------------------------------------------------------
psql -h 127.0.0.1 -p "$LP" -U postgres -XAtq -c "CREATE TABLE IF NOT EXISTS b (id bigserial primary key, at timestamptz default now())" >/dev/null
: > "$DIR/switchovers"
switchover() {  # label cluster(fullauto|patroni) probe-args...
  local label=$1 cluster=$2 l c api pg lead
  shift 2
  if [ "$cluster" = patroni ]; then
    l=$(pleader); c=$(for n in pt0 pt1 pt2; do if [ "$n" != "$l" ]; then echo "$n"; fi; done | sed -n 1p)
    api=$((PATRONI_API_PORT + ${l#pt})); pg=$PATRONI_PG_PORT
  else
    l=$(leader); c=$(for n in pg0 pg1 pg2; do if [ "$n" != "$l" ]; then echo "$n"; fi; done | sed -n 1p)
    api=$(api_of "$l"); pg=$FULLAUTO_DEMO_PG_PORT
  fi
  "$BIN/write-probe" "$@" --seconds 9 --password bench --attempt-timeout 30 > "$DIR/gap" &
  local wp=$!
  sleep 3
  curl -s -XPOST "http://127.0.0.1:$api/switchover" -H 'Content-Type: application/json' \
    -d "{\"leader\":\"$l\",\"candidate\":\"$c\"}" >/dev/null
  wait "$wp" || true
  echo "switchover through $label ($l -> $c): $(cat "$DIR/gap")"
  if grep -q '^write_gap_ms' "$DIR/gap"; then
    echo "$label $(awk '$1=="write_gap_ms" {print $2}' "$DIR/gap") $(grep -o 'errors [0-9]*' "$DIR/gap" | sed -n 1p | cut -d' ' -f2)" >> "$DIR/switchovers"
  fi
  # Let the old primary rejoin (streaming again) and HAProxy's checks settle.
  for _ in $(seq 120); do
    if [ "$cluster" = patroni ]; then lead=$(pleader); else lead=$(leader); fi
    [ -n "$lead" ] && streaming_to_two $((pg + ${lead#p?})) && break
    sleep 1
  done
  sleep 3
}
DIRECT_PORTS="$(port_of pg0),$(port_of pg1),$(port_of pg2)"
for i in $(seq "$SWITCHOVERS"); do
  switchover direct fullauto --ports "$DIRECT_PORTS"
  switchover fullauto-proxy fullauto --ports "$PROXY_PORT"
  switchover haproxy+fullauto fullauto --ports "$HAPROXY_PORT"
  if [ "$PATRONI" = 1 ]; then
    switchover haproxy+patroni patroni --ports "$HAPROXY_PATRONI_PORT"
  fi
done
python3 - "$DIR/switchovers" <<'PY'
import sys, statistics
rows = {}
for l in open(sys.argv[1]):
    label, gap, errors = l.split()
    rows.setdefault(label, []).append((int(gap), int(errors)))
print("| client path | write gap per switchover (ms) | median | client errors per switchover |")
print("|---|---|---|---|")
for label, r in rows.items():
    gaps = [g for g, _ in r]
    print(f"| {label} | {', '.join(map(str, gaps))} | {statistics.median(gaps):.0f} | "
          f"{', '.join(str(e) for _, e in r)} |")
PY
echo "fullauto-proxy metrics: $(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^fullauto_proxy_(sessions_moved|pauses|pause_seconds|sessions_fenced)' | tr '\n' ' ')"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
