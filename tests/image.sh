#!/usr/bin/env bash
# The container image, end to end: scripts/image builds it (cached), its size is checked, and
# the image as stored in the OCI archive is run in front of a real PostgreSQL. Podman cannot
# run containers on this machine (crun refuses its hybrid cgroup hierarchy), so the image's
# root filesystem (from `buildah from oci-archive:...`) runs under systemd-nspawn, sharing the
# host's network, as the image's user, with the image's environment: a psql session through
# it, PGT_PROXY__UPSTREAM__HOST from the environment, PGT-Proxy's flags, SIGHUP, SIGTERM
# exiting 0. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
repo=$PWD
. scripts/throwaway.sh

[ "$(id -u)" = 0 ] || { echo "tests/image.sh must run as root" >&2; exit 1; }
archive=$(scripts/image --print-path) || { echo "scripts/image failed" >&2; exit 1; }
b() { buildah --storage-driver vfs "$@"; }

throwaway_init image
make_pki ec
start_pg
ctr=$(b from --quiet "oci-archive:$archive")
throwaway_cleanups+=("b rm $ctr >/dev/null")
root=$(b mount "$ctr")

# The image's configuration, as the OCI archive holds it.
image_config=$(b inspect "$ctr" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"], separators=(",", ":")))')
check "the image runs as a non-root user" contains "$image_config" '"User":"10001:10001"'
check "the image's entrypoint is pgt-proxy" contains "$image_config" '"Entrypoint":["/usr/bin/pgt-proxy"]'
check "the image declares /etc/pgt-proxy a volume" contains "$image_config" '"/etc/pgt-proxy"'
check "OCI label: source" contains "$image_config" '"org.opencontainers.image.source":"https://github.com/pgt-proxy/pgt-proxy"'
check "OCI label: version" contains "$image_config" '"org.opencontainers.image.version":"0.1.0"'
check "OCI label: licenses" contains "$image_config" '"org.opencontainers.image.licenses":"MIT"'
check "the image's stop signal is SIGTERM (drain)" contains "$image_config" '"StopSignal":"SIGTERM"' 
size_kib=$(du -sk "$root" | cut -f1)
check "the image is under 40 MB uncompressed ($((size_kib / 1024)) MB)" test "$size_kib" -lt 40960
check "nothing but the binary, its libraries, certificates and configuration" \
    bash -c "! find '$root' -type f -name '*.so*' | grep -vE '/(libssl|libcrypto|libc|libm|libgcc_s|ld-linux-x86-64)\.so'"

# The certificates, as a Kubernetes Secret would mount them: readable by the image's user.
tls=$root/etc/pgt-proxy/tls
cp "$work/pki/proxy.crt" "$work/pki/proxy.key" "$work/pki/ca.crt" "$tls/"
chown -R 10001:10001 "$tls"
chmod 0600 "$tls/proxy.key"

# What a container runtime bind-mounts.
cp /etc/hosts "$root/etc/hosts"
[ -f /etc/resolv.conf ] && cp /etc/resolv.conf "$root/etc/resolv.conf"
port=$(free_port)
log=$work/container.log
# The image's environment (PGT_PROXY__LOG__TARGET, PGT_PROXY__LISTEN__ADDRESSES), the
# upstream from the environment, and PGT-Proxy's own flags for the rest.
env -i PGT_PROXY__LOG__TARGET=stderr PGT_PROXY__LISTEN__ADDRESSES=0.0.0.0:5432 \
    PGT_PROXY__UPSTREAM__HOST=localhost \
    "$(command -v chroot)" --userspec=10001:10001 "$root" /usr/bin/pgt-proxy --server-port "$port" \
    --server-certificate-path /etc/pgt-proxy/tls/proxy.crt \
    --server-private-key-path /etc/pgt-proxy/tls/proxy.key \
    --client-connection-port "$pg_port" --client-ca-roots-path /etc/pgt-proxy/tls/ca.crt \
    >"$log" 2>&1 &
proxy=$!
for _ in $(seq 100); do grep -q "ready" "$log" && break; sleep 0.1; done
check "the container starts and says it is ready" contains "$(cat "$log")" "pgt-proxy 0.1.0 ready upstream=localhost:$pg_port"
conninfo="host=localhost port=$port user=bench dbname=bench sslmode=verify-full sslrootcert=$work/pki/ca.crt"
check "psql through the image's proxy with verify-full" \
    bash -c "[ \"\$(psql -X -At '$conninfo' -c 'select 40 + 2')\" = 42 ]"
check "the session is logged on stderr" bash -c "sleep 0.5; grep -q 'session ended' '$log'"
kill -HUP "$proxy"
for _ in $(seq 50); do grep -q "configuration reloaded" "$log" && break; sleep 0.1; done
check "SIGHUP reloads" contains "$(cat "$log")" "configuration reloaded"
kill -TERM "$proxy"
wait "$proxy"
rc=$?
check "SIGTERM drains and exits 0 (exit status $rc)" test "$rc" = 0
check "it said it stopped" contains "$(cat "$log")" "stopped"
finish
