#!/usr/bin/env bash
# End to end under a real systemd:
#
#   tests/nspawn.sh [bookworm|trixie]
#
# boots Debian 12 (bookworm, the default) or Debian 13 (trixie) in a container (systemd-nspawn,
# private network), installs that release's .deb with its PostgreSQL (15, 17) beside it, and
# checks what an administrator does: enable --now, status, psql through the proxy with
# verify-full, reload with a new certificate, the journal's structured fields, stop, purge.
# Then, on bookworm, the same service from the .rpm's payload; on both, the life cycle from
# the signed repositories (tests/repos.sh). Needs root. The container trees are cached in
# target/nspawn/root (debootstrap) and target/nspawn-trixie/root (a copy of scripts/trixie-root
# with systemd added).
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh

suite=${1:-bookworm}
case $suite in
bookworm) pgv=15 base=$PWD/target/nspawn sfx= ;;
trixie) pgv=17 base=$PWD/target/nspawn-trixie sfx=+deb13 ;;
*) echo "usage: tests/nspawn.sh [bookworm|trixie]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "tests/nspawn.sh must run as root" >&2; exit 1; }
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Both releases' packages: the repositories tests/repos.sh publishes carry both suites.
bookworm_deb=$(ls target/packages/pgt-proxy_*.deb 2>/dev/null)
trixie_deb=$(ls target/packages/trixie/pgt-proxy_*.deb 2>/dev/null)
rpmfile=$(ls target/packages/pgt-proxy-*.rpm 2>/dev/null)
[ -n "$bookworm_deb" ] && [ -n "$rpmfile" ] || { echo "run scripts/package first (tests/packages.sh does)" >&2; exit 1; }
[ -n "$trixie_deb" ] || { echo "run scripts/package --suite trixie first (tests/packages_trixie.sh does)" >&2; exit 1; }
if [ "$suite" = bookworm ]; then deb=$bookworm_deb; else deb=$trixie_deb; fi

root=$base/root
if [ "$suite" = trixie ] && [ ! -f "$root/.pgt-ready-v1" ]; then
    # --- the cached container tree: scripts/trixie-root (PostgreSQL 17, psql, openssl) and
    # systemd, so it boots ---
    trixie=$(scripts/trixie-root) || { echo "scripts/trixie-root failed" >&2; exit 1; }
    rm -rf "$root" "$base/root.tmp"
    mkdir -p "$base"
    cp -a "$trixie" "$base/root.tmp"
    mount --bind /proc "$base/root.tmp/proc"
    DEBIAN_FRONTEND=noninteractive chroot "$base/root.tmp" apt-get install -y -qq --no-install-recommends \
        systemd systemd-sysv dbus >"$base/apt.log" 2>&1
    rc=$?
    umount "$base/root.tmp/proc"
    chroot "$base/root.tmp" apt-get clean
    rm -f "$base/root.tmp/usr/sbin/policy-rc.d"
    [ $rc = 0 ] || { echo "installing systemd in the container failed; see $base/apt.log" >&2; exit 1; }
    touch "$base/root.tmp/.pgt-ready-v1"
    mv "$base/root.tmp" "$root"
