#!/usr/bin/env bash
# Package life cycle with and without systemd: the .deb installs, upgrades (the same version
# at a higher revision) and purges on this machine, where systemd is installed but not
# running, and in a copy of the Debian 13 root (scripts/trixie-root), where no systemd is
# installed at all, as in containers, chroots and minimal images. Each time: the pgt-proxy
# user, the conffile and the mock-salt secret are there after install, survive the upgrade
# unchanged, and the purge removes them. The booted-systemd case is tests/nspawn.sh.
# Needs root.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

. tests/lib.sh

[ "$(id -u)" = 0 ] || { echo "tests/packages_nosystemd.sh must run as root (it installs the .deb)" >&2; exit 1; }
for tool in apt-get dpkg-deb chroot; do
    command -v "$tool" >/dev/null || { echo "tests/packages_nosystemd.sh: $tool is missing" >&2; exit 1; }
done
trixie=$(scripts/trixie-root) || { echo "tests/packages_nosystemd.sh: scripts/trixie-root failed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/package.log
build() { # build REVISION: scripts/package into $work/rREVISION
    scripts/package --revision "$1" --out "$work/r$1" >>"$log" 2>&1 || {
        echo "scripts/package --revision $1 failed:"
        tail -40 "$log"
        return 1
    }
}
check "scripts/package builds revisions 1 and 2" eval 'build 1 && build 2'
deb1=$(ls "$work"/r1/pgt-proxy_*.deb 2>/dev/null)
deb2=$(ls "$work"/r2/pgt-proxy_*.deb 2>/dev/null)
if [ -z "$deb1" ] || [ -z "$deb2" ]; then finish; exit 1; fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

# Every step runs through $in: empty on this machine, `chroot ROOT` in the trixie copy. The
# .debs are copied to $sut_dir, which the system under test sees as $sut_path.
in=()
sut_dir=$work
sut_path=$work
run() { "${in[@]}" "$@"; }
apt() { DEBIAN_FRONTEND=noninteractive run apt-get "$@" -y -qq -o Dpkg::Use-Pty=0; }

install_rev() { # install_rev DEB: apt-get install ./DEB, as the README says
    cp "$1" "$sut_dir/pgt-proxy-under-test.deb" &&
        apt install "$sut_path/pgt-proxy-under-test.deb" >/dev/null
}
has_stat() { # has_stat FILE FORMAT EXPECTED: owner and mode as the system under test names them
    local got
    got=$(run stat -c "$2" "$1") || return 1
    [ "$got" = "$3" ] || { echo "$1: $got, expected $3"; return 1; }
}
installed_rev() { # installed_rev REVISION: the user, the conffile, the secret
    local got
    got=$(run dpkg-query -W -f='${Version} ${Status}' pgt-proxy) || return 1
    [ "$got" = "$version-$1 install ok installed" ] || { echo "dpkg-query: $got"; return 1; }
    run getent passwd pgt-proxy >/dev/null || { echo "no pgt-proxy user"; return 1; }
    run getent group pgt-proxy >/dev/null || { echo "no pgt-proxy group"; return 1; }
    has_stat /etc/pgt-proxy/config.toml '%U:%G %a' "root:root 644" &&
        has_stat /etc/pgt-proxy/mock-secret '%U:%G %a %s' "root:pgt-proxy 640 32" &&
        has_stat /etc/pgt-proxy/tls '%U:%G %a' "root:pgt-proxy 750" &&
        contains "$(run dpkg-query -W -f='${Conffiles}' pgt-proxy)" "/etc/pgt-proxy/config.toml" &&
        contains "$(run /usr/bin/pgt-proxy --version)" "OpenSSL"
}
# What an administrator changed or the package made once must be the same after an upgrade.
remember() {
    echo "# edited by the administrator" | run tee -a /etc/pgt-proxy/config.toml >/dev/null &&
        run sha256sum /etc/pgt-proxy/config.toml /etc/pgt-proxy/mock-secret >"$work/sums" &&
        run id -u pgt-proxy >>"$work/sums"
}
kept() {
    local now
    now=$(run sha256sum /etc/pgt-proxy/config.toml /etc/pgt-proxy/mock-secret && run id -u pgt-proxy)
    [ "$now" = "$(cat "$work/sums")" ] || { echo "before: $(cat "$work/sums")"; echo "after: $now"; return 1; }
}
purge() { apt purge pgt-proxy >/dev/null; }
purged() {
    ! run dpkg -s pgt-proxy >/dev/null 2>&1 || { echo "still known to dpkg"; return 1; }
    ! run getent passwd pgt-proxy >/dev/null || { echo "user left behind"; return 1; }
    ! run getent group pgt-proxy >/dev/null || { echo "group left behind"; return 1; }
    for f in /etc/pgt-proxy /usr/bin/pgt-proxy /usr/lib/sysusers.d/pgt-proxy.conf; do
        ! run test -e "$f" || { echo "$f left behind"; run ls -laR /etc/pgt-proxy; return 1; }
    done
}
life_cycle() { # life_cycle WHERE
    local where=$1
    check "$where: apt-get install ./pgt-proxy_$version-1" install_rev "$deb1"
    check "$where: user, group, config.toml, mock-secret root:pgt-proxy 0640, tls/ 0750" installed_rev 1
    check "$where: an administrator edits config.toml" remember
    check "$where: apt-get install ./pgt-proxy_$version-2 upgrades" install_rev "$deb2"
    check "$where: upgraded to $version-2 with user, config.toml, mock-secret in place" installed_rev 2
    check "$where: the upgrade kept the edited config.toml, the mock-secret and the user's uid" kept
    check "$where: apt-get purge" purge
    check "$where: purge removed the user, group, /etc/pgt-proxy and the files" purged
}

# --- this machine: systemd installed (systemd-sysusers present), not running as PID 1 ---
with_systemd() { command -v systemd-sysusers; }
check "this machine has systemd-sysusers (the systemd-installed case)" with_systemd
apt purge pgt-proxy >/dev/null 2>&1 || true
life_cycle "with systemd installed"

# --- a copy of the trixie root: no systemd at all (the cached root stays as it is) ---
mkdir -p "$work/trixie"
cp -a "$trixie" "$work/trixie/root"
in=(chroot "$work/trixie/root")
sut_dir=$work/trixie/root/tmp
sut_path=/tmp
# Where the generated section's unguarded `systemd-sysusers` used to die with exit 127.
without_systemd() {
    ! run sh -c 'command -v systemd-sysusers || command -v systemctl || test -d /run/systemd/system'
}
check "the trixie root has no systemd-sysusers, systemctl or /run/systemd (the no-systemd case)" without_systemd
life_cycle "Debian 13 without systemd"

finish
