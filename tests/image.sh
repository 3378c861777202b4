#!/usr/bin/env bash
# The container image, end to end: scripts/image builds it from Debian packages (cached), and
# the image as stored in the OCI archive is checked and run in front of a real PostgreSQL.
#
# What is inside: skopeo reads the archive (what `skopeo copy oci-archive:...` pushes); the
# package database lists the image's Debian 13 packages with the versions the cached trixie
# root's apt offers (dpkg-query, the parser scanners imitate), dpkg --verify finds every
# packaged file intact, every file is a package's or one of the few the build makes, there is
# no shell, the binary runs on trixie's OpenSSL 3.5; the SPDX SBOM beside the archive is valid
# (spdx-tools' own validator), names the same Debian packages and the Rust crates compiled
# into the binary (every crate whose sources the binary names, at Cargo.lock's versions).
#
# How it runs: podman cannot run containers on this machine (crun refuses its hybrid cgroup
# hierarchy), so the image's root filesystem (from `buildah from oci-archive:...`) is
# entered with chroot, with a clean environment (`env -i`: none of this machine's
# SSL_CERT_FILE/SSL_CERT_DIR), as the image's user, sharing the host's network:
#   - with PGT-Proxy's flags and the image's environment: psql through it (trixie's psql 17
#     too, which gets X25519MLKEM768 on the client leg), SIGHUP, SIGTERM;
#   - as a pod runs it: in its own mount namespace, the root read-only, /etc/pgt-proxy a
#     ConfigMap and /etc/pgt-proxy/tls a Secret laid out as the kubelet projects them
#     (`config.toml -> ..data/config.toml`, `..data -> ..2026_...`), `ca = "system"`:
#     check-config --connect fails with the image's own store ("unable to get local issuer
#     certificate") and verifies the upstream once its CA is added as an operator adds one
#     (a bundle mounted over /etc/ssl/certs/ca-certificates.crt); then psql through it, a
#     ConfigMap edit (the `..data` swap) reloaded within one refresh interval, a broken edit
#     refused and logged with the running configuration kept. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
repo=$PWD
. scripts/throwaway.sh

[ "$(id -u)" = 0 ] || { echo "tests/image.sh must run as root" >&2; exit 1; }
# PGT_PROXY_DEB: an already built trixie .deb to put in the image (else scripts/image has
# scripts/package --suite trixie build one).
deb=${PGT_PROXY_DEB:-}
archive=$(scripts/image ${PGT_PROXY_DEB:+--deb "$PGT_PROXY_DEB"} --print-path) ||
    { echo "scripts/image failed" >&2; exit 1; }
sbom=${archive%.oci.tar}.spdx.json
deb=${deb:-$(ls target/packages/trixie/pgt-proxy_*+deb13_amd64.deb)}
b() { buildah --storage-driver vfs "$@"; }
troot=$(scripts/trixie-root) || { echo "scripts/trixie-root failed" >&2; exit 1; }
command -v skopeo >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends skopeo >/dev/null
# spdx-tools' validator, once, in its own venv under target/.
venv=$repo/target/sbom-venv
[ -x "$venv/bin/pyspdxtools" ] || {
    python3 -m venv "$venv" && "$venv/bin/pip" install -q spdx-tools==0.8.5
} >/dev/null || { echo "cannot install spdx-tools into $venv" >&2; exit 1; }

throwaway_init image
make_pki ec
start_pg
ctr=$(b from --quiet "oci-archive:$archive")
# The image the archive was read into goes too (not -f: unless a container still uses it).
image_id=$(b inspect --format '{{.FromImageID}}' "$ctr")
throwaway_cleanups+=("b rm $ctr >/dev/null" "b rmi $image_id >/dev/null 2>&1")
root=$(b mount "$ctr")

