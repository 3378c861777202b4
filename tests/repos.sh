# A package's whole life from signed repositories, in tests/nspawn.sh's booted container
# (sourced by it: uses its run, check, configure, through_proxy, $root, $suite and $sfx):
# scripts/repo publishes both releases' packages (suites bookworm and trixie) to a directory
# served over HTTP on the container's loopback; apt refuses the repository signed with another
# key, installs by name from the container's own suite (its release's build), and upgrades a
# running service to a newer version (the edited conffile kept, the service restarted, a live
# session ended with 57P01), then remove and purge; on bookworm, dnf enforces gpgcheck,
# installs by name, upgrades (the edited config kept, .rpmnew beside it) and erases.

work=$(mktemp -d)
export GNUPGHOME=$work/gnupg
mkdir -m 0700 "$GNUPGHOME"
www=$work/www
mkdir -p "$www"
new_key() {
    gpg --batch --quiet --passphrase '' --quick-gen-key "$1" rsa3072 sign 1d 2>/dev/null
    gpg --batch --with-colons --list-keys "$1" 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}'
}
release_key=$(new_key "pgt-proxy test release <release@pgt-proxy.invalid>")
other_key=$(new_key "someone else <other@pgt-proxy.invalid>")
url=http://127.0.0.1:8765

# Version 1 is what tests/packages.sh and tests/packages_trixie.sh built; version 2 is the
# same code at revision 2 for the container's release, whose default configuration changed
# (as a release's may), so the conffile handling shows.
mkdir -p "$work/v1" "$work/v2"
cp "$bookworm_deb" "$trixie_deb" "$rpmfile" "$work/v1/"
{ cat packaging/config.toml; echo "# (revision 2 of the default configuration)"; } >"$work/config-v2.toml"
build_v2() {
    scripts/package --suite "$suite" --revision 2 --default-config "$work/config-v2.toml" --out "$work/v2" \
        >"$work/package-v2.log" 2>&1 || { tail -30 "$work/package-v2.log"; return 1; }
}
check "scripts/package --suite $suite --revision 2 builds the newer version" build_v2

