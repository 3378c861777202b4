# pgt-proxy %pre: the system user the service runs as.
getent group pgt-proxy >/dev/null || groupadd -r pgt-proxy
getent passwd pgt-proxy >/dev/null || \
    useradd -r -g pgt-proxy -d / -s /sbin/nologin -c "pgt-proxy PostgreSQL TLS proxy" pgt-proxy
exit 0