# The image's configuration, as the OCI archive holds it, and as skopeo reads it to push it.
image_config=$(b inspect "$ctr" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"], separators=(",", ":")))')
check "the image runs as a non-root user" contains "$image_config" '"User":"10001:10001"'
check "the image's entrypoint is pgt-proxy" contains "$image_config" '"Entrypoint":["/usr/bin/pgt-proxy"]'
check "the image declares /etc/pgt-proxy a volume" contains "$image_config" '"/etc/pgt-proxy"'
check "OCI label: source" contains "$image_config" '"org.opencontainers.image.source":"https://github.com/pgt-proxy/pgt-proxy"'
check "OCI label: version" contains "$image_config" '"org.opencontainers.image.version":"0.1.0"'
check "OCI label: licenses" contains "$image_config" '"org.opencontainers.image.licenses":"MIT"'
check "the image's stop signal is SIGTERM (drain)" contains "$image_config" '"StopSignal":"SIGTERM"'
# A PGT_PROXY__ variable outranks the configuration file: one for listen.addresses would
# put a sidecar's 127.0.0.1 (or any port the file names) on 0.0.0.0:5432 without a word.
# The built-in default is 0.0.0.0:5432 already.
check "the image sets no PGT_PROXY__LISTEN__ variable (it would override config.toml)" \
    bash -c '! grep -q "PGT_PROXY__LISTEN__" <<<"$1"' _ "$image_config"
check "skopeo reads the archive (as skopeo copy oci-archive:... does)" \
    bash -c "skopeo inspect --config 'oci-archive:$archive' | grep -q '\"User\": \"10001:10001\"'"
check "skopeo copies it to another transport" \
    skopeo copy --quiet "oci-archive:$archive" "oci:$work/oci-layout:pgt-proxy"
size_kib=$(du -sk "$root" | cut -f1)
echo "# image: $((size_kib / 1024)) MB uncompressed, $(du -k "$archive" | cut -f1) KiB archive"
check "the image is under 40 MB uncompressed ($((size_kib / 1024)) MB)" test "$size_kib" -lt 40960

# What is inside, as a scanner reads it.
admin=$root/var/lib/dpkg
packages=$(dpkg-query --admindir="$admin" -W -f '${Package} ${Version} ${Architecture}\n')
echo "$packages" | sed 's/^/#   /'
# The versions the trixie root's own apt (3.0, in the root) offers; no cache file written, so
# the root stays as the other tests left it.
for p in libssl3t64 libc6 openssl ca-certificates base-files pgt-proxy; do
    if [ "$p" = pgt-proxy ]; then
        want=$(dpkg-deb -f "$deb" Version)
    else
        want=$(chroot "$troot" apt-cache -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
            policy "$p" | awk '$1 == "Candidate:" {print $2}')
    fi
    check "the package database lists $p ${want:-(no candidate)}" contains "$packages" "$p ${want:-?} "
done
check "the package database says which package installed libssl.so.3 (as Trivy maps files)" \
    bash -c "dpkg-query --admindir='$admin' -S /usr/lib/x86_64-linux-gnu/libssl.so.3 | grep -q '^libssl3t64:amd64: '"
check "every packaged file matches the database's hashes (dpkg --verify)" \
    bash -c "out=\$(dpkg --root='$root' --verify 2>&1); [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
check "/etc/os-release says Debian 13 (scanners pick the advisories by it)" \
    grep -qx 'VERSION_ID="13"' "$root/usr/lib/os-release"
out=$(env -i "$(command -v chroot)" --userspec=10001:10001 "$root" /usr/bin/pgt-proxy --version 2>&1)
check "the image's pgt-proxy --version reports OpenSSL 3.5 (${out%%$'\n'*})" \
    bash -c "grep -qE '^pgt-proxy 0\.1\.0 \(OpenSSL 3\.5\.[0-9]+ ' <<<'$out'"
# Every file is a package's, or one the build makes in place of the maintainer scripts
# (ca-certificates' bundle and links, the user) or the package database itself. This
# replaces the old check that no shared objects but the binary's were copied: the packages'
# own (gconv modules, OpenSSL's engines) are declared now, so scanners see them.
check "no file but the packages' and the few the build makes" bash -c "
    cd '$root'
    comm -23 <(find . ! -type d | sed 's,^\.,,' | LC_ALL=C sort) \
        <(cat var/lib/dpkg/info/*.list | LC_ALL=C sort -u) |
        grep -vE '^/etc/(passwd|group|nsswitch\.conf|ca-certificates\.conf)$|^/etc/ssl/certs/[^/]+$|^/var/lib/dpkg/' &&
        exit 1 || exit 0"
check "no shell in the image" bash -c "! find '$root' \( -name sh -o -name bash -o -name dash -o -name busybox \) | grep ."
check "the SBOM is valid SPDX (spdx-tools' validator)" "$venv/bin/pyspdxtools" -i "$sbom"
sbom_packages=$(python3 -c '
import json, sys
for p in json.load(open(sys.argv[1]))["packages"]:
    if p["SPDXID"].startswith("SPDXRef-Package-deb-"):
        print(p["name"], p["versionInfo"])' "$sbom" | LC_ALL=C sort)
check "the SBOM names the database's packages and versions" \
    test "$sbom_packages" = "$(cut -d' ' -f1,2 <<<"$packages" | LC_ALL=C sort)"
check "the SBOM gives libssl3t64 the purl scanners match" \
    grep -q '"pkg:deb/debian/libssl3t64@[^"]*?arch=amd64&distro=debian-13&upstream=openssl"' "$sbom"
check "the SBOM carries the licenses the packages declare" \
    grep -q '"licenseDeclared": "MIT"' "$sbom"
# The crates: what pgt-proxy CONTAINS, as pkg:cargo purls, at Cargo.lock's versions.
sbom_crates=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
refs = {p["SPDXID"]: p for p in d["packages"]}
for r in d["relationships"]:
    if r["spdxElementId"] == "SPDXRef-Package-deb-pgt-proxy" and r["relationshipType"] == "CONTAINS":
        p = refs[r["relatedSpdxElement"]]
        purl = [e["referenceLocator"] for e in p["externalRefs"] if e["referenceType"] == "purl"]
        print(p["name"], p["versionInfo"], purl[0], p["licenseDeclared"])' "$sbom" | LC_ALL=C sort)
lock_version() { awk -v n="$1" '$1 == "name" && $3 == "\"" n "\"" {getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock; }
for c in tokio openssl openssl-sys tokio-openssl; do
    v=$(lock_version "$c")
    check "the SBOM lists the crate $c $v as pkg:cargo/$c@$v, contained in pgt-proxy" \
        grep -q "^$c $v pkg:cargo/$c@$v " <<<"$sbom_crates"
done
check "the SBOM takes a crate's license from Cargo (tokio: MIT)" \
    grep -q "^tokio [^ ]* [^ ]* MIT$" <<<"$sbom_crates"
check "the SBOM lists no build-time crate (proc-macros, build scripts' cc, pkg-config)" \
    bash -c "! grep -E '^(serde_derive|thiserror-impl|tokio-macros|cc|pkg-config) ' <<<'$sbom_crates'"
# Every crate whose source path the binary carries (panic locations, file!()) was compiled
# into it: each must be in the SBOM at that version.
named=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/pgt-proxy | grep -aoE 'index\.crates\.io-[0-9a-f]+/[A-Za-z0-9_-]+-[0-9][A-Za-z0-9.+-]*/' |
    sed -E 's,^[^/]+/,,; s,/$,,; s,-([0-9]+\.[0-9]+\.[0-9]+), \1,' | LC_ALL=C sort -u)
missing=$(comm -23 <(echo "$named") <(cut -d' ' -f1,2 <<<"$sbom_crates" | LC_ALL=C sort -u) | tr '\n' ' ')
check "every crate the binary names ($(wc -l <<<"$named")) is in the SBOM${missing:+ (missing: $missing)}" \
    test -z "$missing"
check "and the binary names tokio's and openssl's sources (the check above has something to check)" \
    bash -c "grep -q '^tokio ' <<<'$named' && grep -q '^openssl ' <<<'$named'"

# What a container runtime creates in the container's writable layer before it starts.
: >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
port=$(free_port)

# 1. PGT-Proxy's flags and the image's environment, the certificates in the image's volume.
tls=$root/etc/pgt-proxy/tls
cp "$work/pki/proxy.crt" "$work/pki/proxy.key" "$work/pki/ca.crt" "$tls/"
chown -R 10001:10001 "$tls"
chmod 0600 "$tls/proxy.key"
cp /etc/hosts "$root/etc/hosts"
[ -f /etc/resolv.conf ] && cp /etc/resolv.conf "$root/etc/resolv.conf"
log=$work/container.log
env -i PGT_PROXY__LOG__TARGET=stderr PGT_PROXY__UPSTREAM__HOST=localhost \
    "$(command -v chroot)" --userspec=10001:10001 "$root" /usr/bin/pgt-proxy --server-port "$port" \
    --server-certificate-path /etc/pgt-proxy/tls/proxy.crt \
    --server-private-key-path /etc/pgt-proxy/tls/proxy.key \
    --client-connection-port "$pg_port" --client-ca-roots-path /etc/pgt-proxy/tls/ca.crt \
    >"$log" 2>&1 &
proxy=$!
for _ in $(seq 100); do grep -q "ready" "$log" 2>/dev/null && break; sleep 0.1; done
check "the container starts and says it is ready" contains "$(cat "$log")" "pgt-proxy 0.1.0 ready upstream=localhost:$pg_port"
conninfo="host=localhost port=$port user=bench dbname=bench sslmode=verify-full sslrootcert=$work/pki/ca.crt"
check "psql through the image's proxy with verify-full" \
    bash -c "[ \"\$(psql -X -At '$conninfo' -c 'select 40 + 2')\" = 42 ]"
check "the session is logged on stderr" bash -c "sleep 0.5; grep -q 'session ended' '$log'"
# Trixie's psql 17 (libpq on OpenSSL 3.5, from the cached trixie root; its CA file in a
# directory of the root's /tmp, as tests/common/trixie.rs does): with the image's OpenSSL 3.5
# on the client leg, the post-quantum hybrid is what both offer first. The host's psql (on
# OpenSSL 3.0) cannot negotiate it, so the line that names it is psql 17's.
tdir=$(mktemp -d "$troot/tmp/pgt-image-XXXXXX")
throwaway_cleanups+=("rm -rf '$tdir'")
cp "$work/pki/ca.crt" "$tdir/ca.crt"
conninfo17="host=localhost hostaddr=127.0.0.1 port=$port user=bench dbname=bench sslmode=verify-full sslrootcert=${tdir#"$troot"}/ca.crt"
check "trixie's psql 17 through the image's proxy with verify-full" \
    bash -c "[ \"\$(chroot '$troot' /usr/bin/psql -X -At '$conninfo17' -c 'select 40 + 2')\" = 42 ]"
check "and its client leg negotiated X25519MLKEM768 (the session's log line)" \
    bash -c "for _ in \$(seq 20); do grep 'session ended' '$log' | grep -qF 'client_tls_group=\"X25519MLKEM768\"' && exit 0; sleep 0.1; done; exit 1"
kill -HUP "$proxy"
for _ in $(seq 50); do grep -q "configuration reloaded" "$log" && break; sleep 0.1; done
check "SIGHUP reloads" contains "$(cat "$log")" "configuration reloaded"
kill -TERM "$proxy"
wait "$proxy"
rc=$?
check "SIGTERM drains and exits 0 (exit status $rc)" test "$rc" = 0
check "it said it stopped" contains "$(cat "$log")" "stopped"
rm -f "$tls"/*

# 2. As a pod runs it. The ConfigMap and the Secret, as the kubelet projects them: each key
# a link through ..data to a timestamped directory, the Secret's files root:10001 0440
# (fsGroup, defaultMode 0440).
pod=$work/pod
mkdir -p "$pod/configmap" "$pod/secret" "$pod/rootfs" "$pod/ca"
project() { # project DIR VERSION FILE...: a new ..VERSION with FILEs, ..data swapped to it
    local dir=$1 version=..$2 f
    shift 2
    mkdir "$dir/$version"
    for f in "$@"; do
        cp "$f" "$dir/$version/"
        [ -L "$dir/$(basename "$f")" ] || ln -s "..data/$(basename "$f")" "$dir/$(basename "$f")"
    done
    ln -sfn "$version" "$dir/..data_tmp"
    mv -T "$dir/..data_tmp" "$dir/..data"
}
cp "$work/pki/proxy.crt" "$pod/tls.crt"
cp "$work/pki/proxy.key" "$pod/tls.key"
project "$pod/secret" 2026_12_02_00_00_00.000000001 "$pod/tls.crt" "$pod/tls.key"
chown -R 0:10001 "$pod/secret"
chmod 0440 "$pod/secret"/..2026*/*
mkdir "$pod/configmap/tls" # the Secret's mount point in the ConfigMap's volume
pod_config() { # pod_config [EXTRA_LISTEN_LINE...]: the ConfigMap's config.toml
    cat <<EOF
[listen]
certificate = "/etc/pgt-proxy/tls/tls.crt"
private_key = "/etc/pgt-proxy/tls/tls.key"
shutdown_timeout = "2s"
$(printf '%s\n' "$@")

[upstream]
host = "localhost"
port = $pg_port
ca = "system"

[tls]
crl_refresh = "1s"
EOF
}
pod_config >"$pod/config.toml"
project "$pod/configmap" 2026_12_02_00_00_00.000000001 "$pod/config.toml"
# The CA an operator adds: the image's bundle and theirs, mounted over the image's (a
# ConfigMap with subPath, or a derived image; the image has no update-ca-certificates).
cat "$root/etc/ssl/certs/ca-certificates.crt" "$work/pki/ca.crt" >"$pod/ca/ca-certificates.crt"
chmod 0644 "$pod/ca/ca-certificates.crt"
cp /etc/hosts "$root/etc/hosts"

# in_pod BUNDLE ENV... -- CMD...: CMD in the image as the pod's container, in a mount
# namespace of its own (gone with the process): the root read-only, the volumes read-only,
# /proc and /dev as a runtime gives them; BUNDLE ("-" for none) mounted over the image's
# CA bundle. The environment is ENV only (the image's, or what the pod spec sets). It execs:
# call it in a subshell, $(...) or &, whose pid is then the proxy's.
in_pod() {
    exec unshare --mount --propagation private -- bash -c '
        set -e
        root=$1 pod=$2 bundle=$3; shift 3
        ro=$pod/rootfs
        robind() { mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; }
        robind "$root" "$ro"
        mount -t proc proc "$ro/proc"
        mount --rbind /dev "$ro/dev"
        robind "$pod/configmap" "$ro/etc/pgt-proxy"
        robind "$pod/secret" "$ro/etc/pgt-proxy/tls"
        [ "$bundle" = - ] || robind "$bundle" "$ro/etc/ssl/certs/ca-certificates.crt"
        envs=()
        while [ "$1" != -- ]; do envs+=("$1"); shift; done
        shift
        exec env -i "${envs[@]}" /usr/sbin/chroot --userspec=10001:10001 "$ro" "$@"
    ' in_pod "$root" "$pod" "$@"
}
# The image's environment, and a pod spec's env moving the ConfigMap's 0.0.0.0:5432 to a
# free local port.
image_env=(PGT_PROXY__LOG__TARGET=stderr "PGT_PROXY__LISTEN__ADDRESSES=127.0.0.1:$port")

out=$(in_pod - -- /usr/bin/openssl rand -out /etc/written 1 2>&1)
check "the root is read-only in the pod (the image's openssl cannot write /etc)" \
    contains "$out" "Read-only file system"
check "and nothing was written" test ! -e "$root/etc/written"
out=$(in_pod - "${image_env[@]}" -- /usr/bin/pgt-proxy --config /etc/pgt-proxy/config.toml check-config --connect 2>&1)
check "ca = \"system\" with the image's own store: the private CA's upstream is refused" \
    contains "$out" "unable to get local issuer certificate"
out=$(in_pod "$pod/ca/ca-certificates.crt" "${image_env[@]}" -- \
    /usr/bin/pgt-proxy --config /etc/pgt-proxy/config.toml check-config --connect 2>&1)
rc=$?
printf '%s\n' "$out" >"$work/check.out"
check "ca = \"system\" verifies the upstream once its CA is in the image's store (exit $rc)" test "$rc" = 0
check "check-config --connect says it verified the upstream's certificate" \
    bash -c "grep -F '(localhost:$pg_port): ok' '$work/check.out' | grep -qF 'certificate verified for \"localhost\"'"
[ "$rc" = 0 ] || printf '%s\n' "$out" | sed 's/^/#   /'

log=$work/pod.log
in_pod "$pod/ca/ca-certificates.crt" "${image_env[@]}" -- \
    /usr/bin/pgt-proxy --config /etc/pgt-proxy/config.toml >"$log" 2>&1 &
proxy=$!
throwaway_pids+=("$proxy")
for _ in $(seq 100); do grep -q "ready" "$log" 2>/dev/null && break; sleep 0.1; done
check "the pod starts, read-only, as 10001, and says it is ready" \
    contains "$(cat "$log")" "ready upstream=localhost:$pg_port"
check "the pod's process runs as 10001" bash -c "[ \"\$(stat -c %u /proc/$proxy)\" = 10001 ]"
check "psql through the pod with verify-full (upstream verified by ca = \"system\")" \
    bash -c "[ \"\$(psql -X -At '$conninfo' -c 'select 40 + 2')\" = 42 ]"

# A ConfigMap edit: the kubelet swaps ..data; nothing else changes.
pod_config 'allowed_clients = ["10.0.0.0/8"]' >"$pod/config.toml"
reloads=$(grep -c "configuration reloaded" "$log")
start=$(date +%s%N)
project "$pod/configmap" 2026_12_02_00_01_00.000000002 "$pod/config.toml"
for _ in $(seq 50); do
    [ "$(grep -c "configuration reloaded" "$log")" -gt "$reloads" ] && break
    sleep 0.1
done
took=$((($(date +%s%N) - start) / 1000000))
check "the ..data swap is reloaded within one refresh interval (1 s; took $took ms)" \
    bash -c "[ \"\$(grep -c 'configuration reloaded' '$log')\" -gt $reloads ] && [ $took -lt 2500 ]"
check "the change is logged as a change of the configuration files" \
    contains "$(cat "$log")" "configuration files changed"
out=$(psql -X -At "$conninfo" -c 'select 1' 2>&1)
check "new connections follow the edit (allowed_clients: refused)" contains "$out" "no access from"

# A broken edit: refused, logged, and the edit before it keeps serving.
pod_config 'allowed_clients = ["10.0.0.0/8"]' 'max_connections = "lots"' >"$pod/config.toml"
project "$pod/configmap" 2026_12_02_00_02_00.000000003 "$pod/config.toml"
for _ in $(seq 50); do grep -q "reload failed" "$log" && break; sleep 0.1; done
check "the broken edit is refused and logged with its key" \
    bash -c "grep 'reload failed' '$log' | grep -q max_connections"
check "and says the running configuration stays" \
    contains "$(cat "$log")" "still serving with the previous configuration"
out=$(psql -X -At "$conninfo" -c 'select 1' 2>&1)
check "the previous edit still serves (refused as before)" contains "$out" "no access from"
kill -TERM "$proxy"
wait "$proxy"
rc=$?
check "the pod's SIGTERM drains and exits 0 (exit status $rc)" test "$rc" = 0
finish
