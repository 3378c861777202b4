#!/usr/bin/env bash
# Debian 12 to 13 with pgt-proxy installed: boots a Debian 12 container (systemd-nspawn), installs
# pgt-proxy by name from the signed repository (scripts/repo, suite bookworm, served on the
# container's loopback), configures it by editing /etc/pgt-proxy/config.toml, and runs it; then
# upgrades the way Debian's release notes say: every apt source, Debian's and pgt-proxy's, from
# bookworm to trixie, `apt full-upgrade`. Checks that the edit is kept, the service runs after
# the upgrade and after a reboot (psql through it with verify-full, to a PostgreSQL that runs
# beside the container, in its network namespace), and the package is the trixie build
# (0.1.0-1+deb13, `pgt-proxy --version` on OpenSSL 3.5). The key steps and their output go to
# target/upgrade-transcript.txt.
#
# The container is Debian 12 minbase with systemd (debootstrap, cached in
# target/upgrade/bookworm-root) plus pgt-proxy: the whole system is upgraded, its essential
# set, systemd, and the libssl3 to libssl3t64 move pgt-proxy depends on, but no database
# server (PostgreSQL's own 15 to 17 move is not pgt-proxy's). The run works on a copy; the
# .debs and apt lists apt downloads are kept in target/upgrade/cache and bind-mounted, so a
# second run downloads nothing. Needs root and Debian's archive (deb.debian.org).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh
. tests/container.sh

[ "$(id -u)" = 0 ] || { echo "tests/dist_upgrade.sh must run as root" >&2; exit 1; }
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in debootstrap systemd-nspawn gpg psql python3; do
    command -v "$tool" >/dev/null || { echo "tests/dist_upgrade.sh: $tool is missing" >&2; exit 1; }
done
pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/postgres" ] || { echo "tests/dist_upgrade.sh: $pgbin/postgres is missing" >&2; exit 1; }
bookworm_deb=$(ls target/packages/pgt-proxy_*.deb 2>/dev/null)
trixie_deb=$(ls target/packages/trixie/pgt-proxy_*.deb 2>/dev/null)
[ -n "$bookworm_deb" ] && [ -n "$trixie_deb" ] ||
    { echo "run scripts/package and scripts/package --suite trixie first (tests/packages.sh, tests/packages_trixie.sh)" >&2; exit 1; }
v=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

