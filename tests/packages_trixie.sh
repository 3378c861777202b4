#!/usr/bin/env bash
# The Debian 13 package: scripts/package --suite trixie builds it in the cached trixie build
# root against trixie's libssl-dev (OpenSSL 3.5), into target/packages/trixie (where
# tests/nspawn.sh and scripts/repo take it from); this checks its version orders between the
# bookworm package of the same revision and the next revision, that it declares trixie's
# libssl3t64, and, installed in a copy of the trixie root (the cached root stays as it is),
# that `pgt-proxy --version` reports OpenSSL 3.5 and `check-config` refuses the packaged
# default and accepts an administrator's configuration with certificates. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

. tests/lib.sh

[ "$(id -u)" = 0 ] || { echo "tests/packages_trixie.sh must run as root (chroot, mounts)" >&2; exit 1; }
for tool in chroot dpkg-deb openssl; do
    command -v "$tool" >/dev/null || { echo "tests/packages_trixie.sh: $tool is missing" >&2; exit 1; }
done
trixie=$(scripts/trixie-root) || { echo "tests/packages_trixie.sh: scripts/trixie-root failed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build() {
    scripts/package --suite trixie >"$work/package.log" 2>&1 ||
        { tail -40 "$work/package.log"; return 1; }
}
check "scripts/package --suite trixie builds the .deb in the trixie build root" build
deb=$(ls target/packages/trixie/pgt-proxy_*.deb 2>/dev/null)
if [ -z "$deb" ]; then finish; exit 1; fi
v=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

version_order() {
    local got
    got=$(dpkg-deb -f "$deb" Version)
    [ "$got" = "$v-1+deb13" ] || { echo "Version: $got, expected $v-1+deb13"; return 1; }
    [ "$(basename "$deb")" = "pgt-proxy_$v-1+deb13_amd64.deb" ] || { echo "file: $deb"; return 1; }
    dpkg --compare-versions "$got" gt "$v-1" && dpkg --compare-versions "$got" lt "$v-2"
}
check "version $v-1+deb13: above bookworm's $v-1, below the next revision $v-2" version_order
depends_trixie() {
    local dep top
    dep=$(dpkg-deb -f "$deb" Depends)
    top=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/pgt-proxy/changelog.Debian.gz | zcat | head -n 1)
    echo "Depends: $dep; changelog: $top"
    contains "$dep" "libssl3t64 (>= 3." && lacks "$dep" "libssl3 (" && contains "$top" "($v-1+deb13) trixie;"
}
check "Depends names trixie's libssl3t64; the changelog entry is for trixie" depends_trixie
lint_deb() {
    command -v lintian >/dev/null || { echo "lintian is missing (tests/packages.sh installs it)"; return 1; }
    lintian --fail-on error --suppress-tags unstripped-binary-or-object "$deb"
}
check "lintian reports no errors" lint_deb

root=$work/root
cp -a "$trixie" "$root"
run() { chroot "$root" "$@"; }
install_deb() {
    cp "$deb" "$root/tmp/" &&
        DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq -o Dpkg::Use-Pty=0 "/tmp/$(basename "$deb")" >/dev/null
}
check "apt-get install ./$(basename "$deb") in the trixie root" install_deb
version_runs() {
    local out
    out=$(run /usr/bin/pgt-proxy --version) || return 1
    echo "$out"
    contains "$out" "OpenSSL 3.5"
}
check "pgt-proxy --version in the trixie root reports OpenSSL 3.5" version_runs
default_refused() {
    local out
    if out=$(run /usr/bin/pgt-proxy check-config 2>&1); then echo "accepted: $out"; return 1; fi
    contains "$out" "upstream.host: not set"
}
check "pgt-proxy check-config refuses the packaged default: upstream.host not set" default_refused
configured_ok() {
    local out
    certs/make-dev-pki.sh "$root/etc/pgt-test" localhost 127.0.0.1 >/dev/null || return 1
    run install -m 0644 /etc/pgt-test/proxy.crt /etc/pgt-proxy/tls/proxy.crt &&
        run install -m 0640 -o root -g pgt-proxy /etc/pgt-test/proxy.key /etc/pgt-proxy/tls/proxy.key || return 1
    printf '[listen]\naddresses = ["127.0.0.1:6432"]\n[upstream]\nhost = "localhost"\nca = "/etc/pgt-test/ca.crt"\n' \
        >"$root/etc/pgt-proxy/conf.d/10-site.toml"
    out=$(run /usr/bin/pgt-proxy check-config 2>&1) || { echo "$out"; return 1; }
    contains "$out" "localhost"
}
check "pgt-proxy check-config accepts an administrator's configuration (certificate, key, upstream)" configured_ok

finish
