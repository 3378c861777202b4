#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes/: a kustomize base and the overlays aws-nlb and
# in-cluster). No cluster runs here; instead:
# - every manifest file, and each overlay as `kubectl kustomize` renders it, is validated
#   against the Kubernetes API schemas (kubernetes-validate --strict, from PyPI, in the test
#   venv: no unknown fields); the only kinds it may not know are the CRDs' (cert-manager's
#   Certificate and Issuer, the Prometheus Operator's PodMonitor);
# - each overlay's ConfigMap config.toml passes `pgt-proxy check-config` as a pod would run
#   it: host name pgt-proxy-0 (cluster.peer_id = "from-hostname"), the Secrets' paths
#   pointed at test certificates made here;
# - the wiring between the rendered objects agrees (ports, probes, Services and listeners,
#   PROXY v2 and the NLB, the drain timings, NetworkPolicy and trusted_proxies, the peer
#   certificate and cluster.peer_address, mounts and Secrets).
# kubectl (its built-in kustomize) or kustomize renders; without either, Debian 13's kustomize is
# fetched into target/tools (through scripts/trixie-root); if that fails, so does this.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
dir=deploy/kubernetes
overlays="aws-nlb in-cluster"
command -v kubernetes-validate >/dev/null || { echo "tests/kubernetes.sh: kubernetes-validate is missing (scripts/test installs it)" >&2; exit 1; }
if command -v kubectl >/dev/null; then
    render() { kubectl kustomize "$1"; }
    renderer="kubectl kustomize ($(kubectl version --client 2>/dev/null | tr '\n' ' '))"
elif command -v kustomize >/dev/null; then
    render() { kustomize build "$1"; }
    renderer="kustomize build ($(kustomize version 2>/dev/null))"
else
    # Debian 12 has no kustomize; Debian 13's (a static Go binary) runs here. Fetched once
    # through the cached Debian 13 root and unpacked under target/tools/kustomize.
    kz=$PWD/target/tools/kustomize/usr/bin/kustomize
    if [ ! -x "$kz" ]; then
        troot=$(scripts/trixie-root) || { echo "tests/kubernetes.sh: no kubectl or kustomize, and the Debian 13 root to fetch kustomize from could not be made" >&2; exit 1; }
        chroot "$troot" sh -c 'apt-get update -qq && cd /tmp && rm -f kustomize_*.deb && apt-get download -qq kustomize' >&2 &&
            rm -rf target/tools/kustomize && dpkg-deb -x "$troot"/tmp/kustomize_*.deb target/tools/kustomize &&
            rm -f "$troot"/tmp/kustomize_*.deb ||
            { echo "tests/kubernetes.sh: neither kubectl nor kustomize is installed, and fetching Debian 13's kustomize failed" >&2; exit 1; }
    fi
    render() { "$kz" build "$1"; }
    renderer="kustomize build ($("$kz" version 2>/dev/null), Debian 13's)"
fi
echo "# rendering with $renderer"
[ -x target/debug/pgt-proxy ] || { echo "tests/kubernetes.sh: target/debug/pgt-proxy is missing (cargo build)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Succeeds when exit status $1 is 0; prints the file $2 (what the command said) either way.
was() { cat "$2"; [ "$1" = 0 ]; }

# kubernetes-validate's output, failing on any warning but a CRD kind it has no schema for.
validate() {
    local out rc
    out=$(kubernetes-validate --strict --quiet "$@" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    [ "$rc" = 0 ] || return 1
    ! grep -v -E "Couldn't find schema for kind (Certificate|Issuer) with api version cert-manager.io/v1|Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1|Couldn't find schema for kind Kustomization with api version kustomize.config.k8s.io/v1beta1" <<<"$out" | grep -q .
}

for f in $(find "$dir" -name '*.yaml' | sort); do
    check "$f is valid (kubernetes-validate --strict)" validate "$f"
done

# Test certificates where the pods have the Secrets: the listener's, and the peers' from a
# cluster CA, for the name cert-manager's Certificate gives.
mkdir -p "$work/tls" "$work/peer-tls"
(
    cd "$work"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=db.example.com" -addext "subjectAltName=DNS:db.example.com" \
        -keyout tls/tls.key -out tls/tls.crt
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=pgt-proxy cluster CA" -keyout ca.key -out peer-tls/ca.crt
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=pgt-proxy peer" -keyout peer-tls/tls.key -out peer.csr
    printf 'subjectAltName=DNS:*.pgt-proxy-peers.pgt-proxy.svc.cluster.local\nextendedKeyUsage=serverAuth,clientAuth\n' >peer.ext
    openssl x509 -req -in peer.csr -CA peer-tls/ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile peer.ext -out peer-tls/tls.crt
    chmod 0600 tls/tls.key peer-tls/tls.key
) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; exit 1; }

for overlay in $overlays; do
    out="$work/$overlay"
    mkdir -p "$out"
    render "$dir/overlays/$overlay" >"$out/rendered.yaml" 2>"$out/render.err"
    check "overlays/$overlay renders ($renderer)" was "$?" "$out/render.err"
    check "overlays/$overlay, rendered, is valid (kubernetes-validate --strict)" validate "$out/rendered.yaml"
    # The ConfigMap's config.toml as the pod has it, and a copy with the Secrets' paths here.
    python3 - "$out/rendered.yaml" "$work" "$out" <<'PY' || echo "no ConfigMap in $overlay" >&2
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("pgt-proxy-config")]
assert len(cm) == 1, cm
text = cm[0]["data"]["config.toml"]
open(sys.argv[3] + "/pod.toml", "w").write(text)
for pod_dir in ("/etc/pgt-proxy/tls/", "/etc/pgt-proxy/peer-tls/"):
    assert pod_dir in text, pod_dir
    text = text.replace(pod_dir, sys.argv[2] + pod_dir[len("/etc/pgt-proxy"):])
open(sys.argv[3] + "/config.toml", "w").write(text)
PY
    # As the pod runs it: its own UTS namespace, host name pgt-proxy-0 (the StatefulSet's
    # first pod), so cluster.peer_id = "from-hostname" gives 1.
    # (Root here and in CI; elsewhere a user namespace gives the UTS namespace.)
    report=$(unshare $([ "$(id -u)" = 0 ] || echo --user --map-root-user) --uts sh -c 'hostname pgt-proxy-0 && exec "$@"' sh \
        env -u SSL_CERT_FILE -u SSL_CERT_DIR target/debug/pgt-proxy --config "$out/config.toml" check-config 2>&1)
    status=$?
    printf '%s\n' "$report" >"$out/check-config.txt"
    check "overlays/$overlay: its config.toml passes check-config (as pod pgt-proxy-0)" \
        was "$status" "$out/check-config.txt"
    check "overlays/$overlay: ...and it is peer 1 of the StatefulSet's fleet" contains "$report" "cluster: this replica is peer 1"
    case $overlay in
    aws-nlb)
        check "overlays/aws-nlb: [listen] has no header, the NLB's port requires one" contains "$report" \
            'on 0.0.0.0:5433 (listen.extra[0], proxy_protocol = "v2"): from a PROXY v2 header'
        ;;
    in-cluster)
        check "overlays/in-cluster: the socket's peer is the client" contains "$report" \
            "the socket's peer (listen.proxy_protocol = \"off\")"
        ;;
    esac
    check "overlays/$overlay: the objects agree with each other and with config.toml" \
        python3 tests/kubernetes_wiring.py "$overlay" "$out/rendered.yaml" "$out/pod.toml"
done
finish
