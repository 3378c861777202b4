"""The wiring of one rendered overlay (tests/kubernetes.sh): the objects agree with each other
and with the proxy's config.toml, as a kubelet, kube-proxy, cert-manager, the Prometheus
Operator and the AWS Load Balancer Controller would read them.

Usage: kubernetes_wiring.py OVERLAY RENDERED.yaml CONFIG.toml
"""

import ipaddress
import re
import sys
import tomllib

import yaml

overlay, rendered, config = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
cfg = tomllib.load(open(config, "rb"))


def one(kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def seconds(text):
    m = re.fullmatch(r"(\d+)s", text)
    assert m, text
    return int(m.group(1))


def port_of(address):
    return int(address.rsplit(":", 1)[1])


namespace = one("Namespace")["metadata"]["name"]
assert all(d["metadata"].get("namespace", namespace) == namespace for d in docs)
sts = one("StatefulSet", "pgt-proxy")
pod = sts["spec"]["template"]["spec"]
labels = sts["spec"]["template"]["metadata"]["labels"]
assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
c = pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
listen = cfg["listen"]
extra = listen.get("extra", [])

# Listeners and container ports: every listener's port is declared, and nothing else.
listener_ports = {port_of(a): listen.get("proxy_protocol", "off") for a in listen["addresses"]}
for e in extra:
    for a in e["addresses"]:
        listener_ports[port_of(a)] = e.get("proxy_protocol", "off")
assert set(ports.values()) == set(listener_ports) | {port_of(cfg["admin"]["listen"])}, (ports, listener_ports)
assert ports["admin"] == port_of(cfg["admin"]["listen"])


def target(svc_port):
    t = svc_port["targetPort"]
    return ports[t] if isinstance(t, str) else t


# Probes, security, spread.
assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
assert pod["automountServiceAccountToken"] is False
# No Service links: the kubelet would give the container NAME_SERVICE_HOST, NAME_PORT, ...
# for every Service in the namespace, and one named pgt-proxy--anything makes PGT_PROXY__
# variables, unknown keys that stop every pod at its next start.
assert pod.get("enableServiceLinks") is False, "enableServiceLinks must be false"
psc = pod["securityContext"]
assert psc["runAsUser"] == 10001 and psc["runAsNonRoot"] and psc["fsGroup"] == 10001
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
spread = pod["topologySpreadConstraints"]
assert {s["topologyKey"] for s in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
assert all(s["labelSelector"]["matchLabels"].items() <= labels.items() for s in spread)
ann = sts["spec"]["template"]["metadata"]["annotations"]
assert ann["prometheus.io/port"] == str(ports["admin"])

# The drain: terminationGracePeriodSeconds covers drain_delay + shutdown_timeout + 57P01.
grace = pod["terminationGracePeriodSeconds"]
drain, shutdown = seconds(listen["drain_delay"]), seconds(listen["shutdown_timeout"])
assert drain > 0, "the manifests set listen.drain_delay"
assert grace >= drain + shutdown + 5, (grace, drain, shutdown)
pdb = one("PodDisruptionBudget")
assert pdb["spec"]["minAvailable"] < sts["spec"]["replicas"]
assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

# Mounts: the generated ConfigMap, the listener's Secret, the peers' cert-manager Secret.
volumes = {v["name"]: v for v in pod["volumes"]}
mounts = {m["name"]: m for m in c["volumeMounts"]}
assert all(m["readOnly"] for m in mounts.values())
cm = one("ConfigMap")
assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
assert re.fullmatch(r"pgt-proxy-config-[a-z0-9]{10}", cm["metadata"]["name"]), "a generated name: an edit is a rollout"
assert mounts["config"]["mountPath"] == "/etc/pgt-proxy" and c["args"] == ["--config", "/etc/pgt-proxy/config.toml"]
assert volumes["tls"]["secret"]["secretName"] == "pgt-proxy-tls"
assert listen["certificate"] == mounts["tls"]["mountPath"] + "/tls.crt"
assert listen["private_key"] == mounts["tls"]["mountPath"] + "/tls.key"

# Cancel across pods: the headless Service, cluster.peer_address, the peer Certificate.
cluster = cfg["cluster"]
assert cluster["peer_id"] == "from-hostname"
headless = one("Service", sts["spec"]["serviceName"])
assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
assert headless["spec"]["selector"].items() <= labels.items()
peer_port = port_of(cluster["peer_address"])
assert [target(p) for p in headless["spec"]["ports"]] == [peer_port]
assert listener_ports[peer_port] == listen.get("proxy_protocol", "off"), "peers reach a [listen] address"
assert listen.get("proxy_protocol", "off") == "off", "forwarded cancels carry no header to [listen]"
host = cluster["peer_address"].rsplit(":", 1)[0]
assert host == "pgt-proxy-{ordinal}.%s.%s.svc.cluster.local" % (headless["metadata"]["name"], namespace), host
cert = one("Certificate", "pgt-proxy-peers")
assert cert["spec"]["dnsNames"] == ["*" + host[len("pgt-proxy-{ordinal}"):]], cert["spec"]["dnsNames"]
assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
assert volumes["peer-tls"]["secret"]["secretName"] == cert["spec"]["secretName"]
peer_dir = mounts["peer-tls"]["mountPath"]
assert (cluster["ca"], cluster["certificate"], cluster["private_key"]) == (
    peer_dir + "/ca.crt", peer_dir + "/tls.crt", peer_dir + "/tls.key")
issuer = one("Issuer", cert["spec"]["issuerRef"]["name"])
assert cert["spec"]["issuerRef"]["kind"] == "Issuer"
ca_cert = one("Certificate", "pgt-proxy-cluster-ca")
assert ca_cert["spec"]["isCA"] and issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"]
assert one("Issuer", ca_cert["spec"]["issuerRef"]["name"])["spec"] == {"selfSigned": {}}

# In-cluster clients: the ClusterIP Service reaches [listen], without a header.
svc = one("Service", "pgt-proxy")
assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["selector"].items() <= labels.items()
assert all(listener_ports[target(p)] == "off" for p in svc["spec"]["ports"])

# Metrics: a Service on the admin port, and a PodMonitor for it.
metrics = one("Service", "pgt-proxy-metrics")
assert [target(p) for p in metrics["spec"]["ports"]] == [ports["admin"]]
pm = one("PodMonitor")
assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["admin"]

# NetworkPolicy: 5432 from named namespaces and the peers, 9187 from monitoring, egress to
# DNS (kube-dns only), the database and the peers.
np = one("NetworkPolicy")
assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def rule_ports(rule):
    return {p["port"] for p in rule["ports"]}


ingress = np["spec"]["ingress"]
by_port = {}
for rule in ingress:
    for p in rule_ports(rule):
        by_port.setdefault(p, []).extend(rule["from"])
plain = [p for p, rule in listener_ports.items() if rule == "off"]
for p in plain:
    peers_in = [f for f in by_port[p] if "podSelector" in f and "namespaceSelector" not in f]
    assert peers_in and peers_in[0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert any("namespaceSelector" in f for f in by_port[p])
admin_from = by_port[ports["admin"]]
assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in admin_from
egress = np["spec"]["egress"]
dns = [r for r in egress if rule_ports(r) == {53}]
assert len(dns) == 1 and {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}
assert dns[0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}, dns
assert any("ipBlock" in t for r in egress if rule_ports(r) == {cfg["upstream"].get("port", 5432)} for t in r["to"])
assert any("podSelector" in t for r in egress if peer_port in rule_ports(r) for t in r["to"])

lbs = [d for d in docs if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"]
if overlay == "in-cluster":
    assert not lbs and not extra and "trusted_proxies" not in listen
    assert set(by_port) == {ports["postgresql"], ports["admin"]}, by_port
elif overlay == "aws-nlb":
    (nlb,) = lbs
    a = nlb["metadata"]["annotations"]
    pre = "service.beta.kubernetes.io/aws-load-balancer-"
    assert a[pre + "scheme"] == "internet-facing" and a[pre + "nlb-target-type"] == "ip"
    (lb_port,) = [target(p) for p in nlb["spec"]["ports"]]
    assert a[pre + "proxy-protocol"] == "*" and listener_ports[lb_port] == "v2", "the NLB and the proxy agree on PROXY v2"
    assert a[pre + "healthcheck-protocol"] == "http"
    assert a[pre + "healthcheck-path"] == "/readyz" and a[pre + "healthcheck-port"] == str(ports["admin"])
    checks = int(a[pre + "healthcheck-interval"]) * int(a[pre + "healthcheck-unhealthy-threshold"])
    assert checks <= drain, ("the NLB stops sending within drain_delay", checks, drain)
    dereg = a[pre + "target-group-attributes"]
    assert int(dereg.split("deregistration_delay.timeout_seconds=")[1].split(",")[0]) >= drain + shutdown, dereg
    # The balancer's port and its health check are open to exactly trusted_proxies.
    trusted = sorted(ipaddress.ip_network(n) for n in listen["trusted_proxies"])
    blocks = sorted(ipaddress.ip_network(f["ipBlock"]["cidr"]) for f in by_port[lb_port])
    assert blocks == trusted, (blocks, trusted)
    assert sorted(ipaddress.ip_network(f["ipBlock"]["cidr"]) for f in admin_from if "ipBlock" in f) == trusted
    assert not any(ipaddress.ip_network(n).prefixlen < 16 for n in listen["trusted_proxies"]), "not the whole VPC"
else:
    sys.exit(f"unknown overlay {overlay}")
print(f"{overlay}: {len(docs)} objects agree")
