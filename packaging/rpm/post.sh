# pgt-proxy %post: directories with their ownership, the mock-salt secret, and make systemd
# see the unit. The service is not enabled or started: it has no upstream until the
# configuration is edited.
install -d -m 0755 -o root -g root /etc/pgt-proxy/conf.d
install -d -m 0750 -o root -g pgt-proxy /etc/pgt-proxy/tls
# The mock-salt secret (auth.mock_secret_file), made once and kept across upgrades.
if [ ! -e /etc/pgt-proxy/mock-secret ]; then
    (umask 077 && head -c 32 /dev/urandom >/etc/pgt-proxy/mock-secret.new)
    chown root:pgt-proxy /etc/pgt-proxy/mock-secret.new
    chmod 0640 /etc/pgt-proxy/mock-secret.new
    mv /etc/pgt-proxy/mock-secret.new /etc/pgt-proxy/mock-secret
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
