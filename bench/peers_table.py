"""The table of `scripts/bench --peers`: every measure for direct TLS, pgt-proxy and each peer
from one run's results (TSV: metric, path, value), the ratios pgt-proxy/PGT-Proxy and
pgt-proxy/best peer, and issue 15's targets. `peers_table.py RESULTS OUT`.

The best peer is the better of PGT-Proxy and pgbouncer, the proxies a user would run instead
(socat terminates no TLS and is shown as a reference); for new-connection TPS it is PGT-Proxy
alone, since pgbouncer reuses its server connections and so skips the upstream handshake."""
import os
import statistics
import subprocess
import sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data = {}
for metric, path, value in rows:
    if value:
        data.setdefault((metric, path), []).append(float(value))

PATHS = ["direct", "proxy", "ambar", "pgbouncer", "tcp"]
NAMES = {"direct": "direct TLS", "proxy": "pgt-proxy", "ambar": "PGT-Proxy 1.0",
         "pgbouncer": "pgbouncer (session)", "tcp": "socat (no TLS termination)"}


def med(metric, path):
    v = data.get((metric, path))
    return statistics.median(v) if v else None


def cell(v, prec):
    return "–" if v is None else f"{v:,.{prec}f}"


lines = ["| measure | " + " | ".join(NAMES[p] for p in PATHS)
         + " | pgt-proxy / PGT-Proxy | pgt-proxy / best peer | target | met |",
         "|---" * (len(PATHS) + 5) + "|"]


def row(name, metric, prec, higher_better, target=None, peers=("ambar", "pgbouncer")):
    """target: ("ambar", factor) for a bound relative to PGT-Proxy, ("best", 1.0) for the
    best peer, ("direct+", ms) for an added latency, or None (informational)."""
    values = {p: med(metric, p) for p in PATHS}
    ours, ambar = values["proxy"], values["ambar"]
    candidates = [values[p] for p in peers if values[p] is not None]
    best = (max(candidates) if higher_better else min(candidates)) if candidates else None
    r_ambar = f"{ours / ambar:.2f}" if ours and ambar else "–"
    r_best = f"{ours / best:.2f}" if ours and best else "–"
    text, met = "–", "–"
    if target and ours is not None:
        kind, x = target
        if kind == "ambar" and ambar:
            bound = x * ambar
            text = f"{'≥' if higher_better else '≤'} {x:.2f} × PGT-Proxy"
            met = ours >= bound if higher_better else ours <= bound
        elif kind == "best" and best:
            text = "≥ best peer" if higher_better else "≤ best peer"
            met = ours >= best if higher_better else ours <= best
        elif kind == "direct+" and values["direct"] is not None:
            text = f"≤ direct + {x:g} ms"
            met = ours <= values["direct"] + x
        if isinstance(met, bool):
            met = "yes" if met else "**no**"
    lines.append(f"| {name} | " + " | ".join(cell(values[p], prec) for p in PATHS)
                 + f" | {r_ambar} | {r_best} | {text} | {met} |")


def share_row(metric, unit, prec, factor):
    """How much of an instruction figure is spent inside libssl and libcrypto alone, against
    the bound the target sets (factor x PGT-Proxy's whole figure): when OpenSSL's share alone
    is above it, no change outside OpenSSL can meet that target."""
    values = {p: med(metric + "_openssl", p) for p in PATHS}
    ours, ambar = values["proxy"], med(metric, "ambar")
    r_ambar = f"{ours / ambar:.2f}" if ours and ambar else "–"
    text, met = "–", "–"
    if ours is not None and ambar:
        bound = factor * ambar
        text = f"bound {bound:,.{prec}f} ({factor:.2f} × PGT-Proxy's whole)"
        met = "out of reach: OpenSSL alone is above the bound" if ours > bound else "within the bound"
    lines.append(f"| … of which inside libssl + libcrypto ({unit}) | "
                 + " | ".join(cell(values[p], prec) for p in PATHS)
                 + f" | {r_ambar} | – | {text} | {met} |")


