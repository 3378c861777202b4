#!/usr/bin/env bash
# The "connect while the server is busy" row of scripts/bench alone, over more rounds: its
# p99 (the second-slowest of 200 connects under `pgbench -S -c 8`) moves by several ms from
# one measurement to the next, so one or two rounds cannot tell a cost from the tail's
# noise. Direct TLS and pgt-proxy alternate; prints each round and the medians.
#
# usage: bench/connect-busy.sh [--rsa] [ROUNDS]   (default 6 rounds, ~2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
key=ec
if [ "${1:-}" = --rsa ]; then key=rsa; shift; fi
rounds=${1:-6}
for t in pgbench psql python3 openssl; do
    command -v "$t" >/dev/null || { echo "connect-busy: $t is missing (run scripts/bench once)" >&2; exit 1; }
done
cargo build --locked --release --quiet --bin pgt-proxy --example pgt-bench
proxy_bin=$repo/target/release/pgt-proxy
tool=$repo/target/release/examples/pgt-bench
. scripts/throwaway.sh
throwaway_init connect-busy
make_pki "$key"
start_pg "max_connections = 300" "shared_buffers = 256MB" "fsync = off"
pgbench -q -i -s 10 -h "$work" -p "$pg_port" -U bench bench 2>/dev/null
proxy_port=$(free_port)
start_proxy proxy "$proxy_port" "$pg_port" "max_connections = 2000"
export PGHOST=localhost PGUSER=bench PGDATABASE=bench PGSSLMODE=verify-full \
    PGSSLROOTCERT=$work/pki/ca.crt PGGSSENCMODE=disable
: >"$work/rounds.txt"
for round in $(seq "$rounds"); do
    for path in direct proxy; do
        port=$pg_port
        [ "$path" = proxy ] && port=$proxy_port
        PGPORT=$pg_port pgbench -n -S -c 8 -j 2 -T 600 >/dev/null 2>&1 &
        load=$!
        sleep 1
        read -r _ p50 _ p99 _ _ < <("$tool" connect --addr "127.0.0.1:$port" --ca "$work/pki/ca.crt" --count 200)
        kill "$load" 2>/dev/null
        wait "$load" 2>/dev/null || true
        echo "round $round $path: p50 $p50 ms, p99 $p99 ms"
        echo "$path $p50 $p99" >>"$work/rounds.txt"
    done
done
python3 - "$work/rounds.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda path, i: statistics.median(float(r[i]) for r in rows if r[0] == path)
for name, i in (("p50", 1), ("p99", 2)):
    d, p = med("direct", i), med("proxy", i)
    print(f"median {name}: direct {d:.2f} ms, pgt-proxy {p:.2f} ms, added {p - d:+.2f} ms")
PY
