# Debian 13 on OpenSSL 3.5 in `scripts/bench --peers` (sourced by it): the trixie build of
# pgt-proxy and trixie's own pgbouncer, each run inside a Debian 13 root with chroot, next to
# the bookworm build and pgbouncer on the host's OpenSSL 3.0, in the same rounds.
#
#   trixie_prepare   builds the trixie binary (scripts/trixie-build-root's root, as
#                    `scripts/package --suite trixie` builds it, into target/trixie), makes the
#                    run root target/trixie-bench-root (cached: scripts/trixie-root plus
#                    pgbouncer, valgrind and setpriv), and binds /proc, /dev, /etc/hosts (the
#                    same names as every other path: trixie's own maps localhost to ::1 too,
#                    where PostgreSQL does not listen) and $work into
#                    it at the same paths, so every path the benchmark writes names the same
#                    file inside and out
#   trixie_start     starts pgt-proxy ("proxy35") and pgbouncer ("pgbouncer35") in the root;
#                    sets proxy35_port/proxy35_pid and pgb35_port/pgb35_pid
#
# chroot, not the host's loader with trixie's libraries: the process then loads trixie's
# glibc, libssl 3.5, its openssl.cnf and its provider directory exactly as on a Debian 13
# host, and shares the host's network, kernel and cores with every other path of the round.

trixie_prepare() {
    # BENCH_PROXY35_BIN=PATH: another trixie build (one of main, say) instead of this tree's.
    local bin=${BENCH_PROXY35_BIN:-}
    if [ -z "$bin" ]; then
        trixie_build_binary
        bin=$repo/target/trixie/release/pgt-proxy
    fi
    bench_root=$(trixie_bench_root)
    local dir
    for dir in /proc /dev /etc/hosts "$work"; do
        [ -d "$dir" ] && mkdir -p "$bench_root$dir"
        mount --bind "$dir" "$bench_root$dir"
        throwaway_cleanups=("umount -l '$bench_root$dir'" "${throwaway_cleanups[@]}")
    done
    cp "$bin" "$work/pgt-proxy-trixie"
    proxy35_bin=$work/pgt-proxy-trixie
    # By address: trixie's pgbouncer resolves with c-ares, which never answers for localhost
    # in the root (the login times out); the certificates name 127.0.0.1 too.
    sed 's/host=localhost /host=127.0.0.1 /' "$repo/target/peers/pgbouncer-trust.sh" >"$work/pgbouncer-trust.sh"
    openssl35=$(chroot "$bench_root" openssl version)
    pgbouncer35=$(chroot "$bench_root" pgbouncer --version | head -n 1)
}

# The trixie build of this tree, as scripts/package --suite trixie makes it (offline, this
# machine's toolchain bind-mounted), the binary only.
trixie_build_binary() {
    local root mounts=() m rc=0
    root=$("$repo/scripts/trixie-build-root")
    echo "== building pgt-proxy in the Debian 13 build root (OpenSSL 3.5, release)" >&2
    for m in /proc:/proc "$repo":/src /root/.cargo:/root/.cargo /root/.rustup:/root/.rustup; do
        mkdir -p "$root${m#*:}"
        mount --bind "${m%%:*}" "$root${m#*:}"
        mounts=("$root${m#*:}" "${mounts[@]}")
    done
    chroot "$root" env -i PATH=/root/.cargo/bin:/usr/bin:/bin HOME=/root CARGO_HOME=/root/.cargo \
        RUSTUP_HOME=/root/.rustup CARGO_NET_OFFLINE=true CARGO_TARGET_DIR=/src/target/trixie \
        sh -c 'cd /src && cargo build --locked --release --quiet --bin pgt-proxy' || rc=$?
    for m in "${mounts[@]}"; do umount "$m"; done
    [ $rc = 0 ] || { echo "bench: the trixie build failed" >&2; exit 1; }
}

# The run root: scripts/trixie-root's root copied, with trixie's pgbouncer and valgrind and
# the peers' unprivileged user. Made once (~1 min and ~30 MB of packages), cached.
trixie_bench_root() {
    local root=$repo/target/trixie-bench-root base tmp
    local mark=$root/.pgt-bench-ready-v1
    if [ ! -f "$mark" ]; then
        base=$("$repo/scripts/trixie-root")
        tmp=$root.tmp
        if grep -qE " ($root|$tmp)/" /proc/mounts; then
            echo "bench: mounts left under $root; unmount them first" >&2
            exit 1
        fi
        rm -rf "$tmp" "$root"
        cp -a "$base" "$tmp"
        mount --bind /proc "$tmp/proc"
        local rc=0
        DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -qq --no-install-recommends \
            pgbouncer valgrind util-linux >"$repo/target/trixie-bench-root.log" 2>&1 || rc=$?
        # setpriv is a package of its own from trixie on; util-linux had it before.
        if ((rc == 0)) && ! chroot "$tmp" sh -c 'command -v setpriv' >/dev/null; then
            DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -qq --no-install-recommends \
                setpriv >>"$repo/target/trixie-bench-root.log" 2>&1 || rc=$?
        fi
        umount "$tmp/proc"
        ((rc == 0)) || { echo "bench: installing into the trixie bench root failed; see target/trixie-bench-root.log" >&2; exit 1; }
        chroot "$tmp" sh -c 'getent passwd pgtest >/dev/null || useradd --system --no-create-home pgtest'
        chroot "$tmp" apt-get clean
        touch "$tmp/.pgt-bench-ready-v1"
        mv "$tmp" "$root"
    fi
    echo "$root"
}

# peer35_start NAME PGPORT PORT [WRAP]: proxy35 or pgbouncer35 in the root; sets peer_pid
# (chroot, the start script and setpriv exec, so it is the binary's).
peer35_start() {
    local name=$1 pgport=$2 port=$3 wrap=${4:-}
    case $name in
    proxy35)
        proxy_bin_host=$proxy_bin proxy_bin=$proxy35_bin
        PROXY_WRAP="chroot $bench_root ${wrap}" start_proxy "proxy35-$port" "$port" "$pgport" "max_connections = 20000"
        proxy_bin=$proxy_bin_host peer_pid=$proxy_pid
        return
        ;;
    pgbouncer35) PGB_DIR=$work/pgb35-$port PGB_WRAP=$wrap chroot "$bench_root" bash "$work/pgbouncer-trust.sh" \
        "$peer_certs" "$pgport" "$port" >"$work/$name-$port.log" 2>&1 & ;;
    esac
    peer_pid=$!
    throwaway_pids+=("$peer_pid")
    wait_listening "$port" || { cat "$work/$name-$port.log" >&2; exit 1; }
}

trixie_start() {
    proxy35_port=$(free_port)
    peer35_start proxy35 "$pg_port" "$proxy35_port"
    proxy35_pid=$peer_pid
    pgb35_port=$(free_port)
    peer35_start pgbouncer35 "$pg_port" "$pgb35_port"
    pgb35_pid=$peer_pid
}
