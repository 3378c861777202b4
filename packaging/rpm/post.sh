# pgt-proxy %post: directories with their ownership, and make systemd see the unit. The
# service is not enabled or started: it has no upstream until the configuration is edited.
install -d -m 0755 -o root -g root /etc/pgt-proxy/conf.d
install -d -m 0750 -o root -g pgt-proxy /etc/pgt-proxy/tls
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