row("select-only TPS (`pgbench -S -c 8 -j 2`)", "select_tps", 0, True, ("best", 1.0))
row("proxy CPU per select-only transaction (µs)", "cpu_per_select_us", 1, False, ("ambar", 0.85))
row("instructions per select-only transaction (callgrind, thousands)", "kinstr_select", 1, False, ("ambar", 0.85))
share_row("kinstr_select", "thousands", 1, 0.85)
row("new connection per transaction TPS (`pgbench -S -C -c 4 -j 2`)", "connect_tps", 1, True, ("best", 1.0),
    peers=("ambar",))
row("proxy CPU per new connection (ms)", "cpu_per_connection", 2, False, ("ambar", 0.90))
row("instructions per new connection (callgrind, millions)", "minstr_connection", 2, False, ("ambar", 0.90))
share_row("minstr_connection", "millions", 2, 0.90)
row("connect to ReadyForQuery p50, quiet (ms)", "connect_p50", 2, False, ("direct+", 2))
row("connect to ReadyForQuery p99, quiet (ms)", "connect_p99", 2, False, ("direct+", 4))
row("connect p50 while `pgbench -S -c 8` runs against the server (ms)", "connect_busy_p50", 2, False, ("direct+", 2))
row("connect p99 while `pgbench -S -c 8` runs against the server (ms)", "connect_busy_p99", 2, False, ("direct+", 4))
row("COPY out ~1 GB (MB/s)", "copy_out_mbs", 0, True, ("best", 1.0))
row("proxy CPU per GB relayed, COPY out (s)", "cpu_per_gb_out", 2, False, ("ambar", 0.85))
row("instructions per MB relayed, COPY out (callgrind, millions)", "minstr_mb_out", 2, False, ("ambar", 0.85))
share_row("minstr_mb_out", "millions", 2, 0.85)
row("COPY in ~1 GB (MB/s)", "copy_in_mbs", 0, True, ("best", 1.0))
row("proxy CPU per GB relayed, COPY in (s)", "cpu_per_gb_in", 2, False, ("ambar", 0.85))
row("instructions per MB relayed, COPY in (callgrind, millions)", "minstr_mb_in", 2, False, ("ambar", 0.85))
share_row("minstr_mb_in", "millions", 2, 0.85)
labels = sorted({m[len("idle_kib_cold_"):] for (m, _) in data if m.startswith("idle_kib_cold_")},
                key=lambda l: (l.split("_")[1], int(l.split("_")[0])))
for l in labels:
    n, up = l.split("_")
    upstream = "PostgreSQL" if up == "pg" else "a minimal TLS upstream"
    row(f"memory per idle session, {int(n):,} sessions to {upstream}, opened from a cold start (KiB)",
        f"idle_kib_cold_{l}", 1, False, ("ambar", 0.75))


def run(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


cpu = run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
dirty = " (with uncommitted changes)" if run("git status --porcelain --untracked-files=no") else ""
rsa = os.environ["key"] == "rsa"
header = f"""Run {run('date -u +%Y-%m-%dT%H:%MZ')}: `{os.environ['command_line']}`, commit {run('git rev-parse --short HEAD')}{dirty}.
Machine: {run('nproc')} cores ({cpu}), {run('uname -sr')}; {run('openssl version')}; {run('pgbouncer --version | head -n 1')}; PostgreSQL {run('psql --version')}.
Certificates: {'RSA-2048' if rsa else 'ECDSA P-256'}. Medians of {os.environ['rounds']} rounds; every path in every round, the order rotated each round; pgbench runs {os.environ['seconds']} s; COPY {int(os.environ['rows']):,} rows of 1,000 bytes. CPU: the proxy process's user + system time over the run ÷ the work done (socat forks per connection: not measured). Instructions: callgrind, after a warm-up, over 2,000 select-only transactions, 100 new connections and a COPY of 50 MB each way. pgbouncer runs in session mode with auth_type = trust (as PostgreSQL trusts every path here). Memory: RSS growth ÷ sessions the first time that many are opened (a second, warm cycle would show the peers almost no growth: they keep freed memory in their allocator, only pgt-proxy trims it).
"""
open(sys.argv[2], "w").write(header + "\n" + "\n".join(lines) + "\n")
