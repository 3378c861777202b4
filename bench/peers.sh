# The peers of `scripts/bench --peers` (sourced by it): the proxies a user would pick instead,
# started with the start scripts in ../shared/peers against the run's PostgreSQL and
# certificates, so every figure is measured in the same interleaved rounds as direct and
# pgt-proxy.
#
#   peers_prepare    builds PGT-Proxy 1.0 (Ambar, rustls/aws-lc) from ../shared/peers into
#                    target/peers/ (cached), installs pgbouncer, valgrind and socat
#   peers_start      starts PGT-Proxy ("ambar") and pgbouncer ("pgbouncer"); sets
#                    ambar_port/ambar_pid and pgb_port/pgb_pid
#
# pgbouncer runs with auth_type = trust (its start script's SCRAM line changed), as the
# PostgreSQL here trusts every path: authentication then costs no path anything, and the
# benchmark client (trust only) can measure its connect times and idle memory too.

# Beside the main checkout (a worktree's common git directory is the main checkout's .git).
peers_src=${BENCH_PEERS_SRC:-$(cd "$(git rev-parse --path-format=absolute --git-common-dir)/../.." && pwd)/shared/peers}

peers_prepare() {
    [ -d "$peers_src/pgt-proxy-ambar" ] || { echo "bench: $peers_src/pgt-proxy-ambar is missing" >&2; exit 1; }
    local need=()
    command -v pgbouncer >/dev/null || need+=(pgbouncer)
    command -v valgrind >/dev/null || need+=(valgrind)
    command -v setpriv >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        [ "$(id -u)" = 0 ] || { echo "bench: install ${need[*]}" >&2; exit 1; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    # The Debian package starts its own pgbouncer on 6432; the benchmark runs its own.
    systemctl stop pgbouncer 2>/dev/null || true
    getent passwd pgtest >/dev/null || useradd --system --no-create-home pgtest
    local dest=$repo/target/peers
    mkdir -p "$dest"
    # A copy to build in (the shared tree stays read-only); rebuilt only when its source changes.
    if ! diff -rq "$peers_src/pgt-proxy-ambar" "$dest/pgt-proxy-ambar" >/dev/null 2>&1; then
        rm -rf "$dest/pgt-proxy-ambar"
        cp -r "$peers_src/pgt-proxy-ambar" "$dest/"
    fi
    echo "== building PGT-Proxy 1.0 (peer) into target/peers" >&2
    (cd "$dest/pgt-proxy-ambar" && CARGO_TARGET_DIR=$dest/build cargo build --release --locked --quiet) ||
        { echo "bench: PGT-Proxy did not build (see above)" >&2; exit 1; }
    ambar_bin=$dest/build/release/pgt_proxy
    # Trust, and room for a wrapper (valgrind) after the drop to the pgtest user.
    sed -e 's/^auth_type = scram-sha-256$/auth_type = trust/' \
        -e 's/--init-groups pgbouncer /--init-groups ${PGB_WRAP:-} pgbouncer /' \
        "$peers_src/pgbouncer.sh" >"$dest/pgbouncer-trust.sh"
    grep -q '^auth_type = trust$' "$dest/pgbouncer-trust.sh" && grep -qF 'PGB_WRAP' "$dest/pgbouncer-trust.sh" ||
        { echo "bench: pgbouncer.sh changed; adapt bench/peers.sh" >&2; exit 1; }
    # The certificates in the layout the start scripts expect.
    peer_certs=$work/peer-certs
    mkdir -p "$peer_certs/upstream-ca-dir"
    cp "$work/pki/proxy.crt" "$work/pki/proxy.key" "$peer_certs/"
    cp "$work/pki/ca.crt" "$peer_certs/upstream-ca.crt"
    cp "$work/pki/ca.crt" "$peer_certs/upstream-ca-dir/ca.pem" # it reads *.pem only
    chmod 755 "$peer_certs"
}

# Waits until 127.0.0.1:$1 accepts connections.
wait_listening() {
    for _ in $(seq 600); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: nothing listens on $1" >&2
    return 1
}

# peer_start NAME PGPORT PORT [WRAP]: one peer in the background, its binary run under the
# command WRAP if given (valgrind); sets peer_pid (the scripts exec, so it is the binary's).
peer_start() {
    local name=$1 pgport=$2 port=$3 wrap=${4:-}
    case $name in
    ambar) PGT_AMBAR_BIN="${wrap:+$wrap }$ambar_bin" bash "$peers_src/pgt-proxy-ambar.sh" "$peer_certs" "$pgport" "$port" \
        >"$work/$name-$port.log" 2>&1 & ;;
    pgbouncer) PGB_DIR=$work/pgb-$port PGB_WRAP=$wrap bash "$repo/target/peers/pgbouncer-trust.sh" "$peer_certs" "$pgport" "$port" \
        >"$work/$name-$port.log" 2>&1 & ;;
    esac
    peer_pid=$!
    throwaway_pids+=("$peer_pid")
    wait_listening "$port" || { cat "$work/$name-$port.log" >&2; exit 1; }
}

peers_start() {
    ambar_port=$(free_port)
    peer_start ambar "$pg_port" "$ambar_port"
    ambar_pid=$peer_pid
    pgb_port=$(free_port)
    peer_start pgbouncer "$pg_port" "$pgb_port"
    pgb_pid=$peer_pid
}

