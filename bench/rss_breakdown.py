#!/usr/bin/env python3
"""Where a process's resident memory is: /proc/PID/smaps grouped by what is mapped.

Usage: bench/rss_breakdown.py PID [PID...]

For each PID prints VmRSS, smaps_rollup's Rss/Anonymous/file-backed split, then the
resident KiB per mapping group (the executable's code, read-only data, data; each
shared library; heap; thread stacks and other anonymous memory), largest first.
bench/compare.sh runs it on every agent and keeper at the end of its idle step.
"""
import os
import sys


def groups(pid):
    out = {}
    name = None
    perms = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                perms = parts[1]
                path = parts[5] if len(parts) > 5 else ""
                base = os.path.basename(path) if path.startswith("/") else (path or "[anon]")
                kind = {"r-xp": "code", "r--p": "rodata", "rw-p": "data"}.get(perms, perms)
                name = f"{base} {kind}" if path.startswith("/") else base
            elif parts[0] == "Rss:":
                out[name] = out.get(name, 0) + int(parts[1])
    return out


def rollup(pid):
    r = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            p = line.split()
            if len(p) >= 2 and p[0].endswith(":") and p[1].isdigit():
                r[p[0][:-1]] = int(p[1])
    return r


for pid in sys.argv[1:]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    r = rollup(pid)
    anon = r.get("Anonymous", 0)
    print(f"pid {pid}: VmRSS {rss} KiB ({rss / 1024:.2f} MiB); "
          f"anonymous {anon} KiB, file-backed {r.get('Rss', 0) - anon} KiB")
    for name, kib in sorted(groups(pid).items(), key=lambda x: -x[1]):
        if kib:
            print(f"  {kib:7d} KiB  {name}")
