#!/usr/bin/env bash
# fullauto and Patroni side by side: the same 3-node cluster (one etcd, PostgreSQL 15 on
# loopback, the same configuration file apart from ports and scope, the same client)
# driven by each in turn, measuring:
#   - footprint: agent RSS (fullauto: + its write-fence keeper) and agent CPU seconds
#     (user + system, children included) per idle minute;
#   - DCS requests: etcd's own counters (grpc_server_started_total by gRPC method: a
#     unary call or a newly opened stream each count once) over the same idle window,
#     per member per minute;
#   - switchover: POST /switchover while a client writes; the longest pause between
#     two acknowledged commits;
#   - unplanned failover: kill -9 of the leader's agent and postmaster; the leader key
#     watched in etcd splits it into key gone -> new key (reaction) and new key ->
#     first acknowledged write (promotion, as a client sees it);
#   - frozen leader agent: SIGSTOP of the leader's agent (its Postgres keeps running);
#     key gone -> new key, new key -> first acknowledged write on the new leader.
# The client (bench/write-probe --api) finds the primary only through GET /primary
# on the three REST APIs (polled every 5 ms each) and commits a row every 5 ms.
# Every trial is repeated TRIALS times (default 5); medians, ranges and the ratio
# fullauto/Patroni are printed at the end. Raw samples go to $DIR/samples.
#
# Usage: bench/compare.sh            (both; needs `apt-get install patroni`, done by
#                                     scripts/setup, and a release build)
#   TRIALS=5 TTL=30 LOOP_WAIT=10 RETRY_TIMEOUT=10 IDLE_SECONDS=60 SYSTEMS="fullauto patroni"
#   STEPS="idle switchover kill9 freeze" (a subset runs only those), SYNC=on (synchronous_mode),
#   FULLAUTO_BIN=/path/to/fullauto (e.g. an older build, for before/after figures),
#   BENCH_SKIP_BUILD=1 (use the binaries in target/release as they are),
#   MEMBERS=9 (cluster size, default 3; ports grow with it),
#   RSS_AFTER=300 (seconds between the cluster's start and the idle step's RSS sample,
#   default 3 × loop_wait; each agent's and keeper's pages per mapping go to
#   $DIR/$SYS/rss-nX.txt, from bench/rss_breakdown.py).
# STEPS=soak (with SOAK_SECONDS, default 3600): the writer runs for that long while
#   DELAY_MS (default 200) of jittered latency sits between each agent and etcd (one
#   bench/delay_relay.py per agent: 0..DELAY_MS per chunk) and HOG_PROCS busy loops
#   (default 1) load the CPU; every change of the leader key is a false failover.
#   DELAY_MS applies to the other steps too when set.
# Runs as root (Postgres and Patroni run as the `postgres` user). Uses only loopback,
# ports 23811-23812 (etcd), 8141-8143 (REST), 5541-5543 (Postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TRIALS=${TRIALS:-5}
TTL=${TTL:-30}
LOOP_WAIT=${LOOP_WAIT:-10}
RETRY_TIMEOUT=${RETRY_TIMEOUT:-10}
IDLE_SECONDS=${IDLE_SECONDS:-60}
SYSTEMS=${SYSTEMS:-"fullauto patroni"}
STEPS=${STEPS:-"idle switchover kill9 freeze"}
SYNC=${SYNC:-off}
DIR=${BENCH_DIR:-/tmp/fullauto-compare}
ETCD_PORT=${BENCH_ETCD_PORT:-23811}
API_BASE=${BENCH_API_PORT:-8141}
PG_BASE=${BENCH_PG_PORT:-5541}
ETCD=127.0.0.1:$ETCD_PORT
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MEMBERS=${MEMBERS:-3}
NODES=(); for ((i = 0; i < MEMBERS; i++)); do NODES+=("n$i"); done
DELAY_MS=${DELAY_MS:-}
case " $STEPS " in *" soak "*) DELAY_MS=${DELAY_MS:-200} ;; esac
SOAK_SECONDS=${SOAK_SECONDS:-3600}
HOG_PROCS=${HOG_PROCS:-1}
PIDS_TO_STOP=()

