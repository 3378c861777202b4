#!/usr/bin/env bash
# Makes a development PKI with the openssl CLI: one CA, a certificate for the database server
# and one for pgt-proxy, all ECDSA P-256 (RSA-2048 with PKI_KEY=rsa), valid 90 days. For demos and local testing only:
# production certificates come from your CA (see certs/README.md).
#
# usage: certs/make-dev-pki.sh OUTDIR [PROXY_NAME ...]
#   PROXY_NAME: DNS names or IP addresses for the proxy certificate
#               (default: localhost 127.0.0.1 ::1)
set -euo pipefail
out=${1:?usage: $0 OUTDIR [PROXY_NAME ...]}
shift
names=("$@")
case ${PKI_KEY:-ec} in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) echo "PKI_KEY must be ec or rsa" >&2; exit 2 ;;
esac
((${#names[@]})) || names=(localhost 127.0.0.1 ::1)
mkdir -p "$out"
cd "$out"
umask 077

san() {
    local list=() n
    for n in "$@"; do
        if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then list+=("IP:$n"); else list+=("DNS:$n"); fi
    done
    (IFS=,; echo "${list[*]}")
}

openssl req -x509 -new "${newkey[@]}" -nodes -days 90 \
    -subj "/CN=pgt-proxy development CA" -keyout ca.key -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() { # name cn san
    openssl req -new "${newkey[@]}" -nodes \
        -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -out "$1.crt" \
        -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$3") 2>/dev/null
    rm -f "$1.csr"
}
issue db localhost "$(san localhost 127.0.0.1)"
issue proxy "${names[0]}" "$(san "${names[@]}")"
chmod 644 ca.crt db.crt proxy.crt
chmod 600 ca.key db.key proxy.key
echo "development PKI in $PWD: ca.crt (trust this), db.crt/db.key (the database), proxy.crt/proxy.key (pgt-proxy)"
