#!/usr/bin/env bash
# Package tests: builds the .deb and .rpm with scripts/package, then checks them the way an
# administrator (and the distributions' linters) would: contents, conffiles, maintainer
# scripts, lintian/rpmlint, RHEL 9 binary compatibility, a real install and purge of the .deb
# on this machine, and an install of the .rpm into a scratch root. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."

. tests/lib.sh

[ "$(id -u)" = 0 ] || { echo "tests/packages.sh must run as root (it installs the .deb)" >&2; exit 1; }
need=()
for tool in lintian rpm rpmlint objdump; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    pkgs=("${need[@]/objdump/binutils}")
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

log=$(mktemp)
scripts/package >"$log" 2>&1 || {
    echo "not ok - scripts/package builds both packages"
    sed 's/^/    /' "$log" | tail -40
    echo "0 passed, 1 failed"
    exit 1
}
deb=$(ls target/packages/pgt-proxy_*.deb)
rpmfile=$(ls target/packages/pgt-proxy-*.rpm)
bin=target/release/pgt-proxy

# --- the binary: runs on RHEL 9 (glibc 2.34, OpenSSL 3.0) ---
glibc_ok() {
    local newest
    newest=$(objdump -T "$bin" | grep -oE '\bGLIBC_2\.[0-9]+' | sort -t. -k2 -n -u | tail -n 1)
    echo "newest glibc symbol version: $newest"
    [ "${newest#GLIBC_2.}" -le 34 ]
}
openssl_ok() {
    local versions
    versions=$(objdump -T "$bin" | grep -oE '\bOPENSSL_[0-9][0-9.]*' | sort -u)
    echo "OpenSSL symbol versions: $versions"
    [ "$versions" = "OPENSSL_3.0.0" ]
}
versions() { # Cargo.toml's version, revision 1, ordered as both package managers order them
    local v deb_v rpm_v top
    v=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
    deb_v=$(dpkg-deb -f "$deb" Version)
    rpm_v=$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpmfile" 2>/dev/null)
    top=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/pgt-proxy/changelog.Debian.gz | zcat | head -n 1)
    echo "Cargo.toml $v, deb $deb_v, rpm $rpm_v, changelog: $top"
    [ "$deb_v" = "$v-1" ] && [ "$rpm_v" = "$v-1" ] && contains "$top" "pgt-proxy ($v-1)" || return 1
    dpkg --compare-versions "$v-2" gt "$v-1" && dpkg --compare-versions "$v-10" gt "$v-9" || return 1
    [ "$(rpm --eval "%{lua: print(rpm.vercmp('$v-2', '$v-1'))}")" = 1 ] &&
        [ "$(rpm --eval "%{lua: print(rpm.vercmp('$v-10', '$v-9'))}")" = 1 ]
}
check "versions come from Cargo.toml and a revision, in dpkg's and rpm's order, with a changelog entry" versions
check "binary needs no glibc symbol newer than GLIBC_2.34" glibc_ok
check "binary needs only OpenSSL 3.0 symbols" openssl_ok

# --- .deb contents and lint ---
deb_contents() {
    local list
    list=$(dpkg-deb -c "$deb")
    for f in ./usr/bin/pgt-proxy ./usr/lib/systemd/system/pgt-proxy.service ./etc/pgt-proxy/config.toml \
        ./usr/lib/sysusers.d/pgt-proxy.conf ./usr/lib/tmpfiles.d/pgt-proxy.conf \
        ./usr/share/man/man1/pgt-proxy.1.gz ./usr/share/doc/pgt-proxy/README.md \
        ./usr/share/doc/pgt-proxy/copyright; do
        contains "$list" "$f" || return 1
    done
}
check ".deb holds the binary, unit, sysusers/tmpfiles, conffile, man page, docs" deb_contents
deb_scripts() {
    local dir
    dir=$(mktemp -d)
    dpkg-deb -e "$deb" "$dir"
    contains "$(cat "$dir/postinst")" "pgt-proxy" &&
        contains "$(cat "$dir/postinst")" "daemon-reload" &&
        lacks "$(cat "$dir/postinst")" "deb-systemd-invoke start" &&
        contains "$(cat "$dir/prerm")" "deb-systemd-invoke stop" &&
        contains "$(cat "$dir/conffiles")" "/etc/pgt-proxy/config.toml"
    local rc=$?
    rm -rf "$dir"
    return $rc
}
check ".deb maintainer scripts: user, daemon-reload, no start on install, stop on removal" deb_scripts
lint_deb() {
    lintian --fail-on error --suppress-tags unstripped-binary-or-object "$deb"
}
check "lintian reports no errors" lint_deb

