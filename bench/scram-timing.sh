#!/usr/bin/env bash
# Server-first latency of known vs unknown users through a proxy with auth.mode = "scram"
# (issue 21: the upstream round trips a known user costs before its server-first must not
# tell it from an unknown one). A throwaway PostgreSQL asks bench_scram for scram-sha-256;
# the proxy holds its verifier in a userlist; `pgt-bench scram-timing` alternates
# bench_scram and an unknown user, 100 attempts each (after 5 of warm-up), and prints the
# median and p10-p90 of each.
#
# usage: bench/scram-timing.sh [--count N] [--release]
#   --release  use target/release binaries (build them first); default: debug builds
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
count=100 profile=debug
while [ $# -gt 0 ]; do
    case $1 in
        --count) count=$2; shift ;;
        --release) profile=release ;;
        *) echo "usage: $0 [--count N] [--release]" >&2; exit 2 ;;
    esac
    shift
done
if [ "$profile" = debug ]; then
    cargo build --quiet --bin pgt-proxy --example pgt-bench
fi
proxy_bin=${BENCH_PROXY_BIN:-$repo/target/$profile/pgt-proxy}
tool=$repo/target/$profile/examples/pgt-bench

. scripts/throwaway.sh
throwaway_init scram-timing
make_pki ec
start_pg "fsync = off"
pg_admin -c "create role bench_scram login password 'bench-scram'"
sed -i '1i hostssl all bench_scram 127.0.0.1/32 scram-sha-256' "$work/data/pg_hba.conf"
pg_admin -c 'select pg_reload_conf()' >/dev/null
printf '"bench_scram" "%s"\n' "$(pg_admin -At -c "select rolpassword from pg_authid where rolname = 'bench_scram'")" \
    >"$work/userlist.txt"
chmod 600 "$work/userlist.txt"
head -c 32 /dev/urandom >"$work/mock-secret"
chmod 600 "$work/mock-secret"
port=$(free_port)
PGT_PROXY__AUTH__MODE=scram PGT_PROXY__AUTH__USERLIST=$work/userlist.txt \
    PGT_PROXY__AUTH__MOCK_SECRET_FILE=$work/mock-secret \
    start_proxy proxy-scram "$port" "$pg_port"
"$tool" scram-timing --addr "127.0.0.1:$port" --ca "$work/pki/ca.crt" --database bench \
    --known bench_scram --unknown nobody_here --count "$count"
