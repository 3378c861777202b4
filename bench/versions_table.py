"""Issue 15's table on both OpenSSL versions side by side, from one `scripts/bench --peers` run
(TSV: metric, path, value): the bookworm build of pgt-proxy and pgbouncer on the host's
OpenSSL 3.0, the trixie build and trixie's pgbouncer on OpenSSL 3.5 (in a Debian 13 root),
PGT-Proxy 1.0 and direct TLS, with issue 23's targets judged on each version.
`versions_table.py RESULTS OUT`."""
import os
import statistics
import subprocess
import sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data = {}
for metric, path, value in rows:
    if value:
        data.setdefault((metric, path), []).append(float(value))

PATHS = ["direct", "proxy", "pgbouncer", "proxy35", "pgbouncer35", "ambar"]
NAMES = {"direct": "direct TLS (3.0)", "proxy": "pgt-proxy, OpenSSL 3.0 (bookworm build)",
         "pgbouncer": "pgbouncer, 3.0", "proxy35": "pgt-proxy, OpenSSL 3.5 (trixie build)",
         "pgbouncer35": "pgbouncer, 3.5", "ambar": "PGT-Proxy 1.0 (aws-lc)"}


def med(metric, path):
    v = data.get((metric, path))
    return statistics.median(v) if v else None


def cell(v, prec):
    return "–" if v is None else f"{v:,.{prec}f}"


def yes(ok):
    return "–" if ok is None else ("yes" if ok else "**no**")


lines = ["| per unit of work | " + " | ".join(NAMES[p] for p in PATHS) + " | target | met, 3.0 | met, 3.5 |",
         "|---" * (len(PATHS) + 4) + "|"]


def row(name, metric, prec, target=None):
    """target: "pgbouncer" (≤ pgbouncer's on the same OpenSSL), ("ambar35", x) (3.5 only:
    ≤ x × PGT-Proxy), "3.0" (3.5 ≤ the 3.0 figure), ("direct+", ms) (both), or None."""
    v = {p: med(metric, p) for p in PATHS}
    text, m30, m35 = "–", None, None

    def le(a, b):
        return None if a is None or b is None else a <= b
    if target == "pgbouncer":
        text = "≤ pgbouncer's on the same OpenSSL"
        m30, m35 = le(v["proxy"], v["pgbouncer"]), le(v["proxy35"], v["pgbouncer35"])
    elif target == "3.0":
        text = "3.5 ≤ 3.0"
        m35 = le(v["proxy35"], v["proxy"])
    elif isinstance(target, tuple) and target[0] == "ambar35":
        text = f"3.5 ≤ {target[1]:.2f} × PGT-Proxy"
        m35 = le(v["proxy35"], None if v["ambar"] is None else target[1] * v["ambar"])
    elif isinstance(target, tuple) and target[0] == "direct+":
        text = f"≤ direct + {target[1]:g} ms"
        d = None if v["direct"] is None else v["direct"] + target[1]
        m30, m35 = le(v["proxy"], d), le(v["proxy35"], d)
    lines.append(f"| {name} | " + " | ".join(cell(v[p], prec) for p in PATHS)
                 + f" | {text} | {yes(m30)} | {yes(m35)} |")


def outside_row(metric, name, prec):
    """An instruction figure less the share inside libssl and libcrypto themselves."""
    v = {}
    for p in PATHS:
        whole, ssl = med(metric, p), med(metric + "_openssl", p)
        v[p] = None if whole is None or ssl is None else whole - ssl
    lines.append(f"| {name} | " + " | ".join(cell(v[p], prec) for p in PATHS) + " | – | – | – |")


row("CPU per select-only transaction (µs)", "cpu_per_select_us", 1, "pgbouncer")
row("instructions per select-only transaction (callgrind, thousands)", "kinstr_select", 1, "pgbouncer")
outside_row("kinstr_select", "… outside libssl + libcrypto (thousands)", 1)
row("CPU per GB of COPY out (s)", "cpu_per_gb_out", 2, ("ambar35", 0.85))
row("instructions per MB of COPY out (callgrind, millions)", "minstr_mb_out", 2)
row("CPU per GB of COPY in (s)", "cpu_per_gb_in", 2)
row("CPU per new connection (ms; pgbouncer pools its server connections)", "cpu_per_connection", 2)
row("instructions per new connection (callgrind, millions)", "minstr_connection", 2)
labels = sorted({m[len("idle_kib_cold_"):] for (m, _) in data if m.startswith("idle_kib_cold_")},
                key=lambda l: (l.split("_")[1], int(l.split("_")[0])))
for l in labels:
    n, up = l.split("_")
    upstream = "PostgreSQL" if up == "pg" else "a minimal TLS upstream"
    row(f"memory per idle session, {int(n):,} to {upstream}, from a cold start (KiB)",
        f"idle_kib_cold_{l}", 1, "3.0")
    row(f"memory per idle session, {int(n):,} to {upstream}, warm (KiB)",
        f"idle_kib_per_session_{l}", 1, "3.0")
row("connect to ReadyForQuery p50, quiet (ms)", "connect_p50", 2, ("direct+", 2))
row("connect p50 while `pgbench -S -c 8` runs against the server (ms)", "connect_busy_p50", 2, ("direct+", 2))
row("select-only TPS (`pgbench -S -c 8 -j 2`)", "select_tps", 0)
row("COPY out (MB/s)", "copy_out_mbs", 0)


def run(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


dirty = " (with uncommitted changes)" if run("git status --porcelain --untracked-files=no") else ""
rsa = os.environ["key"] == "rsa"
header = f"""Run {run('date -u +%Y-%m-%dT%H:%MZ')}: `{os.environ['command_line']}`, commit {run('git rev-parse --short HEAD')}{dirty}.
OpenSSL 3.0: the host (Debian 12), {run('openssl version')}, {run('pgbouncer --version | head -n 1')}. OpenSSL 3.5: a Debian 13 root (`target/trixie-bench-root`, chroot: its own glibc, libssl and openssl.cnf; the host's kernel, network and cores), {os.environ.get('openssl35', '?')}, {os.environ.get('pgbouncer35', '?')}; pgt-proxy there is the binary `scripts/package --suite trixie` builds (trixie's libssl-dev). PostgreSQL, pgbench and psql are the host's (their OpenSSL 3.0) for every path.
Certificates: {'RSA-2048' if rsa else 'ECDSA P-256'}. Medians of {os.environ['rounds']} rounds, every path in every round (order rotated); memory: RSS growth ÷ sessions (cold: the first time that many are opened; warm: a second cycle).
"""
open(sys.argv[2], "w").write(header + "\n" + "\n".join(lines) + "\n")
