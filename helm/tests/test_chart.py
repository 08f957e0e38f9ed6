#!/usr/bin/env python3
"""Renders and lints helm/bulwark with the real Helm engine (helm-python-sdk) and checks
every rendered manifest against the Kubernetes 1.30 API schemas (kubernetes-validate,
strict), plus what the chart promises: voters, PDB, a learner StatefulSet per site,
probes, security context, node ids, hooks. Plain Python; exits non-zero on the first
failed check with what was expected.

    python3 -m pip install helm-python-sdk kubernetes-validate
    python3 helm/tests/test_chart.py
"""

import os
import subprocess
import sys

try:
    import helm_python
    import kubernetes_validate
    import yaml
except ImportError as e:
    sys.exit(f"missing Python package ({e}): python3 -m pip install helm-python-sdk kubernetes-validate")

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "..", "bulwark")
KUBE = "1.30"
NS = "hospital"
RELEASE = "bulwark"


def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def load_values(name):
    with open(os.path.join(HERE, name)) as f:
        return yaml.safe_load(f)


def render(values):
    chart = helm_python.Chart.load(CHART)
    try:
        chart.validate_schema(values)
        files = chart.render(values, name=RELEASE, namespace=NS, is_install=True)
    finally:
        chart.close()
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    notes = next((t for p, t in files.items() if p.endswith("NOTES.txt")), "")
    return docs, notes


def lint(values, label):
    report = helm_python.lint(CHART, values, strict=True, namespace=NS, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"severity": 3, "path": "", "error": e} for e in report["errors"]
    ]
    check(not problems, f"helm lint ({label}) reported: {problems}")


def validate_all(docs, label):
    for path, doc in docs:
        what = f"{label}: {path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion", "").startswith("cert-manager.io/"):
            # A CRD: no built-in schema; check the fields the chart relies on.
            spec = doc.get("spec", {})
            for field in ("secretName", "issuerRef", "uris", "usages", "privateKey"):
                check(field in spec, f"{what}: spec.{field} missing")
            continue
        try:
            kubernetes_validate.validate(doc, KUBE, strict=True)
        except kubernetes_validate.ValidationError as e:
            first = str(e).splitlines()[0]
            fail(f"{what}: not a valid Kubernetes {KUBE} object: {first} at {list(e.path)}")


def by_kind(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    check(len(found) == 1, f"expected one {kind} {name}, found {len(found)}")
    return found[0]


def shell_ok(script, what):
    """The container's shell script parses (sh -n)."""
    r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    check(r.returncode == 0, f"{what}: shell script does not parse: {r.stderr}")


def check_controller_sts(sts, replicas, first_id, label):
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    check(spec["replicas"] == replicas, f"{label}: {name} has {spec['replicas']} replicas, want {replicas}")
    check(spec["serviceName"] == f"{RELEASE}-peers", f"{name}: serviceName {spec['serviceName']}")
    check(spec["podManagementPolicy"] == "Parallel", f"{name}: pods must start in parallel")
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{name}: liveness on {c['livenessProbe']}")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{name}: readiness on {c['readinessProbe']}")
    check(c["livenessProbe"]["httpGet"]["port"] == "http", f"{name}: probes on the http port")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"grpc": 7000, "http": 7080}, f"{name}: ports {ports}")
    sc = c["securityContext"]
    check(sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"], f"{name}: security context {sc}")
    check(sc["capabilities"]["drop"] == ["ALL"] and not sc["allowPrivilegeEscalation"], f"{name}: {sc}")
    check(pod["securityContext"]["runAsUser"] != 0, f"{name}: runs as root")
    check("requests" in c["resources"], f"{name}: no resource requests")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env["FIRST_NODE_ID"] == str(first_id), f"{name}: first node id {env['FIRST_NODE_ID']}, want {first_id}")
    script = c["args"][0]
    shell_ok(script, name)
    for piece in ('--node-id "$id"', "id=$((ordinal + FIRST_NODE_ID))", '--advertise "$POD_NAME.$PEER_DOMAIN:7000"',
                  "--http-listen \"0.0.0.0:7080\""):
        check(piece in script, f"{name}: the command lacks {piece!r}:\n{script}")
    check(env["PEER_DOMAIN"] == f"{RELEASE}-peers.{NS}.svc.cluster.local", f"{name}: {env['PEER_DOMAIN']}")
    claims = spec["volumeClaimTemplates"]
    check([v["metadata"]["name"] for v in claims] == ["data"], f"{name}: PVCs {claims}")
    anti = pod["affinity"]["podAntiAffinity"]
    check("requiredDuringSchedulingIgnoredDuringExecution" in anti, f"{name}: anti-affinity {anti}")


def test_defaults():
    values = {}
    lint(values, "defaults")
    docs, notes = render(values)
    validate_all(docs, "defaults")
    sts = named(docs, "StatefulSet", f"{RELEASE}-controller")
    check_controller_sts(sts, 3, 1, "defaults")
    check(len(by_kind(docs, "StatefulSet")) == 1, "defaults: only the voters' StatefulSet")
    pdb = named(docs, "PodDisruptionBudget", f"{RELEASE}-controller")
    check(pdb["spec"]["minAvailable"] == 2, f"PDB minAvailable {pdb['spec']['minAvailable']}, want 2 of 3")
    peers = named(docs, "Service", f"{RELEASE}-peers")
    check(peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"],
          f"peers Service must be headless and publish not-ready pods: {peers['spec']}")
    named(docs, "Service", RELEASE)
    job = named(docs, "Job", f"{RELEASE}-cluster-init")
    check(job["metadata"]["annotations"]["helm.sh/hook"] == "post-install", "cluster-init is a post-install hook")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    shell_ok(script, "cluster-init")
    for i in range(3):
        member = f"--member {i + 1}={RELEASE}-controller-{i}.{RELEASE}-peers.{NS}.svc.cluster.local:7000"
        check(member in script, f"cluster-init lacks {member}:\n{script}")
    check("--member 4=" not in script, "cluster-init names a fourth voter")
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    check(vols["pki-src"]["secret"]["secretName"] == "bulwark-pki", f"PKI from the Secret: {vols['pki-src']}")
    check(not by_kind(docs, "Certificate"), "no cert-manager Certificates by default")
    check(not by_kind(docs, "DaemonSet"), "no agent DaemonSet by default")
    check("cluster init" in notes, "NOTES.txt explains the init Job")


