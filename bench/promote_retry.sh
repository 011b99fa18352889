#!/usr/bin/env bash
# PostgreSQL's own part of the 5 s synchronous-mode failover outlier (issue 20), without
# any agent: a replica whose primary was killed (kill -9) is sent a configuration reload
# and right after it a promotion request, which is what a new leader in synchronous
# mode did before it skipped an unneeded reload (set synchronous_standby_names, then
# promote). The time from the reload to the new timeline is taken from the replica's
# own log ("received SIGHUP" -> "selected new timeline ID"); the client's view (request
# -> pg_is_in_recovery() false, polled with psql) is printed too but is coarse under
# load.
#
# MODE=once asks once (pg_promote(false)); MODE=repeat asks again every 50 ms while the
# server is still in recovery (what fullauto's promotion does). DELAY_MS is the pause
# between the reload and the request (default 20, about what an agent takes to run
# pg_ctl reload and open a connection); both go over one connection, so the pause is
# exact.
# Each trial waits a random 0-6 s after the kill, so the request lands anywhere in the
# startup process's wal_retrieve_retry_interval (5 s) cycle of retrying the dead
# primary. The promoted replica is the next trial's primary.
#
# Usage (as root; Postgres runs as the postgres user):
#   TRIALS=20 MODE=once bench/promote_retry.sh
#   TRIALS=20 MODE=repeat bench/promote_retry.sh
# Uses only loopback ports 5551-5552 and $BENCH_DIR (default /tmp/fullauto-promote-retry).
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
TRIALS=${TRIALS:-20}
MODE=${MODE:-once}
DELAY_MS=${DELAY_MS:-20}
DIR=${BENCH_DIR:-/tmp/fullauto-promote-retry}
PORTS=(5551 5552)

[ "$(id -u)" = 0 ] || { echo "run as root (Postgres runs as the postgres user)" >&2; exit 2; }
case $MODE in once|repeat) ;; *) echo "MODE is once or repeat" >&2; exit 2 ;; esac

as_pg() { runuser -u postgres -- "$@"; }
sql() { as_pg "$PGBIN/psql" -X -qAt -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2" 2>/dev/null; }
ms_now() { date +%s%3N; }
postmaster_pid() { head -1 "$1/postmaster.pid" 2>/dev/null || true; }

stop_all() {
  for d in "$DIR/a" "$DIR/b"; do
    local pid
    pid=$(postmaster_pid "$d")
    [ -n "$pid" ] && kill -9 -- "-$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT

rm -rf "$DIR"
mkdir -p "$DIR"
chown postgres "$DIR"
as_pg "$PGBIN/initdb" -D "$DIR/a" -U postgres --auth=trust >/dev/null
cat >>"$DIR/a/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
max_wal_senders = 5
hot_standby = on
logging_collector = off
log_line_prefix = '%m [%p] '
EOF
echo "host replication all 127.0.0.1/32 trust" >>"$DIR/a/pg_hba.conf"

start() { # DIR PORT
  as_pg "$PGBIN/pg_ctl" -D "$1" -o "-p $2" -l "$1/log" -w -s start
}

primary=a replica=b
start "$DIR/a" "${PORTS[0]}"
pport=${PORTS[0]} rport=${PORTS[1]}
printf 'trial wait_after_kill_ms reload_to_new_timeline_ms request_to_writable_ms\n' | tee "$DIR/results"
for trial in $(seq 1 "$TRIALS"); do
  rm -rf "${DIR:?}/$replica"
  as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$DIR/$replica" -R -X stream -c fast
  start "$DIR/$replica" "$rport"
  for _ in $(seq 1 200); do
    [ "$(sql "$rport" "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")" = 1 ] && break
    sleep 0.05
  done
  sql "$pport" "CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES ($trial)" >/dev/null
  kill -9 -- "-$(postmaster_pid "$DIR/$primary")"
  wait_ms=$((RANDOM % 6000))
  sleep "$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))"
  log="$DIR/$replica/log"
  lines_before=$(wc -l <"$log")
  asked=$(ms_now)
  sql "$rport" "SELECT pg_reload_conf(); SELECT pg_sleep($DELAY_MS / 1000.0); SELECT pg_promote(false)" >/dev/null
  last_ask=$(ms_now)
  while [ "$(sql "$rport" "SELECT pg_is_in_recovery()")" != f ]; do
    if [ "$MODE" = repeat ] && [ $(($(ms_now) - last_ask)) -ge 50 ]; then
      sql "$rport" "SELECT pg_is_in_recovery() AND pg_promote(false)" >/dev/null || true
      last_ask=$(ms_now)
    fi
    sleep 0.01
  done
  writable=$(( $(ms_now) - asked ))
  # Postgres's own timestamps: the reload -> the new timeline.
  span=$(tail -n +"$((lines_before + 1))" "$log" | python3 -c '
import sys, datetime
t = {}
for line in sys.stdin:
    for key, word in (("req", "received SIGHUP"), ("tli", "selected new timeline ID")):
        if word in line and key not in t:
            t[key] = datetime.datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S.%f")
print(round((t["tli"] - t["req"]).total_seconds() * 1000) if len(t) == 2 else "-")
')
  printf '%s %s %s %s\n' "$trial" "$wait_ms" "$span" "$writable" | tee -a "$DIR/results"
  tail -n +"$((lines_before + 1))" "$log" >"$DIR/trial-$trial.log"
  primary_was=$primary
  primary=$replica replica=$primary_was
  tmp=$pport pport=$rport rport=$tmp
done
python3 - "$DIR/results" "$MODE" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
w = sorted(int(r[2]) for r in rows if r[2] != "-")
slow = [v for v in w if v >= 1000]
print(f"MODE={sys.argv[2]}: {len(w)} promotions, reload -> new timeline ms (Postgres's log): "
      f"min {w[0]}, median {statistics.median(w):.0f}, max {w[-1]}; {len(slow)} took 1 s or more: {slow}")
EOF
