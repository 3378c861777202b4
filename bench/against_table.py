"""The table of `scripts/bench --against BIN`: this build ("proxy") and another pgt-proxy
binary ("against"), measured in the same rounds, side by side with their ratio, so a change
is judged by CPU per unit of work rather than by one noisy run. `against_table.py RESULTS`."""
import statistics
import sys

data = {}
for line in open(sys.argv[1]):
    if line.strip():
        metric, path, value = line.rstrip("\n").split("\t")
        if value and path in ("proxy", "against"):
            data.setdefault((metric, path), []).append(float(value))

print("| measure | this build | --against | this / against |")
print("|---|---|---|---|")
for metric in sorted({m for (m, _) in data}):
    ours, theirs = data.get((metric, "proxy")), data.get((metric, "against"))
    if not ours or not theirs:
        continue
    a, b = statistics.median(ours), statistics.median(theirs)
    spread = lambda v: f"{statistics.median(v):,.3g} ({min(v):,.3g}–{max(v):,.3g})"
    print(f"| {metric} | {spread(ours)} | {spread(theirs)} | {a / b:.3f} |" if b else f"| {metric} | {a} | {b} | – |")