# What RHEL 9's base system provides, as an rpm, so dnf can resolve the package's
# requirements inside this Debian container (test only; published to the test repo).
base_rpm() {
    mkdir -p "$work/rpmbuild"
    cat >"$work/el9-base.spec" <<'SPEC'
Name: pgt-test-el9-base
Version: 1
Release: 1
Summary: Test only: what a RHEL 9 base system provides
License: MIT
BuildArch: noarch
Provides: glibc = 2.36, openssl-libs = 3.0.11, systemd = 252, shadow-utils = 4.13, /bin/sh
%description
Stands in for RHEL 9's base packages when pgt-proxy's rpm is installed on Debian in tests.
%files
SPEC
    rpmbuild -bb --quiet --define "_topdir $work/rpmbuild" "$work/el9-base.spec" >/dev/null 2>&1 &&
        cp "$work"/rpmbuild/RPMS/noarch/pgt-test-el9-base-1-1.noarch.rpm "$work/"
}
publish() { # publish DIR KEY PACKAGE...: scripts/repo into the served tree
    local dir=$1 key=$2
    shift 2
    scripts/repo --key "$key" --url "$url/$dir" "$www/$dir" "$@" >/dev/null
}
publish_v1() {
    base_rpm && publish good "$release_key" "$work"/v1/* "$work/pgt-test-el9-base-1-1.noarch.rpm" &&
        publish other "$other_key" "$work"/v1/*.deb
}
check "scripts/repo publishes signed apt and dnf repositories" publish_v1
layout() {
    local f s
    for f in apt/dists/{bookworm,trixie}/{InRelease,Release.gpg,main/binary-amd64/Packages.gz} \
        rpm/repodata/repomd.xml.asc pgt-proxy-archive-keyring.gpg RPM-GPG-KEY-pgt-proxy pgt-proxy.sources pgt-proxy.repo; do
        [ -s "$www/good/$f" ] || { echo "missing $f"; return 1; }
    done
    for s in bookworm trixie; do
        gpg --batch --verify "$www/good/apt/dists/$s/InRelease" 2>&1 | grep -q "Good signature" || { echo "$s: InRelease"; return 1; }
        contains "$(cat "$www/good/apt/dists/$s/InRelease")" "Codename: $s" || return 1
    done
    # Each suite indexes its own release's build, and only that.
    [ "$(zcat "$www/good/apt/dists/bookworm/main/binary-amd64/Packages.gz" | grep '^Version:')" = "Version: 0.1.0-1" ] &&
        [ "$(zcat "$www/good/apt/dists/trixie/main/binary-amd64/Packages.gz" | grep '^Version:')" = "Version: 0.1.0-1+deb13" ] &&
        contains "$(cat "$www/good/pgt-proxy.sources")" "Suites: trixie" &&
        contains "$(rpm -qpi "$www"/good/rpm/pgt-proxy-*.rpm 2>/dev/null)" "RSA/SHA512" &&
        contains "$(cat "$www/good/pgt-proxy.sources")" "Signed-By: /etc/apt/keyrings/pgt-proxy-archive-keyring.gpg" &&
        contains "$(cat "$www/good/pgt-proxy.repo")" "repo_gpgcheck=1"
}
check "the repositories: suites bookworm and trixie (each its own build), signed rpms, signed repomd.xml, keys and the snippets users paste" layout

# The HTTP server runs in the container's network namespace (its loopback only).
nsenter -t "$leader" -n python3 -m http.server 8765 --bind 127.0.0.1 --directory "$www" \
    >"$work/http.log" 2>&1 &
http=$!
for _ in $(seq 50); do
    nsenter -t "$leader" -n python3 -c "import urllib.request; urllib.request.urlopen('$url/good/pgt-proxy.sources')" \
        2>/dev/null && break
    sleep 0.1
done

# --- apt ---
apt_() { run env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dir::Etc::SourceList=/dev/null "$@"; }
sources() { # sources DIR: the user's snippet for the repository under DIR, with the release's codename
    sed -e "s|$url/good|$url/$1|" -e "s|^Suites: .*|Suites: $suite|" "$www/good/pgt-proxy.sources" \
        >"$root/etc/apt/sources.list.d/pgt-proxy.sources"
}
run install -d -m 0755 /etc/apt/keyrings
cp "$www/good/pgt-proxy-archive-keyring.gpg" "$root/etc/apt/keyrings/"
other_refused() {
    local out
    sources other
    out=$(apt_ update 2>&1) && { echo "apt-get update accepted another key's repository: $out"; return 1; }
    # bookworm's apt verifies with gpgv (NO_PUBKEY KEYID), trixie's with sqv (Missing key FPR).
    grep -qE "NO_PUBKEY ${other_key: -16}|Missing key $other_key" <<<"$out" || { echo "$out"; return 1; }
    ! apt_ install -s pgt-proxy >/dev/null 2>&1
}
check "apt-get update refuses a repository signed with another key" other_refused
good_update() {
    sources good
    run rm -rf /var/lib/apt/lists/127.0.0.1_*
    local out
    out=$(apt_ update 2>&1) || { echo "$out"; return 1; }
    lacks "$out" "W:"
}
check "apt-get update succeeds with the repository's own key (signed-by)" good_update
by_name() {
    local v
    apt_ install -y pgt-proxy >/dev/null || return 1
    v=$(run dpkg-query -W -f '${Version}' pgt-proxy)
    [ "$v" = "0.1.0-1$sfx" ] || { echo "installed $v"; return 1; }
    [ "$(run systemctl is-active pgt-proxy)" = inactive ]
}
check "apt-get install pgt-proxy: by name, $suite's build 0.1.0-1$sfx, not started" by_name
running() {
    configure && printf '[listen]\nshutdown_timeout = "2s"\n' >"$root/etc/pgt-proxy/conf.d/20-drain.toml" &&
        run systemctl enable --now pgt-proxy && through_proxy
}
check "configured, enable --now, psql through it" running
old_session() { # a session open across the upgrade, its output kept in the container
    run sh -c 'PGPASSWORD=alice-pw setsid psql -X -v VERBOSITY=verbose -c "select pg_sleep(120)" \
        "host=localhost hostaddr=127.0.0.1 port=6432 user=alice dbname=postgres sslmode=verify-full sslrootcert=/etc/pgt-test/ca.crt channel_binding=disable" \
        >/var/cache/pgt-test/old-session.log 2>&1 </dev/null &'
    for _ in $(seq 100); do
        [ "$(run runuser -u postgres -- psql -X -A -t -c "select count(*) from pg_stat_activity where query like 'select pg_sleep%'")" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}
check "a session is open before the upgrade" old_session
apt_upgrade() {
    local pid_before out
    pid_before=$(run systemctl show -p MainPID --value pgt-proxy)
    echo "# edited by the administrator" >>"$root/etc/pgt-proxy/config.toml"
    publish good "$release_key" "$work"/v2/*.deb && apt_ update >/dev/null || return 1
    out=$(apt_ upgrade -y -o Dpkg::Options::=--force-confold 2>&1) || { echo "$out"; return 1; }
    [ "$(run dpkg-query -W -f '${Version}' pgt-proxy)" = "0.1.0-2$sfx" ] || { echo "$out"; return 1; }
    grep -q "edited by the administrator" "$root/etc/pgt-proxy/config.toml" || { echo "the edit is gone"; return 1; }
    [ -e "$root/etc/pgt-proxy/config.toml.dpkg-dist" ] || { echo "no config.toml.dpkg-dist"; return 1; }
    local pid_after
    pid_after=$(run systemctl show -p MainPID --value pgt-proxy)
    [ "$(run systemctl is-active pgt-proxy)" = active ] && [ "$pid_after" != "$pid_before" ] ||
        { echo "MainPID $pid_before -> $pid_after"; return 1; }
}
check "apt-get upgrade (--force-confold): version 0.1.0-2$sfx, the edit kept, the service restarted" apt_upgrade
old_ended() {
    for _ in $(seq 50); do
        grep -q "57P01" "$root/var/cache/pgt-test/old-session.log" && return 0
        sleep 0.1
    done
    cat "$root/var/cache/pgt-test/old-session.log"
    return 1
}
check "the session open across the upgrade ended with FATAL 57P01" old_ended
check "a new session works after the upgrade" through_proxy
apt_remove() {
    apt_ remove -y pgt-proxy >/dev/null || return 1
    [ -e "$root/etc/pgt-proxy/config.toml" ] && [ ! -e "$root/usr/bin/pgt-proxy" ] &&
        [ "$(run systemctl is-active pgt-proxy)" != active ]
}
check "apt-get remove: stopped, binary gone, configuration kept" apt_remove
apt_purge() {
    apt_ purge -y pgt-proxy >/dev/null || return 1
    local left
    left=$(cd "$root/etc/pgt-proxy" && find . -type f | sort | tr '\n' ' ')
    [ "$left" = "./conf.d/10-site.toml ./conf.d/20-drain.toml ./tls/proxy.crt ./tls/proxy.key " ] || { echo "left in /etc/pgt-proxy: $left"; return 1; }
    ! run getent passwd pgt-proxy >/dev/null && [ ! -e "$root/usr/lib/systemd/system/pgt-proxy.service" ]
}
check "apt-get purge: nothing of ours left (the administrator's files stay)" apt_purge
run rm -rf /etc/pgt-proxy /etc/apt/sources.list.d/pgt-proxy.sources /etc/apt/keyrings/pgt-proxy-archive-keyring.gpg

# --- dnf (Debian's, inside the bookworm container, so the scriptlets meet the running systemd) ---
if [ "$suite" = bookworm ]; then
    dnf_() { run dnf -q -y --releasever=9 --setopt=reposdir=/etc/pgt-test/yum.repos.d "$@"; }
    mkdir -p "$root/etc/pgt-test/yum.repos.d"
    cp "$www/good/pgt-proxy.repo" "$root/etc/pgt-test/yum.repos.d/pgt-proxy.repo"
    # The same packages, unsigned, in a repository whose metadata is signed: gpgcheck must refuse.
    mkdir -p "$www/unsigned/rpm"
    cp "$work"/v1/*.rpm "$www/unsigned/rpm/"
    cp "$work/pgt-test-el9-base-1-1.noarch.rpm" "$www/unsigned/rpm/"
    createrepo_c --quiet "$www/unsigned/rpm" >/dev/null
    gpg --batch --yes --local-user "$release_key" --armor --detach-sign \
        --output "$www/unsigned/rpm/repodata/repomd.xml.asc" "$www/unsigned/rpm/repodata/repomd.xml" 2>/dev/null
    sed -e "s|\[pgt-proxy\]|[pgt-proxy-unsigned]|" -e "s|baseurl=$url/good/rpm|baseurl=$url/unsigned/rpm|" \
        -e "s|enabled=1|enabled=0|" "$www/good/pgt-proxy.repo" >"$root/etc/pgt-test/yum.repos.d/unsigned.repo"
    unsigned_refused() {
        local out
        out=$(dnf_ --disablerepo='*' --enablerepo=pgt-proxy-unsigned install pgt-proxy 2>&1) &&
            { echo "dnf installed an unsigned package: $out"; return 1; }
        run rpm -q pgt-proxy >/dev/null 2>&1 && return 1
        grep -qi "is not signed" <<<"$out" || { echo "$out"; return 1; }
    }
    check "dnf with gpgcheck=1 refuses an unsigned package" unsigned_refused
    dnf_install() {
        dnf_ install pgt-proxy-0.1.0-1 >/dev/null || return 1
        [ "$(run rpm -q --qf '%{VERSION}-%{RELEASE}' pgt-proxy)" = 0.1.0-1 ] && run getent passwd pgt-proxy >/dev/null
    }
    check "dnf install pgt-proxy (by name, version 1, the key imported from gpgkey=)" dnf_install
    dnf_running() { configure && run systemctl start pgt-proxy && through_proxy; }
    check "the service from the dnf-installed package: psql through it" dnf_running
    dnf_upgrade() {
        local pid_before pid_after
        pid_before=$(run systemctl show -p MainPID --value pgt-proxy)
        echo "# edited by the administrator" >>"$root/etc/pgt-proxy/config.toml"
        publish good "$release_key" "$work"/v2/*.rpm || return 1
        dnf_ --refresh upgrade pgt-proxy || return 1
        [ "$(run rpm -q --qf '%{VERSION}-%{RELEASE}' pgt-proxy)" = 0.1.0-2 ] || { run rpm -q pgt-proxy; return 1; }
        grep -q "edited by the administrator" "$root/etc/pgt-proxy/config.toml" || { echo "the edit is gone"; return 1; }
        [ -e "$root/etc/pgt-proxy/config.toml.rpmnew" ] || { echo "no config.toml.rpmnew"; return 1; }
        pid_after=$(run systemctl show -p MainPID --value pgt-proxy)
        [ "$(run systemctl is-active pgt-proxy)" = active ] && [ "$pid_after" != "$pid_before" ] ||
            { echo "MainPID $pid_before -> $pid_after"; return 1; }
    }
    check "dnf upgrade: version 2, the edit kept beside config.toml.rpmnew, the service restarted" dnf_upgrade
    check "psql through the upgraded service" through_proxy
    dnf_erase() {
        dnf_ remove pgt-proxy >/dev/null || return 1
        [ "$(run systemctl is-active pgt-proxy)" != active ] && [ ! -e "$root/usr/bin/pgt-proxy" ]
    }
    check "dnf remove: the service stopped, the package gone" dnf_erase
    dnf_ remove pgt-test-el9-base >/dev/null 2>&1
    run userdel pgt-proxy >/dev/null 2>&1
    run groupdel pgt-proxy >/dev/null 2>&1
    run rm -rf /etc/pgt-proxy /etc/pgt-test/yum.repos.d
fi
kill "$http" 2>/dev/null
rm -rf "$work"
unset GNUPGHOME
