# A throwaway PostgreSQL and pgt-proxy instances in one temporary directory, removed on exit:
# the shared ground of scripts/bench and scripts/soak (sourced, not run). Call `throwaway_init`
# first; it sets `work`, the trap, and the open-files limit.
#
#   make_pki [ec|rsa]          development PKI in $work/pki (ca, db, proxy; localhost, 127.0.0.1)
#   start_pg CONF_LINE...      PostgreSQL on 127.0.0.1:$pg_port, TLS on, trust over hostssl,
#                              user and database "bench"; extra postgresql.conf lines
#   start_proxy NAME PORT UPSTREAM_PORT [TOML_LINE...]
#                              pgt-proxy on 127.0.0.1:PORT; extra [listen] lines, and lines
#                              after a "[upstream]" one go to that section; sets proxy_pid
#                              (PROXY_WRAP=CMD runs it under CMD, e.g. valgrind)
#   hold_sessions NAME FD COUNT ARG...
#                              $tool idle ARG... --count COUNT in the background, held open
#                              until fd FD is closed; waits for its "ready" line in
#                              $work/NAME.out (stderr: $work/NAME.err); sets holder_NAME
#   free_port, cpu_ticks PID, rss_kib PID, open_fds PID, as_pg CMD...

throwaway_init() {
    work=$(mktemp -d "/tmp/pgt-${1:-run}.XXXXXX")
    chmod 755 "$work"
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    run_as_pg=()
    [ "$(id -u)" = 0 ] && run_as_pg=(runuser -u postgres --)
    throwaway_pids=()
    throwaway_cleanups=()
    trap throwaway_cleanup EXIT
    trap 'exit 130' INT TERM
    # 10,000 sessions need ~20,000 descriptors in the proxy: go as far as the hard limit.
    ulimit -n "$(ulimit -Hn)"
}

throwaway_cleanup() {
    local p c
    for c in "${throwaway_cleanups[@]}"; do eval "$c" || true; done
    for p in "${throwaway_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [ -f "$work/data/postmaster.pid" ]; then
        p=$(head -n 1 "$work/data/postmaster.pid")
        kill -INT "$p" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$work"
}

as_pg() { "${run_as_pg[@]}" "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
open_fds() { ls "/proc/$1/fd" | wc -l; }

make_pki() {
    PKI_KEY=${1:-ec} "$repo/certs/make-dev-pki.sh" "$work/pki" localhost 127.0.0.1 >/dev/null
    mkdir -p "$work/pgtls"
    cp "$work/pki/db.crt" "$work/pki/db.key" "$work/pgtls/"
    [ ${#run_as_pg[@]} -eq 0 ] || chown -R postgres: "$work/pgtls" "$work"
}

start_pg() {
    pg_port=$(free_port)
    as_pg "$pgbin/initdb" --no-sync -A trust -U bench -D "$work/data" >/dev/null
    {
        echo "port = $pg_port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$work'"
        echo "ssl = on"
        echo "ssl_cert_file = '$work/pgtls/db.crt'"
        echo "ssl_key_file = '$work/pgtls/db.key'"
        printf '%s\n' "$@"
    } >>"$work/data/postgresql.conf"
    # TLS only over TCP, as in production; trust, so authentication costs neither path anything.
    printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$work/data/pg_hba.conf"
    as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w -t 60 start >/dev/null
    as_pg psql -X -q -h "$work" -p "$pg_port" -U bench -d postgres -c 'create database bench'
}

# psql as the superuser over the Unix socket.
pg_admin() { psql -X -q -h "$work" -p "$pg_port" -U bench -d bench "$@"; }

start_proxy() {
    local name=$1 port=$2 upstream=$3 line
    shift 3
    {
        echo "[listen]"
        echo "addresses = [\"127.0.0.1:$port\"]"
        echo "certificate = \"$work/pki/proxy.crt\""
        echo "private_key = \"$work/pki/proxy.key\""
        local section=listen
        for line in "$@"; do
            if [ "$line" = "[upstream]" ]; then section=upstream; break; fi
            echo "$line"
        done
        echo
        echo "[upstream]"
        echo "host = \"${PROXY_UPSTREAM_HOST:-localhost}\""
        echo "port = $upstream"
        echo "ca = \"$work/pki/ca.crt\""
        if [ "$section" = upstream ]; then
            local seen=0
            for line in "$@"; do
                [ $seen = 1 ] && echo "$line"
                [ "$line" = "[upstream]" ] && seen=1
            done
        fi
    } >"$work/$name.toml"
    # PROXY_WRAP: a command to run it under (valgrind, for instruction counts).
    ${PROXY_WRAP:-} "$proxy_bin" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
    proxy_pid=$!
    throwaway_pids+=("$proxy_pid")
    for _ in $(seq 1200); do grep -q ready "$work/$name.log" && return; sleep 0.1; done
    echo "the proxy did not start:" >&2
    cat "$work/$name.log" >&2
    exit 1
}

hold_sessions() {
    local name=$1 fd=$2 count=$3
    shift 3
    rm -f "$work/$name.in"
    mkfifo "$work/$name.in"
    "$tool" idle "$@" --count "$count" <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err" &
    eval "holder_$name=$!"
    eval "exec $fd>\"\$work/\$name.in\""
    for _ in $(seq 1200); do grep -q '^ready' "$work/$name.out" && return; sleep 0.5; done
    echo "$name: the idle sessions were never ready" >&2
    cat "$work/$name.err" >&2
    return 1
}