# --- install the .deb here, then purge it ---
export DEBIAN_FRONTEND=noninteractive
apt-get purge -y -qq pgt-proxy >/dev/null 2>&1 || true
deb_install() { apt-get install -y -qq "./$deb" >/dev/null; }
check "apt-get install ./pgt-proxy_*.deb" deb_install
installed() {
    getent passwd pgt-proxy >/dev/null || { echo "no pgt-proxy user"; return 1; }
    [ "$(stat -c '%U:%G %a' /etc/pgt-proxy/tls)" = "root:pgt-proxy 750" ] || { stat -c '%U:%G %a' /etc/pgt-proxy/tls; return 1; }
    [ -d /etc/pgt-proxy/conf.d ] && [ -z "$(ls -A /etc/pgt-proxy/conf.d)" ] || { echo "conf.d missing or not empty"; return 1; }
    [ "$(stat -c '%U:%G %a %s' /etc/pgt-proxy/mock-secret)" = "root:pgt-proxy 640 32" ] || { stat -c '%U:%G %a %s' /etc/pgt-proxy/mock-secret; return 1; }
    [ -x /usr/bin/pgt-proxy ] && /usr/bin/pgt-proxy --version | grep -q OpenSSL
    contains "$(dpkg-query -W -f='${Conffiles}' pgt-proxy)" "/etc/pgt-proxy/config.toml"
    [ ! -e /etc/systemd/system/multi-user.target.wants/pgt-proxy.service ] || { echo "enabled on install"; return 1; }
    man -w pgt-proxy >/dev/null 2>&1 || [ -f /usr/share/man/man1/pgt-proxy.1.gz ]
}
check "installed: user, /etc/pgt-proxy/tls root:pgt-proxy 0750, mock-secret root:pgt-proxy 0640, empty conf.d, conffile, not enabled" installed
unit_verify() {
    local out
    out=$(systemd-analyze verify /usr/lib/systemd/system/pgt-proxy.service 2>&1)
    [ -z "$out" ] || { echo "$out"; return 1; }
}
check "systemd-analyze verify is clean" unit_verify
unit_security() {
    local out
    out=$(systemd-analyze security --offline=yes /usr/lib/systemd/system/pgt-proxy.service 2>&1 | tail -n 1)
    echo "$out"
    grep -qE 'exposure level .*: [0-9.]+ (OK|SAFE)' <<<"$out"
}
check "systemd-analyze security scores OK or better" unit_security
default_config_refuses() {
    local out
    out=$(/usr/bin/pgt-proxy check-config 2>&1)
    contains "$out" "upstream.host: not set"
}
check "the packaged config documents every key and asks for upstream.host" default_config_refuses
# The administrator's own files survive a purge; everything else goes.
install -m 0640 -o root -g pgt-proxy /dev/null /etc/pgt-proxy/tls/admin-key.pem
deb_purge() { apt-get purge -y -qq pgt-proxy >/dev/null; }
check "apt-get purge" deb_purge
purged() {
    [ -f /etc/pgt-proxy/tls/admin-key.pem ] || { echo "purge deleted the administrator's key"; return 1; }
    rm -f /etc/pgt-proxy/tls/admin-key.pem
    rmdir /etc/pgt-proxy/tls /etc/pgt-proxy || { ls -laR /etc/pgt-proxy; return 1; }
    ! getent passwd pgt-proxy >/dev/null || { echo "user left behind"; return 1; }
    for f in /usr/bin/pgt-proxy /usr/lib/systemd/system/pgt-proxy.service /usr/share/doc/pgt-proxy \
        /usr/lib/sysusers.d/pgt-proxy.conf; do
        [ ! -e "$f" ] || { echo "$f left behind"; return 1; }
    done
    ! dpkg -s pgt-proxy >/dev/null 2>&1
}
check "purge leaves nothing behind but the administrator's own files" purged

# --- .rpm ---
rpm_contents() {
    local list flags
    list=$(rpm -qpl "$rpmfile" 2>/dev/null)
    for f in /usr/bin/pgt-proxy /usr/lib/systemd/system/pgt-proxy.service /etc/pgt-proxy/config.toml \
        /usr/lib/sysusers.d/pgt-proxy.conf /usr/share/man/man1/pgt-proxy.1.gz; do
        contains "$list" "$f" || return 1
    done
    flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmfile" 2>/dev/null)
    contains "$flags" "/etc/pgt-proxy/config.toml cn"
}
check "rpm -qpl: files, and the config is %config(noreplace)" rpm_contents
rpm_meta() {
    local scripts requires
    scripts=$(rpm -qp --scripts "$rpmfile" 2>/dev/null)
    requires=$(rpm -qp --requires "$rpmfile" 2>/dev/null)
    contains "$scripts" "useradd -r -g pgt-proxy" &&
        contains "$scripts" "disable --now pgt-proxy.service" &&
        contains "$requires" "openssl-libs >= 3.0" &&
        contains "$requires" "glibc >= 2.34"
}
check "rpm -qp --scripts/--requires: user, stop on erase, openssl-libs >= 3.0" rpm_meta
lint_rpm() {
    local out
    out=$(rpmlint -r packaging/rpmlintrc "$rpmfile" 2>&1)
    echo "$out" | tail -n 3
    grep -qE '(^| )0 errors' <<<"$out"
}
check "rpmlint reports no errors" lint_rpm
rpm_root() {
    local root
    root=$(mktemp -d)
    rpm --root "$root" --initdb &&
        rpm -i --root "$root" --nodeps --noscripts "$rpmfile" &&
        [ -x "$root/usr/bin/pgt-proxy" ] && [ -f "$root/etc/pgt-proxy/config.toml" ] &&
        [ -f "$root/usr/lib/systemd/system/pgt-proxy.service" ] &&
        rpm -q --root "$root" pgt-proxy
    local rc=$?
    rm -rf "$root"
    return $rc
}
check "rpm -i --root into a scratch tree" rpm_root

finish
