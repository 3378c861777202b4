#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes/): each validated against the Kubernetes API
# schemas (kubernetes-validate, from PyPI, in the test venv; strict: no unknown fields), the
# ConfigMap's config.toml checked by pgt-proxy itself (every key known; only the mounted
# files are missing here), and the wiring between them (ports, probes, user, mounts). No
# cluster runs here; `kubectl kustomize` renders the set too where kubectl is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
dir=deploy/kubernetes
command -v kubernetes-validate >/dev/null || { echo "tests/kubernetes.sh: kubernetes-validate is missing (scripts/test installs it)" >&2; exit 1; }

for f in configmap deployment poddisruptionbudget service; do
    check "$f.yaml is valid (kubernetes-validate --strict)" \
        kubernetes-validate --strict --quiet "$dir/$f.yaml"
done
check "kustomization.yaml lists files that exist" python3 - "$dir" <<'PY'
import os, sys, yaml
d = sys.argv[1]
k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
missing = [r for r in k["resources"] if not os.path.exists(os.path.join(d, r))]
assert not missing, missing
PY

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["data"]["config.toml"])' \
    "$dir/configmap.yaml" >"$work/config.toml"
report=$(target/debug/pgt-proxy --config "$work/config.toml" check-config 2>&1)
check "the ConfigMap's config.toml has only known keys" lacks "$report" "unknown field"
check "...and fails here only for the Secret's files" contains "$report" "listen.certificate /etc/pgt-proxy/tls/tls.crt: cannot read"

check "probes, ports, user and mounts agree" python3 - "$dir" "$work/config.toml" <<'PY'
import os, sys, tomllib, yaml
d, cfg = sys.argv[1], tomllib.load(open(sys.argv[2], "rb"))
dep = yaml.safe_load(open(os.path.join(d, "deployment.yaml")))
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert cfg["admin"]["listen"].endswith(f":{ports['admin']}"), (cfg["admin"], ports)
assert cfg["listen"]["addresses"][0].endswith(f":{ports['postgresql']}")
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
assert cfg["listen"]["certificate"].startswith("/etc/pgt-proxy/tls/") and mounts["/etc/pgt-proxy/tls"]["readOnly"]
assert dep["spec"]["replicas"] == 3
ann = dep["spec"]["template"]["metadata"]["annotations"]
assert ann["prometheus.io/port"] == str(ports["admin"])
svc = yaml.safe_load(open(os.path.join(d, "service.yaml")))
proxy_protocol = svc["metadata"]["annotations"].get("service.beta.kubernetes.io/aws-load-balancer-proxy-protocol")
assert (proxy_protocol == "*") == (cfg["listen"].get("proxy_protocol") == "v2"), "the NLB and the proxy agree on PROXY v2"
assert cfg["listen"]["trusted_proxies"], "a PROXY v2 listener names its balancers"
grace = pod["terminationGracePeriodSeconds"]
drain = int(cfg["listen"]["drain_delay"].rstrip("s"))
shutdown = int(cfg["listen"]["shutdown_timeout"].rstrip("s"))
assert drain > 0, "the manifests set listen.drain_delay"
assert grace > drain + shutdown, (grace, drain, shutdown)
ann = svc["metadata"]["annotations"]
hc = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-"
assert ann[hc + "path"] == "/readyz" and ann[hc + "port"] == str(ports["admin"]), ann
checks = int(ann[hc + "interval"]) * int(ann[hc + "unhealthy-threshold"])
assert checks <= drain, ("the NLB stops sending within drain_delay", checks, drain)
dereg = ann["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
assert int(dereg.split("deregistration_delay.timeout_seconds=")[1].split(",")[0]) >= drain + shutdown, dereg
PY

if command -v kubectl >/dev/null; then
    rendered=$(kubectl kustomize "$dir" 2>&1)
    check "kubectl kustomize renders the set" contains "$rendered" "kind: Deployment"
else
    echo "note: kubectl is not installed; the set was validated file by file, not rendered with kustomize"
fi
finish
