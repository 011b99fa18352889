"""Prints the side-by-side table of bench/compare.sh from its samples file
(lines `SYSTEM METRIC VALUE`): median, range and count per system, and the ratio
of the medians fullauto / Patroni (below 1: fullauto needs less)."""
import statistics
import sys
from collections import defaultdict

samples = defaultdict(list)
order = []
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 3:
        continue
    system, metric, value = parts
    samples[(system, metric)].append(float(value))
    if metric not in order:
        order.append(metric)


def cell(values):
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:g}"
    return f"{med:g} ({min(values):g}-{max(values):g}, n={len(values)})"


print("| metric | fullauto median (range, n) | Patroni median (range, n) | fullauto / Patroni |")
print("|---|---|---|---|")
for metric in order:
    fa, pa = samples.get(("fullauto", metric), []), samples.get(("patroni", metric), [])
    ratio = "-"
    if fa and pa and statistics.median(pa) != 0:
        ratio = f"{statistics.median(fa) / statistics.median(pa):.2f}"
    print(f"| {metric} | {cell(fa)} | {cell(pa)} | {ratio} |")