fi
# --- the cached container tree: Debian 12 minbase with systemd, PostgreSQL, psql, openssl ---
if [ "$suite" = bookworm ] && [ ! -f "$root/.pgt-ready-v4" ]; then
    rm -rf "$root" "$base/root.tmp"
    mkdir -p "$base"
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    mirror=${mirror:-http://deb.debian.org/debian}
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$base/root.tmp" "$mirror" \
        >"$base/debootstrap.log" 2>&1 || { echo "debootstrap failed; see $base/debootstrap.log" >&2; exit 1; }
    printf '#!/bin/sh\nexit 101\n' >"$base/root.tmp/usr/sbin/policy-rc.d"
    chmod +x "$base/root.tmp/usr/sbin/policy-rc.d"
    mount --bind /proc "$base/root.tmp/proc"
    chroot "$base/root.tmp" apt-get install -y -qq --no-install-recommends \
        postgresql postgresql-client openssl adduser ca-certificates procps dnf rpm >"$base/apt.log" 2>&1
    rc=$?
    umount "$base/root.tmp/proc"
    rm -f "$base/root.tmp/usr/sbin/policy-rc.d"
    [ $rc = 0 ] || { echo "installing packages in the container failed; see $base/apt.log" >&2; exit 1; }
    touch "$base/root.tmp/.pgt-ready-v4"
    mv "$base/root.tmp" "$root"
fi
# Leftovers of an interrupted run.
chroot "$root" dpkg --purge pgt-proxy >/dev/null 2>&1 || true
[ "$suite" != bookworm ] || rpm --root "$root" -e --noscripts pgt-proxy >/dev/null 2>&1 || true
rm -rf "$root/etc/pgt-proxy" "$root/etc/pgt-test"

# --- certificates, PostgreSQL's TLS, and the proxy's configuration (as an admin would) ---
pki=$root/etc/pgt-test
certs/make-dev-pki.sh "$pki" localhost 127.0.0.1 >/dev/null
# A second certificate from the same CA, for the reload check.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$pki/renewed.key" -out "$pki/renewed.csr" 2>/dev/null
openssl x509 -req -in "$pki/renewed.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -out "$pki/renewed.crt" \
    -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n') 2>/dev/null

# --- boot ---
. tests/container.sh
: >"$base/console.log"
boot "$root" "$base/console.log"
trap stop_container EXIT
check "systemd boots in the container" booted

pg_setup() {
    run install -o postgres -g postgres -m 0600 /etc/pgt-test/db.key /etc/postgresql/$pgv/main/db.key &&
        run install -o postgres -g postgres -m 0644 /etc/pgt-test/db.crt /etc/postgresql/$pgv/main/db.crt &&
        printf "ssl = on\nssl_cert_file = '/etc/postgresql/$pgv/main/db.crt'\nssl_key_file = '/etc/postgresql/$pgv/main/db.key'\n" \
            >"$root/etc/postgresql/$pgv/main/conf.d/tls.conf" &&
        printf 'local all postgres peer\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n' >"$root/etc/postgresql/$pgv/main/pg_hba.conf" &&
        run systemctl restart postgresql@$pgv-main &&
        run runuser -u postgres -- psql -q -c "drop role if exists alice" -c "create role alice login password 'alice-pw'"
}
check "PostgreSQL $pgv with TLS in the container" pg_setup

configure() { # the admin's steps after installing: certificate, key, upstream
    run install -m 0644 /etc/pgt-test/proxy.crt /etc/pgt-proxy/tls/proxy.crt &&
        run install -m 0640 -o root -g pgt-proxy /etc/pgt-test/proxy.key /etc/pgt-proxy/tls/proxy.key &&
        printf '[listen]\naddresses = ["127.0.0.1:6432"]\n[upstream]\nhost = "localhost"\nca = "/etc/pgt-test/ca.crt"\n' \
            >"$root/etc/pgt-proxy/conf.d/10-site.toml"
}
through_proxy() {
    local out
    out=$(run env PGPASSWORD=alice-pw psql -X -A -t -c "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()" \
        "host=localhost hostaddr=127.0.0.1 port=6432 user=alice dbname=postgres sslmode=verify-full sslrootcert=/etc/pgt-test/ca.crt channel_binding=disable")
    [ "$out" = "alice|t" ] || { echo "got: $out"; return 1; }
}
service_state() {
    local out
    out=$(run systemctl show pgt-proxy -p Type -p ActiveState -p SubState -p StatusText)
    contains "$out" "Type=notify" && contains "$out" "ActiveState=active" &&
        contains "$out" "SubState=running" && contains "$out" "StatusText=" && contains "$out" "served; last reload"
}
served_fingerprint() {
    run sh -c 'openssl s_client -starttls postgres -connect 127.0.0.1:6432 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256'
}

# --- the .deb ---
mkdir -p "$root/var/cache/pgt-test"
cp "$deb" "$root/var/cache/pgt-test/pgt-proxy.deb"
deb_install() { run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /var/cache/pgt-test/pgt-proxy.deb; }
check "apt-get install the .deb under systemd" deb_install
not_started() { [ "$(run systemctl is-active pgt-proxy)" = inactive ] && [ "$(run systemctl is-enabled pgt-proxy)" = disabled ]; }
check "installing neither enables nor starts the service" not_started
check "the administrator configures certificate, key and upstream" configure
enable_now() { run systemctl enable --now pgt-proxy; }
check "systemctl enable --now pgt-proxy" enable_now
check "systemctl show: Type=notify, active/running, STATUS text" service_state
check "psql through the proxy with sslmode=verify-full" through_proxy
reload() {
    local before after expected
    before=$(served_fingerprint)
    run install -m 0644 /etc/pgt-test/renewed.crt /etc/pgt-proxy/tls/proxy.crt &&
        run install -m 0640 -o root -g pgt-proxy /etc/pgt-test/renewed.key /etc/pgt-proxy/tls/proxy.key &&
        run systemctl reload pgt-proxy || { run journalctl -u pgt-proxy --no-pager -n 30 -o short-precise; run systemctl status pgt-proxy --no-pager; return 1; }
    after=$(served_fingerprint)
    expected=$(openssl x509 -in "$pki/renewed.crt" -noout -fingerprint -sha256)
    [ "$after" = "$expected" ] && [ "$before" != "$after" ] || { echo "before $before / after $after / expected $expected"; return 1; }
    contains "$(run systemctl show pgt-proxy -p StatusText)" "last reload: ok"
}
check "systemctl reload swaps the certificate" reload
check "psql through the proxy after the reload" through_proxy
journal_fields() {
    local out
    out=$(run journalctl -u pgt-proxy -o json --no-pager PGT_USER=alice)
    contains "$out" '"PGT_USER":"alice"' && contains "$out" '"PGT_DATABASE":"postgres"' &&
        contains "$out" '"PGT_TLS_VERSION":"TLSv1.3"' && contains "$out" '"PGT_OUTCOME":"authenticated"' &&
        contains "$out" '"PGT_CLIENT_ADDR":"127.0.0.1:' && contains "$out" '"SYSLOG_IDENTIFIER":"pgt-proxy"'
}
check "journalctl -u pgt-proxy PGT_USER=alice -o json shows the structured fields" journal_fields
clean_stop() {
    run systemctl stop pgt-proxy || return 1
    local out
    out=$(run systemctl show pgt-proxy -p Result -p ExecMainStatus -p ActiveState)
    contains "$out" "Result=success" && contains "$out" "ExecMainStatus=0" && contains "$out" "ActiveState=inactive"
}
check "systemctl stop is clean (exit 0)" clean_stop
deb_purge() {
    run rm -f /etc/pgt-proxy/tls/proxy.crt /etc/pgt-proxy/tls/proxy.key /etc/pgt-proxy/conf.d/10-site.toml &&
        run env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq pgt-proxy || return 1
    [ ! -e "$root/etc/pgt-proxy" ] || { ls -laR "$root/etc/pgt-proxy"; return 1; }
    [ ! -e "$root/usr/bin/pgt-proxy" ] && [ ! -e "$root/usr/lib/systemd/system/pgt-proxy.service" ] &&
        ! run getent passwd pgt-proxy >/dev/null
}
check "apt-get purge leaves nothing behind" deb_purge

# --- the .rpm's payload, installed with rpm into the same userland (once: bookworm) ---
if [ "$suite" = bookworm ]; then
    rpm_install() {
        rpm -i --root "$root" --nodeps "$rpmfile" 2>&1 | grep -v "^warning:" || true
        [ -x "$root/usr/bin/pgt-proxy" ] && run getent passwd pgt-proxy >/dev/null
    }
    check "rpm -i --root (scriptlets create the user and directories)" rpm_install
    rpm_service() {
        configure && run systemctl daemon-reload && run systemctl start pgt-proxy && service_state && through_proxy
    }
    check "the rpm's unit runs the service: psql through it with verify-full" rpm_service
    rpm_remove() {
        run systemctl stop pgt-proxy &&
            run rm -f /etc/pgt-proxy/tls/proxy.crt /etc/pgt-proxy/tls/proxy.key /etc/pgt-proxy/conf.d/10-site.toml &&
            rpm --root "$root" -e pgt-proxy && [ ! -e "$root/usr/bin/pgt-proxy" ]
    }
    check "rpm -e removes it" rpm_remove
    run userdel pgt-proxy >/dev/null 2>&1
    run groupdel pgt-proxy >/dev/null 2>&1
    rm -rf "$root/etc/pgt-proxy"
fi

# --- the same packages from signed apt and dnf repositories: install, upgrade, remove ---
. tests/repos.sh
rm -rf "$root/var/cache/pgt-test"

finish