# Instructions per unit of work, without the noise of a shared machine: each proxy runs
# under callgrind three times, on a port of its own: a warm-up only, the warm-up and a fixed
# number of select-only transactions, the warm-up and a fixed number of new connections, and
# the warm-up and a COPY of 50 MB out and one in; each
# run ends with SIGTERM, and the difference of the totals divided by the work is the figure
# (the select run's own two connections taken out).
# (Zeroing the counters of a running process with callgrind_control hangs for pgbouncer, whose
# process changed user; three runs work for every peer.)
instr_run() { # NAME JOB: starts NAME under callgrind, warms up, runs JOB, stops; prints Ir twice
    local name=$1 job=$2 port pid file
    port=$(free_port)
    export BENCH_CG=$name-$job
    case $name in
    proxy)
        # --admin: the counted proxy serves the metrics endpoint too.
        if ((admin)); then export PGT_PROXY__ADMIN__LISTEN=127.0.0.1:$(free_port); fi
        PROXY_WRAP=$wrap start_proxy "proxy-cg" "$port" "$pg_port" "max_connections = 2000"
        pid=$proxy_pid
        unset PGT_PROXY__ADMIN__LISTEN
        ;;
    proxy35 | pgbouncer35) peer35_start "$name" "$pg_port" "$port" "$wrap"; pid=$peer_pid ;;
    *) peer_start "$name" "$pg_port" "$port" "$wrap"; pid=$peer_pid ;;
    esac
    PGPORT=$port pgbench -n -S -c 2 -j 2 -t 50 >"$work/$BENCH_CG.warm" 2>&1 ||
        { echo "bench: $name: the warm-up failed: $(tail -n 2 "$work/$BENCH_CG.warm")" >&2; exit 1; }
    case $job in
    select) PGPORT=$port pgbench -n -S -c 2 -j 2 -t $((txns / 2)) >/dev/null 2>&1 ;;
    connect) PGPORT=$port pgbench -n -S -C -c 2 -j 2 -t $((conns / 2)) >/dev/null 2>&1 ;;
    copyout) PGPORT=$port psql -X -q -c "COPY (select repeat('x',1000) from generate_series(1,$copy_rows)) TO STDOUT" >/dev/null ;;
    copyin) awk -v n="$copy_rows" 'BEGIN { s = sprintf("%1000s", ""); gsub(/ /, "x", s); for (i = 0; i < n; i++) print s }' |
        PGPORT=$port psql -X -q -c 'COPY copy_in FROM STDIN' ;;
    esac
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    file=$(ls "$work/cg/$BENCH_CG".* 2>/dev/null | head -n 1)
    # The total, and the share spent inside the system's libssl and libcrypto themselves
    # (OpenSSL's calls into libc, malloc and memcpy, not counted there).
    printf '%s %s\n' "$(awk '/^(summary|totals):/ {print $2; exit}' "$file")" \
        "$(callgrind_annotate --inclusive=no --threshold=100 "$file" 2>/dev/null |
            awk '/\[.*lib(ssl|crypto)\.so[^]]*\]$/ {gsub(",", "", $1); s += $1} END {printf "%d", s}')"
}
# instr_figures NAME SUFFIX BASE SELECT CONNECT COPYOUT COPYIN: records the figures per unit
# of work from the runs' totals. The select run's two connections are taken out at the
# measured cost of one; a COPY is one more connection, taken out the same way.
instr_figures() {
    local name=$1 suffix=$2 metric value
    shift 2
    while read -r metric value; do record "$metric$suffix" "$name" "$value"; done < <(
        python3 -c '
import sys
base, select, connect, out, into, txns, conns, rows = map(float, sys.argv[1:])
conn = (connect - base) / conns
mb = rows * 1001 / 1e6
print("kinstr_select", (select - base - 2 * conn) / txns / 1e3)
print("minstr_connection", conn / 1e6)
print("minstr_mb_out", (out - base - conn) / mb / 1e6)
print("minstr_mb_in", (into - base - conn) / mb / 1e6)' "$@" "$txns" "$conns" "$copy_rows")
}
measure_instructions() {
    local name job txns=2000 conns=100 copy_rows=50000
    local -A total openssl
    # pgbouncer drops to the pgtest user before it writes its counts.
    mkdir -m 1777 "$work/cg"
    wrap="valgrind -q --tool=callgrind --callgrind-out-file=$work/cg/%q{BENCH_CG}.%p"
    # BENCH_INSTR_NAMES="proxy" counts pgt-proxy alone (a quicker loop while trying a change).
    local names="proxy ambar pgbouncer"
    if ((${trixie:-0})); then names+=" proxy35 pgbouncer35"; fi
    for name in ${BENCH_INSTR_NAMES:-$names}; do
        for job in none select connect copyout copyin; do
            read -r "total[$job]" "openssl[$job]" < <(instr_run "$name" "$job") ||
                { echo "bench: counting $name ($job) failed" >&2; exit 1; }
        done
        instr_figures "$name" "" "${total[none]}" "${total[select]}" "${total[connect]}" "${total[copyout]}" "${total[copyin]}"
        # PGT-Proxy links aws-lc statically: its crypto cannot be told apart this way.
        if [ "$name" != ambar ]; then
            instr_figures "$name" _openssl "${openssl[none]}" "${openssl[select]}" "${openssl[connect]}" \
                "${openssl[copyout]}" "${openssl[copyin]}"
        fi
    done
    unset BENCH_CG
    # Kept for `callgrind_annotate target/bench/callgrind/proxy-select.*` (where they go).
    rm -rf "$repo/target/bench/callgrind"
    mkdir -p "$repo/target/bench"
    cp -r "$work/cg" "$repo/target/bench/callgrind"
}
