#!/usr/bin/env python3
"""Where each failover's milliseconds went, from a bench/compare.sh run (fullauto).

Usage: bench/failover_breakdown.py BENCH_DIR [kill9|freeze]

For every trial compare.sh kept ($BENCH_DIR/fullauto/<how>-<t0>.watch and .writer),
prints, in ms after the leader key's DELETE: the winner's race decision ("I am the
healthiest node"), the new key's PUT, the start of the promotion ("promoting
postgres"), PostgreSQL's "received promote request", "archive recovery complete"
and "ready to accept connections", and the client's first acknowledged write on the
winner. Agent and PostgreSQL logs have millisecond stamps in UTC, as the watch.
"""
import datetime
import glob
import os
import re
import statistics
import sys

d, how = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "kill9")
sysdir = os.path.join(d, "fullauto")


def stamp(text):
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[,.](\d{3})", text)
    if not m:
        return None
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + int(m.group(2)) / 1000


def first_after(lines, needle, t0, limit=5.0):
    for ln in lines:
        if needle in ln:
            t = stamp(ln)
            if t is not None and t0 - 0.001 <= t <= t0 + limit:
                return t
    return None


def api_to_node(port):
    for y in glob.glob(os.path.join(sysdir, "n*.yml")):
        if f":{port}" in open(y).read():
            return os.path.basename(y)[:-4]
    return None


steps = ["decided", "new_key", "promoting", "pg_request", "pg_recovery_done", "pg_ready", "first_write"]
rows = []
for w in sorted(glob.glob(os.path.join(sysdir, f"{how}-*.watch"))):
    ev = [ln.split() for ln in open(w)]
    tdel = next((float(e[0]) for e in ev if len(e) > 1 and e[1] == "DELETE"), None)
    put_i = next((i for i, e in enumerate(ev) if len(e) > 1 and e[1] == "PUT"), None)
    if tdel is None or put_i is None or len(ev) <= put_i + 2 or len(ev[put_i + 2]) < 2:
        continue
    winner = ev[put_i + 2][1]
    alog = open(os.path.join(sysdir, f"{winner}.log"), errors="replace").read().splitlines()
    # A node cloned later carries its source's log directory: stamps outside the
    # trial's window are ignored.
    plog = []
    for f in glob.glob(os.path.join(sysdir, "data", winner, "log", "*")):
        plog += open(f, errors="replace").read().splitlines()
    since = tdel - 0.5
    at = {"decided": first_after(alog, "I am the healthiest node", since),
          "new_key": float(ev[put_i][0]),
          "promoting": first_after(alog, "promoting postgres", since),
          "pg_request": first_after(plog, "received promote request", since),
          "pg_recovery_done": first_after(plog, "archive recovery complete", since),
          "pg_ready": first_after(plog, "ready to accept connections", since)}
    cfg = open(os.path.join(sysdir, f"{winner}.yml")).read()
    pg_port = re.search(r"postgresql:\n  listen: [\d.]+:(\d+)", cfg).group(1)
    writer = w[: -len(".watch")] + ".writer"
    at["first_write"] = next((float(ln.split()[1]) for ln in open(writer)
                              if ln.startswith("first_ack") and ln.split()[2] == pg_port
                              and float(ln.split()[1]) > tdel), None)
    ms = {k: round((v - tdel) * 1000) for k, v in at.items() if v is not None}
    rows.append(ms)
    print(os.path.basename(w), winner, " ".join(f"{k}={ms.get(k, '-')}" for k in steps))

if rows:
    print(f"median ms after the key's DELETE, {len(rows)} trials:")
    for k in steps:
        vals = [r[k] for r in rows if k in r]
        if vals:
            print(f"  {k:18} {round(statistics.median(vals))} ({min(vals)}-{max(vals)}, n={len(vals)})")