# --- the cached Debian 12 tree ---
base=$PWD/target/upgrade
cached=$base/bookworm-root
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
mirror=${mirror:-http://deb.debian.org/debian}
if [ ! -f "$cached/.pgt-ready-v1" ]; then
    rm -rf "$cached" "$cached.tmp"
    mkdir -p "$base"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,adduser,procps,libssl3 \
        bookworm "$cached.tmp" "$mirror" >"$base/debootstrap.log" 2>&1 ||
        { echo "debootstrap failed; see $base/debootstrap.log" >&2; exit 1; }
    chroot "$cached.tmp" apt-get clean
    touch "$cached.tmp/.pgt-ready-v1"
    mv "$cached.tmp" "$cached"
fi
root=$base/root
rm -rf "$root"
cp -a "$cached" "$root"
# What the Debian installer writes and debootstrap does not.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
mkdir -p "$base/cache/archives/partial" "$base/cache/lists/partial"
# Only Debian's packages are kept: ours are rebuilt under the same names.
rm -f "$base"/cache/archives/pgt-proxy_*.deb
# Debian's sources as a Debian 12 system has them (security updates included).
cat >"$root/etc/apt/sources.list" <<LIST
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
LIST

work=$(mktemp -d)
chmod 0755 "$work"
transcript=$PWD/target/upgrade-transcript.txt
cleanup() {
    stop_container
    [ -z "${pg:-}" ] || kill "$pg" 2>/dev/null
    [ -z "${http:-}" ] || kill "$http" 2>/dev/null
    [ -z "${relay_pid:-}" ] || kill "$relay_pid" 2>/dev/null
    wait 2>/dev/null
    gpgconf --kill gpg-agent 2>/dev/null
    rm -rf "$work"
    # Never delete a tree a container still runs in.
    if [ -n "${nspawn:-}" ] && kill -0 "$nspawn" 2>/dev/null; then
        echo "tests/dist_upgrade.sh: the container did not stop; $root left in place" >&2
    else
        rm -rf "$root"
    fi
}
trap cleanup EXIT
: >"$base/console.log"
start() { # boot: at the top level, so $nspawn and $leader stay set (check runs in a subshell)
    boot "$root" "$base/console.log" --bind="$base/cache/archives:/var/cache/apt/archives" \
        --bind="$base/cache/lists:/var/lib/apt/lists"
}
# shown CMD...: runs CMD in the container and writes it and its output to the transcript.
shown() {
    local out rc a line=
    out=$(run "$@" 2>&1)
    rc=$?
    for a in "$@"; do # as one would type it
        if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then line+=" $a"; else line+=" '$a'"; fi
    done
    { printf '#%s\n' "$line"; printf '%s\n' "$out"; [ $rc = 0 ] || echo "(exit $rc)"; echo; } >>"$transcript"
    printf '%s\n' "$out"
    return $rc
}
{
    echo "Debian 12 to 13 with pgt-proxy from its signed repository (tests/dist_upgrade.sh, $(date -u +%Y-%m-%dT%H:%MZ))"
    echo
} >"$transcript"
start
check "Debian 12 boots in the container" booted

# --- the repository (both suites), served on the container's loopback ---
export GNUPGHOME=$work/gnupg
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key "pgt-proxy test release <release@pgt-proxy.invalid>" rsa3072 sign 1d 2>/dev/null
key=$(gpg --batch --with-colons --list-keys release@pgt-proxy.invalid 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}')
url=http://127.0.0.1:8765
publish() { scripts/repo --key "$key" --url "$url" "$work/www" "$bookworm_deb" "$trixie_deb" >/dev/null; }
check "scripts/repo publishes both suites" publish
serve() { # in the container's network namespace (a reboot makes a new one)
    nsenter -t "$leader" -n python3 -m http.server 8765 --bind 127.0.0.1 --directory "$work/www" \
        >>"$work/http.log" 2>&1 &
    http=$!
}
served() {
    for _ in $(seq 50); do
        nsenter -t "$leader" -n python3 -c "import urllib.request; urllib.request.urlopen('$url/pgt-proxy.sources')" \
            2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
serve
check "the repository served on the container's loopback" served

# --- Debian's archive, for apt in the container: a relay whose listening socket is in the
# container's network namespace (127.0.0.1:3142) and whose outgoing connections are in this
# machine's; apt uses it as its HTTP proxy for the mirror's host only, so the sources stay
# exactly as a Debian system has them ---
mirror_host=${mirror#http://}
mirror_host=${mirror_host%%/*}
relay() {
    python3 - "$leader" "$mirror_host" >>"$work/relay.log" 2>&1 <<'PY' &
import ctypes, os, socket, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def setns(fd):
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")
home = os.open("/proc/self/ns/net", os.O_RDONLY)
setns(os.open(f"/proc/{sys.argv[1]}/ns/net", os.O_RDONLY))
listener = socket.create_server(("127.0.0.1", 3142))
setns(home)
def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
def serve(client):
    try:
        upstream = socket.create_connection((sys.argv[2], 80), timeout=30)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
    pump(client, upstream)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
    relay_pid=$!
    printf 'Acquire::http::Proxy::%s "http://127.0.0.1:3142";\n' "$mirror_host" \
        >"$root/etc/apt/apt.conf.d/90pgt-test-relay"
}
relayed() {
    for _ in $(seq 50); do
        run bash -c 'exec 3<>/dev/tcp/127.0.0.1/3142' 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$work/relay.log"
    return 1
}
relay
check "Debian's archive reachable from the container through the relay" relayed

# --- the upstream: this machine's PostgreSQL, in the container's network namespace ---
pki=$work/pki
certs/make-dev-pki.sh "$pki" localhost 127.0.0.1 >/dev/null
pg_init() {
    install -d -o postgres -g postgres -m 0700 "$work/pg" "$work/sock" &&
        install -o postgres -g postgres -m 0600 "$pki/db.key" "$work/db.key" &&
        install -o postgres -g postgres -m 0644 "$pki/db.crt" "$work/db.crt" &&
        runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >"$work/initdb.log" 2>&1 ||
        { cat "$work/initdb.log"; return 1; }
    printf 'local all postgres trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n' >"$work/pg/pg_hba.conf"
}
pg_start() { # in the container's network namespace
    nsenter -t "$leader" -n runuser -u postgres -- "$pgbin/postgres" -D "$work/pg" -c listen_addresses=127.0.0.1 \
        -c port=5432 -c unix_socket_directories="$work/sock" -c ssl=on -c ssl_cert_file="$work/db.crt" \
        -c ssl_key_file="$work/db.key" >>"$work/pg.log" 2>&1 &
    pg=$!
}
pg_ready() {
    for _ in $(seq 100); do
        psql -X -q -h "$work/sock" -U postgres -c "select 1" postgres >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$work/pg.log"
    return 1
}
alice() { psql -X -q -h "$work/sock" -U postgres -c "create role alice login password 'alice-pw'" postgres; }
check "initdb" pg_init
pg_start
check "PostgreSQL with TLS on the container's 127.0.0.1:5432" pg_ready
check "the role alice (scram-sha-256)" alice
through_proxy() { # psql, from beside the container, to the proxy in it
    local out
    out=$(nsenter -t "$leader" -n env PGPASSWORD=alice-pw psql -X -A -t \
        -c "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()" \
        "host=localhost hostaddr=127.0.0.1 port=6432 user=alice dbname=postgres sslmode=verify-full sslrootcert=$pki/ca.crt channel_binding=disable" 2>&1)
    printf '# psql "host=localhost port=6432 sslmode=verify-full ..." -c "select current_user, ssl ..."\n%s\n\n' "$out" >>"$transcript"
    [ "$out" = "alice|t" ] || { echo "got: $out"; return 1; }
}

# --- Debian 12: pgt-proxy from the repository, configured in config.toml, running ---
apt_() { run env DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none "$@"; }
install_bookworm() {
    run install -d -m 0755 /etc/apt/keyrings &&
        cp "$work/www/pgt-proxy-archive-keyring.gpg" "$root/etc/apt/keyrings/" &&
        sed 's/^Suites: .*/Suites: bookworm/' "$work/www/pgt-proxy.sources" >"$root/etc/apt/sources.list.d/pgt-proxy.sources" &&
        shown cat /etc/debian_version /etc/apt/sources.list.d/pgt-proxy.sources >/dev/null &&
        apt_ apt-get -q update >"$work/update-12.log" 2>&1 || { cat "$work/update-12.log"; return 1; }
    apt_ apt-get install -y -q pgt-proxy >"$work/install.log" 2>&1 || { cat "$work/install.log"; return 1; }
    { echo "# apt-get install pgt-proxy (its lines)"; grep -E '^(Get:[0-9]+ .* pgt-proxy |Setting up pgt-proxy)' "$work/install.log"; echo; } >>"$transcript"
    shown dpkg-query -W -f '${Package} ${Version} Depends: ${Depends}\n' pgt-proxy >/dev/null
    [ "$(run dpkg-query -W -f '${Version}' pgt-proxy)" = "$v-1" ]
}
check "Debian 12: apt-get install pgt-proxy from the bookworm suite ($v-1)" install_bookworm
configure() { # the administrator's edit of the conffile itself, and the certificate and key
    run install -d /etc/pgt-test && cp "$pki/ca.crt" "$root/etc/pgt-test/ca.crt" &&
        run install -m 0644 /dev/stdin /etc/pgt-proxy/tls/proxy.crt <"$pki/proxy.crt" &&
        run install -m 0640 -o root -g pgt-proxy /dev/stdin /etc/pgt-proxy/tls/proxy.key <"$pki/proxy.key" &&
        sed -i -e '/^\[listen\]/,/^\[upstream\]/ s|^#addresses = .*|addresses = ["127.0.0.1:6432"]  # edited: loopback only|' \
            -e '/^\[upstream\]/,/^\[log\]/ s|^#host = .*|host = "localhost"  # edited|' \
            -e '/^\[upstream\]/,/^\[log\]/ s|^#ca = "system"|ca = "/etc/pgt-test/ca.crt"  # edited|' \
            "$root/etc/pgt-proxy/config.toml" &&
        [ "$(grep -c '# edited' "$root/etc/pgt-proxy/config.toml")" = 3 ] || { grep -n '# edited' "$root/etc/pgt-proxy/config.toml"; return 1; }
    run pgt-proxy check-config >/dev/null &&
        shown grep -n '# edited' /etc/pgt-proxy/config.toml >/dev/null &&
        shown systemctl enable --now pgt-proxy >/dev/null &&
        shown systemctl is-active pgt-proxy >/dev/null
}
check "configured by editing /etc/pgt-proxy/config.toml; systemctl enable --now" configure
check "Debian 12: psql through the proxy with verify-full" through_proxy

# --- the upgrade ---
upgrade() {
    sed -i 's/bookworm/trixie/g' "$root/etc/apt/sources.list" "$root/etc/apt/sources.list.d/pgt-proxy.sources" &&
        shown cat /etc/apt/sources.list >/dev/null && shown grep ^Suites /etc/apt/sources.list.d/pgt-proxy.sources >/dev/null ||
        return 1
    apt_ apt-get -q update >"$work/update-13.log" 2>&1 || { cat "$work/update-13.log"; return 1; }
    local out rc
    # What the administrator answers at the prompts: keep every edited configuration file.
    out=$(apt_ apt -y -o APT::Keep-Downloaded-Packages=true -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold full-upgrade 2>&1)
    rc=$?
    printf '%s\n' "$out" >"$base/full-upgrade.log"
    {
        echo "# apt full-upgrade (the lines on pgt-proxy and libssl, and the summary; whole output in target/upgrade/full-upgrade.log)"
        grep -E '^(Get:[0-9]+ .* (pgt-proxy|libssl3t64) |(Unpacking|Setting up) (pgt-proxy|libssl3t64)|Removing libssl3:|[0-9]+ upgraded, |Need to get )' <<<"$out"
        [ $rc = 0 ] || echo "(exit $rc)"
        echo
    } >>"$transcript"
    [ $rc = 0 ] || { tail -40 <<<"$out"; return 1; }
}
check "sources switched to trixie (Debian's and pgt-proxy's); apt full-upgrade" upgrade
after_upgrade() {
    local out
    out=$(shown cat /etc/debian_version) && [[ $out == 13.* ]] || { echo "debian_version: $out"; return 1; }
    out=$(shown dpkg-query -W -f '${Package} ${Version} Depends: ${Depends}\n' pgt-proxy)
    contains "$out" "pgt-proxy $v-1+deb13 Depends:" && contains "$out" "libssl3t64" || return 1
    contains "$(shown pgt-proxy --version)" "OpenSSL 3.5" || return 1
    # The upgrade restarted the service into the new build: its second start this boot is on 3.5.
    out=$(shown journalctl -u pgt-proxy --no-pager -o verbose --output-fields=MESSAGE,PGT_OPENSSL "MESSAGE=pgt-proxy $v ready")
    [ "$(grep -c 'PGT_OPENSSL=OpenSSL 3.0' <<<"$out")" = 1 ] && [ "$(grep -c 'PGT_OPENSSL=OpenSSL 3.5' <<<"$out")" = 1 ] &&
        [[ $(grep PGT_OPENSSL <<<"$out" | tail -n 1) == *"OpenSSL 3.5"* ]] || { echo "$out"; return 1; }
    out=$(shown grep -n '# edited' /etc/pgt-proxy/config.toml; shown ls /etc/pgt-proxy)
    [ "$(grep -c '# edited' "$root/etc/pgt-proxy/config.toml")" = 3 ] || { echo "the edit is gone: $out"; return 1; }
    [ ! -e "$root/etc/pgt-proxy/config.toml.dpkg-dist" ] || { echo "unexpected config.toml.dpkg-dist"; return 1; }
    [ "$(shown systemctl is-active pgt-proxy)" = active ]
}
check "Debian 13: the trixie build ($v-1+deb13, OpenSSL 3.5), the edit kept, the service active" after_upgrade
check "Debian 13: psql through the proxy after the upgrade" through_proxy
kill "$pg" "$http" "$relay_pid" 2>/dev/null
stop_container
wait 2>/dev/null
printf '# (the container shut down and booted again)\n\n' >>"$transcript"
start
check "Debian 13 reboots" booted
pg_start
serve
kill "$relay_pid" 2>/dev/null
relay
check "PostgreSQL in the rebooted container's network namespace" pg_ready
started_at_boot() {
    local out
    [ "$(shown systemctl is-active pgt-proxy)" = active ] || return 1
    # The start's log line names the library the running process loaded.
    out=$(shown journalctl -b -u pgt-proxy --no-pager -o verbose --output-fields=MESSAGE,PGT_OPENSSL "MESSAGE=pgt-proxy $v ready")
    [ "$(grep -c 'PGT_OPENSSL=' <<<"$out")" = 1 ] && contains "$out" "PGT_OPENSSL=OpenSSL 3.5"
}
check "Debian 13 after a reboot: the service started at boot, on OpenSSL 3.5" started_at_boot
check "Debian 13 after a reboot: psql through the proxy" through_proxy

echo "transcript: $transcript"
finish