def test_multi_site():
    values = load_values("multi-site-values.yaml")
    lint(values, "multi-site")
    docs, notes = render(values)
    validate_all(docs, "multi-site")
    check_controller_sts(named(docs, "StatefulSet", f"{RELEASE}-controller"), 5, 1, "multi-site")
    pdb = named(docs, "PodDisruptionBudget", f"{RELEASE}-controller")
    check(pdb["spec"]["minAvailable"] == 3, f"PDB minAvailable {pdb['spec']['minAvailable']}, want 3 of 5")
    for site, replicas, first in (("north", 2, 11), ("south", 1, 31)):
        sts = named(docs, "StatefulSet", f"{RELEASE}-site-{site}")
        check_controller_sts(sts, replicas, first, f"site {site}")
        sel = sts["spec"]["template"]["spec"]["nodeSelector"]
        check(sel == {"topology.kubernetes.io/zone": site}, f"site {site}: nodeSelector {sel}")
        svc = named(docs, "Service", f"{RELEASE}-site-{site}")
        check(svc["spec"]["selector"]["bulwark.io/site"] == site, f"site {site} Service selector")
        job = named(docs, "Job", f"{RELEASE}-site-{site}-join")
        check("post-install" in job["metadata"]["annotations"]["helm.sh/hook"], f"{site} join is a hook")
        script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
        shell_ok(script, f"site {site} join")
        for o in range(replicas):
            line = f"join {first + o} {RELEASE}-site-{site}-{o}.{RELEASE}-peers.{NS}.svc.cluster.local:7000"
            check(line in script, f"site {site} join lacks {line!r}:\n{script}")
        check("bulwarkctl cluster add-learner" in script, "learners join with add-learner")
    certs = {c["metadata"]["name"] for c in by_kind(docs, "Certificate")}
    want = {f"{RELEASE}-controller-{i}" for i in (1, 2, 3, 4, 5, 11, 12, 31)} | {f"{RELEASE}-admin"}
    check(certs == want, f"cert-manager Certificates {sorted(certs)}, want {sorted(want)}")
    node1 = named(docs, "Certificate", f"{RELEASE}-controller-1")
    check(node1["spec"]["uris"] == ["spiffe://bulwark/controller/1"], f"controller identity {node1['spec']['uris']}")
    admin = named(docs, "Certificate", f"{RELEASE}-admin")
    check(admin["spec"]["subject"]["organizationalUnits"] == ["role:admin"], "admin certificate carries role:admin")
    ds = named(docs, "DaemonSet", f"{RELEASE}-agent")
    pod = ds["spec"]["template"]["spec"]
    check(pod["hostNetwork"] and pod["dnsPolicy"] == "ClusterFirstWithHostNet", "agent uses the host network")
    (c,) = pod["containers"]
    check(c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"], f"agent caps {c['securityContext']}")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    host = next(v for v in pod["volumes"] if v["name"] == mounts["/host"])
    check(host["hostPath"]["path"] == "/", "the host root is mounted at /host")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env["BULWARK_ROOT"] == "/host", "agent runs with --root /host")
    check(pod["tolerations"] == [{"operator": "Exists"}], "agent tolerates every taint")
    shell_ok(c["args"][0], "agent")
    check("--labels \"role=workstation\"" in c["args"][0], "agent enrolls with the expected labels")
    check("north (2)" in notes and "south (1)" in notes, f"NOTES.txt names the sites:\n{notes}")


def test_schema_refuses_bad_values():
    chart = helm_python.Chart.load(CHART)
    try:
        for bad, why in (
            ({"voters": 4}, "an even number of voters"),
            ({"voters": 1}, "a single voter"),
            ({"sites": [{"name": "north", "replicas": 0}]}, "a site without replicas"),
            ({"sites": [{"name": "North_1", "replicas": 1}]}, "a site name that is not a DNS label"),
            ({"sites": [{"name": "x", "replicas": 1, "firstNodeId": 3}]}, "a learner id among the voters'"),
            ({"votrs": 3}, "a misspelt key"),
        ):
            try:
                chart.validate_schema(bad)
            except helm_python.HelmValuesError:
                continue
            fail(f"values.schema.json accepts {why}: {bad}")
        chart.validate_schema({"voters": 5})
    finally:
        chart.close()


def main():
    tests = [test_defaults, test_multi_site, test_schema_refuses_bad_values]
    for t in tests:
        try:
            t()
        except AssertionError as e:
            print(f"FAIL {t.__name__}: {e}", file=sys.stderr)
            sys.exit(1)
        print(f"ok   {t.__name__}")
    print(f"helm/bulwark: {len(tests)} checks passed (Helm {helm_python.helm_sdk_version()}, Kubernetes {KUBE} schemas)")


if __name__ == "__main__":
    main()