[ "$(id -u)" = 0 ] || { echo "run as root (Postgres runs as the postgres user)" >&2; exit 2; }
command -v patroni >/dev/null || case " $SYSTEMS " in *" patroni "*)
  echo "patroni is not installed: apt-get install patroni (scripts/setup does)" >&2; exit 2 ;; esac
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  [ -n "${FULLAUTO_BIN:-}" ] || cargo build --release -q -p agent-bin --bins
  cargo build --release -q -p write-probe
fi
FULLAUTO=${FULLAUTO_BIN:-$ROOT/target/release/fullauto}
PROBE=$ROOT/target/release/write-probe

now() { date +%s.%N; }
api_of() { echo $((API_BASE + ${1#n})); }
pg_of() { echo $((PG_BASE + ${1#n})); }
log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
sample() { echo "$SYS $1 $2" >> "$DIR/samples"; log "$SYS $1 $2"; }

stop_pid() { [ -n "${1:-}" ] && kill -CONT "$1" 2>/dev/null; [ -n "${1:-}" ] && kill "$1" 2>/dev/null || true; }
cleanup() {
  set +e
  for n in "${NODES[@]}"; do stop_node "$n"; done
  for p in "${PIDS_TO_STOP[@]}"; do kill -- "-$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  [ -f "$DIR/etcd.pid" ] && kill "$(cat "$DIR/etcd.pid")" 2>/dev/null
  sleep 1
}
trap cleanup EXIT

postmaster_of() { head -1 "$DIR/$SYS/data/$1/postmaster.pid" 2>/dev/null || true; }
stop_node() {
  local n=$1 pid pm
  pid=$(cat "$DIR/${SYS:-x}/$n.pid" 2>/dev/null || true)
  pm=$(postmaster_of "$n")
  stop_pid "$pid"
  for _ in $(seq 50); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  [ -n "$pm" ] && kill -9 "$pm" 2>/dev/null || true
  rm -f "$DIR/${SYS:-x}/$n.pid"
}

# The etcd address an agent uses: etcd itself, or its own delaying relay.
etcd_for() {
  if [ -n "$DELAY_MS" ]; then echo "127.0.0.1:$((ETCD_PORT + 10 + ${1#n}))"; else echo "$ETCD"; fi
}
start_relays() {
  [ -n "$DELAY_MS" ] || return 0
  local n
  for n in "${NODES[@]}"; do
    python3 "$ROOT/bench/delay_relay.py" "$((ETCD_PORT + 10 + ${n#n}))" "$ETCD_PORT" "$DELAY_MS" "${n#n}" &
    PIDS_TO_STOP+=("$!")
  done
  for n in "${NODES[@]}"; do  # listening before the agents start
    for _ in $(seq 100); do ss -ltn | grep -q ":$((ETCD_PORT + 10 + ${n#n})) " && break; sleep 0.1; done
  done
}

write_config() {  # node
  local n=$1 i=${1#n}
  cat > "$DIR/$SYS/$n.yml" <<YAML
scope: bench-$SYS
namespace: /service/
name: $n
restapi:
  listen: 127.0.0.1:$((API_BASE + i))
  connect_address: 127.0.0.1:$((API_BASE + i))
etcd3:
  hosts: $(etcd_for "$n")
bootstrap:
  dcs:
    ttl: $TTL
    loop_wait: $LOOP_WAIT
    retry_timeout: $RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    synchronous_mode: $SYNC
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_keep_size: 128MB
        wal_log_hints: 'on'
        max_wal_senders: $((MEMBERS + 5))
        max_replication_slots: $((MEMBERS + 5))
  initdb:
  - encoding: UTF8
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$((PG_BASE + i))
  connect_address: 127.0.0.1:$((PG_BASE + i))
  data_dir: $DIR/$SYS/data/$n
  bin_dir: $PGBIN
  pgpass: $DIR/$SYS/pgpass-$n
  parameters:
    unix_socket_directories: $DIR/$SYS/run
  authentication:
    superuser: {username: postgres}
    replication: {username: postgres}
    rewind: {username: postgres}
log:
  level: INFO
YAML
}

start_node() {
  local n=$1
  case $SYS in
    fullauto) "$FULLAUTO" "$DIR/$SYS/$n.yml" >>"$DIR/$SYS/$n.log" 2>&1 & ;;
    patroni) setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$DIR/$SYS" \
               patroni "$DIR/$SYS/$n.yml" >>"$DIR/$SYS/$n.log" 2>&1 & ;;
  esac
  echo $! > "$DIR/$SYS/$n.pid"
}

leader() { etcdctl --endpoints "$ETCD" get --print-value-only "/service/bench-$SYS/leader" 2>/dev/null || true; }
sql() { psql -h 127.0.0.1 -p "$1" -U postgres -XAtq -v ON_ERROR_STOP=1 -c "$2" 2>/dev/null; }

# A leader whose Postgres accepts writes and streams to both others.
wait_healthy() {
  local limit=${1:-180} t=0 l
  while :; do
    l=$(leader)
    if [ -n "$l" ] && [ "$(sql "$(pg_of "$l")" "SELECT CASE WHEN pg_is_in_recovery() THEN -1 ELSE (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming') END" || echo 0)" = $((MEMBERS - 1)) ]; then
      return 0
    fi
    t=$((t + 1)); [ $t -ge $limit ] && { log "$SYS: cluster not healthy after ${limit}s"; return 1; }
    sleep 1
  done
}

cpu_ticks() {  # pid: user+system, children included, in clock ticks
  awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0
}
# fullauto's write-fence keepers: children running the agent's own executable (by
# name they show the executable's, which FULLAUTO_BIN may rename).
keepers_of() {
  local c
  for c in $(ps -o pid= --ppid "$1"); do
    [ "$(readlink "/proc/$c/exe")" = "$(readlink "/proc/$1/exe")" ] && echo "$c"
  done
  return 0
}
agent_pids() {  # the agents and, for fullauto, their write-fence keepers
  local n pid
  for n in "${NODES[@]}"; do
    pid=$(cat "$DIR/$SYS/$n.pid")
    echo "$pid"
    if [ "$SYS" = fullauto ]; then keepers_of "$pid"; fi
  done
}
started_by_method() {
  curl -s "http://$ETCD/metrics" | awk '/^grpc_server_started_total/ {
    match($0, /grpc_method="[^"]*"/); m = substr($0, RSTART + 13, RLENGTH - 14); n[m] += $2 }
    END { for (m in n) print m, n[m] }' | sort
}

measure_idle() {
  local before after pids t0 t1 hz
  hz=$(getconf CLK_TCK)
  pids=$(agent_pids)
  for n in "${NODES[@]}"; do
    local pid rss keeper
    pid=$(cat "$DIR/$SYS/$n.pid")
    rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
    keeper=0
    if [ "$SYS" = fullauto ]; then
      for k in $(keepers_of "$pid"); do
        keeper=$((keeper + $(awk '/VmRSS/{print $2}' "/proc/$k/status")))
      done
    fi
    sample rss_mib "$(python3 -c "print(round(($rss + $keeper) / 1024, 1))")"
    # Where the pages are, per mapping (agent first, then its keeper).
    python3 "$ROOT/bench/rss_breakdown.py" "$pid" $( [ "$SYS" = fullauto ] && keepers_of "$pid") \
      > "$DIR/$SYS/rss-$n.txt" 2>&1 || true
  done
  declare -A c0
  for p in $pids; do c0[$p]=$(cpu_ticks "$p"); done
  before=$(started_by_method); t0=$(now)
  sleep "$IDLE_SECONDS"
  after=$(started_by_method); t1=$(now)
  local total=0
  for p in $pids; do total=$((total + $(cpu_ticks "$p") - ${c0[$p]})); done
  sample cpu_s_per_idle_min_per_member "$(python3 -c "print(round($total / $hz / $MEMBERS * 60 / ($t1 - $t0), 3))")"
  python3 - "$before" "$after" "$t0" "$t1" "$MEMBERS" <<'PY' | while read -r k v; do sample "$k" "$v"; done
import sys
parse = lambda t: {l.split()[0]: float(l.split()[1]) for l in t.splitlines() if l.strip()}
b, a = parse(sys.argv[1]), parse(sys.argv[2])
minutes = (float(sys.argv[4]) - float(sys.argv[3])) / 60
d = {m: a[m] - b.get(m, 0) for m in a if a[m] - b.get(m, 0) > 0}
members = int(sys.argv[5])
print("dcs_requests_per_member_per_min", round(sum(d.values()) / members / minutes, 2))
for m, n in sorted(d.items()):
    print(f"dcs_{m}_per_min_{members}_members", round(n / minutes, 2))
PY
}

# The client: finds the primary through /primary, commits every 5 ms.
start_writer() {  # seconds
  local n ports="" apis=""
  for n in "${NODES[@]}"; do ports+="${ports:+,}$(pg_of "$n")"; apis+="${apis:+,}$(api_of "$n")"; done
  "$PROBE" --ports "$ports" --api "$apis" \
    --interval-ms 5 --seconds "$1" > "$DIR/writer.out" 2>/dev/null &
  WRITER=$!
}

start_watch() {
  # One process stamps every line (a `date` per line would add a fork to each stamp).
  setsid bash -c "etcdctl --endpoints $ETCD watch /service/bench-$SYS/leader | python3 -u -c 'import sys, time
for l in sys.stdin: print(f\"{time.time():.6f} {l}\", end=\"\", flush=True)' > $DIR/watch" &
  WATCH=$!
  PIDS_TO_STOP+=("$WATCH")
  sleep 0.5
}
stop_watch() { kill -- "-$WATCH" 2>/dev/null || true; }

ms() { python3 -c "print(round(($2 - $1) * 1000))"; }

# kill9 | freeze
unplanned() {
  local how=$1 L pid pm T0 TDEL TPUT NEW TW limit
  wait_healthy
  sleep 2
  L=$(leader); pid=$(cat "$DIR/$SYS/$L.pid"); pm=$(postmaster_of "$L")
  start_watch
  start_writer $((TTL * 3 + 30))
  sleep 1
  T0=$(now)
  case $how in
    kill9) kill -9 "$pid" "$pm" ;;
    freeze) kill -STOP "$pid" ;;
  esac
  # Until a new leader's write is acknowledged (or 3 ttl).
  limit=$(python3 -c "print($T0 + $TTL * 3 + 20)")
  # A client that stays on a frozen agent's primary (it still acknowledges: Patroni
  # has no fence) never reaches the new one: give up 10 s after the new key.
  TW=""; SEEN=""
  while [ -z "$TW" ] && python3 -c "import sys; sys.exit(0 if $(now) < $limit else 1)"; do
    sleep 0.5
    NEW=$(leader)
    [ -n "$NEW" ] && [ "$NEW" != "$L" ] || continue
    SEEN=${SEEN:-$(now)}
    TW=$(awk -v p="$(pg_of "$NEW")" -v t="$T0" '$1=="first_ack" && $3==p && $2>t {print $2; exit}' "$DIR/writer.out")
    python3 -c "import sys; sys.exit(0 if $(now) < $SEEN + 10 else 1)" || break
  done
  TDEL=$(awk '$2=="DELETE"{print $1; exit}' "$DIR/watch")
  TPUT=$(awk '$2=="PUT"{print $1; exit}' "$DIR/watch")
  if [ -n "$TDEL" ] && [ -n "$TPUT" ]; then
    sample "${how}_key_gone_to_new_key_ms" "$(ms "$TDEL" "$TPUT")"
  fi
  if [ -n "$TPUT" ] && [ -n "$TW" ]; then
    sample "${how}_new_key_to_first_write_ms" "$(ms "$TPUT" "$TW")"
    sample "${how}_key_gone_to_first_write_ms" "$(ms "$TDEL" "$TW")"
  fi
  [ -n "$TW" ] && sample "${how}_total_s" "$(python3 -c "print(round($TW - $T0, 2))")"
  [ -z "$TW" ] && [ "$how" = freeze ] && [ -n "$(awk -v p="$(pg_of "$L")" '$1=="first_ack" && $3==p' "$DIR/writer.out")" ] \
    && log "$SYS: the client kept writing to the frozen agent's primary"
  kill "$WRITER" 2>/dev/null || true; wait "$WRITER" 2>/dev/null || true
  stop_watch
  # Kept per trial, for a breakdown against the agents' and PostgreSQL's logs.
  cp "$DIR/watch" "$DIR/$SYS/$how-$T0.watch"; cp "$DIR/writer.out" "$DIR/$SYS/$how-$T0.writer"
  case $how in
    kill9) rm -f "$DIR/$SYS/$L.pid"; start_node "$L" ;;
    freeze) kill -CONT "$pid" ;;
  esac
  wait_healthy 300
}

switchover() {
  local L C gap
  wait_healthy
  sleep 3
  L=$(leader)
  C=$(for n in "${NODES[@]}"; do [ "$n" != "$L" ] && echo "$n"; done | head -1)
  start_writer 10
  sleep 3
  curl -s -XPOST "http://127.0.0.1:$(api_of "$L")/switchover" -H 'Content-Type: application/json' \
    -d "{\"leader\":\"$L\",\"candidate\":\"$C\"}" >/dev/null || true
  wait "$WRITER" || true
  gap=$(awk '$1=="write_gap_ms"{print $2}' "$DIR/writer.out")
  [ -n "$gap" ] && sample switchover_write_gap_ms "$gap"
}

# The soak: a writer, DELAY_MS of jitter to etcd, a CPU hog; leader changes counted.
soak() {
  local hogs=() i L changes gap
  wait_healthy
  L=$(leader)
  start_watch
  for ((i = 0; i < HOG_PROCS; i++)); do
    python3 -c 'while True: pass' &
    hogs+=("$!"); PIDS_TO_STOP+=("$!")
  done
  log "$SYS: soak for ${SOAK_SECONDS}s, leader $L, etcd latency 0-${DELAY_MS} ms, $HOG_PROCS CPU hog(s)"
  start_writer "$SOAK_SECONDS"
  wait "$WRITER" || true
  for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_watch
  # Every DELETE of the key is a lost leadership, and so is a PUT of another name
  # that no DELETE preceded.
  changes=$(awk -v l="$L" '$2=="DELETE"{n++; gone=1} $2=="PUT"{getline; getline; if (!gone && $2 != l) n++; l=$2; gone=0} END{print n+0}' "$DIR/watch")
  sample soak_seconds "$SOAK_SECONDS"
  sample soak_leader_changes "$changes"
  gap=$(awk '$1=="write_gap_ms"{print $2}' "$DIR/writer.out")
  [ -n "$gap" ] && sample soak_longest_write_gap_ms "$gap"
  cp "$DIR/watch" "$DIR/$SYS/soak-watch"
}

run_system() {
  SYS=$1
  log "== $SYS: ttl $TTL, loop_wait $LOOP_WAIT, retry_timeout $RETRY_TIMEOUT, $TRIALS trials"
  rm -rf "${DIR:?}/$SYS"; mkdir -p "$DIR/$SYS/data" "$DIR/$SYS/run"
  chown -R postgres "$DIR/$SYS"
  for n in "${NODES[@]}"; do write_config "$n"; chown postgres "$DIR/$SYS/$n.yml"; done
  for n in "${NODES[@]}"; do start_node "$n"; sleep 2; done
  wait_healthy 300
  sql "$(pg_of "$(leader)")" "CREATE TABLE IF NOT EXISTS b (id bigserial primary key, at timestamptz default now())"
  for step in $STEPS; do
    case $step in
      idle) sleep "${RSS_AFTER:-$((LOOP_WAIT * 3))}"; measure_idle ;;
      switchover) for _ in $(seq "$TRIALS"); do switchover; done ;;
      kill9|freeze) for _ in $(seq "$TRIALS"); do unplanned "$step"; done ;;
      soak) soak ;;
      *) echo "unknown step $step" >&2; exit 2 ;;
    esac
  done
  for n in "${NODES[@]}"; do stop_node "$n"; done
}

mkdir -p "$DIR"; : > "$DIR/samples"
rm -rf "$DIR/etcd"
/usr/bin/etcd --name bench --data-dir "$DIR/etcd" \
  --listen-client-urls "http://$ETCD" --advertise-client-urls "http://$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "bench=http://127.0.0.1:$((ETCD_PORT + 1))" >"$DIR/etcd.log" 2>&1 &
echo $! > "$DIR/etcd.pid"
sleep 2
start_relays
for s in $SYSTEMS; do run_system "$s"; done
python3 "$ROOT/bench/compare_table.py" "$DIR/samples"
