#!/usr/bin/env bash
# Records real first packets into the fuzz corpora (corpus/<target>/seed-*): what psql 15
# (libpq 15) and psycopg (libpq 18) send to a server: StartupMessage 3.0 and 3.2, SSLRequest,
# GSSENC-free TLS negotiation, and a direct-TLS ClientHello with ALPN. Also writes a
# synthetic server startup sequence for the startup_messages target. Re-run to refresh.
set -euo pipefail
cd "$(dirname "$0")"
python=../target/test-venv/bin/python3
[ -x "$python" ] || python=python3
mkdir -p corpus/first_packet corpus/startup_messages corpus/message_tracker
"$python" - <<'PY'
import os, socket, subprocess, threading

def capture(name, argv, env=None, answer=None):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    port = srv.getsockname()[1]
    got = {}
    def serve():
        conn, _ = srv.accept()
        conn.settimeout(3)
        data = conn.recv(65536)
        if answer and data[:8] in (b"\x00\x00\x00\x08\x04\xd2\x16\x2f",):
            conn.sendall(answer)
        got["data"] = data
        conn.close()
    t = threading.Thread(target=serve); t.start()
    argv = [a.replace("PORT", str(port)) for a in argv]
    subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, timeout=20)
    t.join(5)
    with open(f"corpus/first_packet/seed-{name}.bin", "wb") as f:
        f.write(got["data"])
    print(name, len(got["data"]), "bytes")

base = "host=127.0.0.1 port=PORT user=alice dbname=app connect_timeout=5"
capture("psql15-startup-3.0", ["psql", "-X", "-c", "select 1", base + " sslmode=disable gssencmode=disable"])
capture("psql15-sslrequest", ["psql", "-X", "-c", "select 1", base + " sslmode=require gssencmode=disable"], answer=b"N")
py = os.environ.get("PYTHON", "python3")
code = "import psycopg,sys\ntry: psycopg.connect(sys.argv[1])\nexcept Exception: pass"
capture("libpq18-startup-3.2", [py, "-c", code, base + " sslmode=disable gssencmode=disable max_protocol_version=latest"])
capture("libpq18-direct-tls-clienthello", [py, "-c", code, base + " sslmode=require sslnegotiation=direct gssencmode=disable"])

def frame(tag, body):
    return tag + (len(body) + 4).to_bytes(4, "big") + body
seq = (frame(b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
       + frame(b"R", (11).to_bytes(4, "big") + b"r=abc,s=c2FsdA==,i=4096")
       + frame(b"R", (12).to_bytes(4, "big") + b"v=xyz")
       + frame(b"R", (0).to_bytes(4, "big"))
       + frame(b"S", b"server_version\x0015.18\0")
       + frame(b"K", (4242).to_bytes(4, "big") + b"\x01\x02\x03\x04")
       + frame(b"Z", b"I"))
open("corpus/startup_messages/seed-server-startup.bin", "wb").write(seq)
open("corpus/startup_messages/seed-client-sasl.bin", "wb").write(
    frame(b"p", b"SCRAM-SHA-256\0" + (18).to_bytes(4, "big") + b"n,,n=,r=clientnonce"))
open("corpus/startup_messages/seed-error.bin", "wb").write(
    frame(b"E", b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0"))
open("corpus/message_tracker/seed-relay.bin", "wb").write(b"\x07" + seq)
PY

# OCSP responses from a real `openssl ocsp` responder: good, revoked and unknown, with and
# without a nonce, and a "try later" refusal.
mkdir -p corpus/ocsp_response
ocsp=$(mktemp -d)
trap 'rm -rf "$ocsp"' EXIT
(
    cd "$ocsp"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=seed-ca -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=seed-leaf \
        -keyout leaf.key -out leaf.csr 2>/dev/null
    openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out leaf.crt 2>/dev/null
    serial=$(openssl x509 -in leaf.crt -noout -serial | cut -d= -f2)
    expiry=$(date -u -d +30days +%y%m%d%H%M%SZ)
    revoked=$(date -u -d -1day +%y%m%d%H%M%SZ)
    for state in good revoked unknown; do
        case $state in
            good) printf 'V\t%s\t\t%s\tunknown\t/CN=seed-leaf\n' "$expiry" "$serial" >index.txt ;;
            revoked) printf 'R\t%s\t%s\t%s\tunknown\t/CN=seed-leaf\n' "$expiry" "$revoked" "$serial" >index.txt ;;
            unknown) : >index.txt ;;
        esac
        for nonce in -nonce -no_nonce; do
            openssl ocsp -issuer ca.crt -cert leaf.crt "$nonce" -reqout req.der 2>/dev/null
            openssl ocsp -index index.txt -rsigner ca.crt -rkey ca.key -CA ca.crt -reqin req.der \
                -respout "resp-$state$nonce.der" -ndays 7 >/dev/null 2>&1
        done
    done
)
cp "$ocsp"/resp-*.der corpus/ocsp_response/
for f in corpus/ocsp_response/resp-*.der; do mv "$f" "corpus/ocsp_response/seed-$(basename "$f" .der).bin"; done
# OCSPResponse { responseStatus tryLater (3) }: a refusal without a body.
printf '\x30\x03\x0a\x01\x03' >corpus/ocsp_response/seed-try-later.bin
