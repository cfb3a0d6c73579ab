#!/usr/bin/python3
"""Checks deploy/kubernetes/ without a cluster:

    kubernetes_test.py MANIFEST_DIR LOOM_COORDINATOR LOOM_WORKER LOOM_RANK

- every file parses as YAML and every document has apiVersion, kind and metadata.name;
- every container's command + args, with its $(VAR) references expanded from its env and the
  ConfigMaps it reads (fields from the downward API get sample values), is accepted by the Loom
  binary it names: run from the build tree with --help appended, it must exit 0 with the usage
  text (the parser checks every flag before the --help that ends it, and nothing starts);
- what the pieces promise each other holds: the volumes, ConfigMaps and Services they name exist;
  the checkpoint volume is ReadWriteMany, mounted at the same path in the coordinator and the
  workers, and holds the checkpoint root; the coordinator's store is on its volumeClaimTemplate;
  a worker's id is its pod name; workers get a /dev/shm of their own size; both have the
  Prometheus annotations of their metrics port.
"""
import os
import re
import subprocess
import sys
import tempfile

import yaml

FAILURES = []


def fail(message):
    FAILURES.append(message)
    print("FAIL: " + message)


# Sample values for the downward API (addresses: loopback only, though nothing is dialled).
FIELD_SAMPLES = {"status.podIP": "127.0.0.2", "metadata.namespace": "default", "spec.nodeName": "node-a"}


def load(directory):
    documents = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(directory, name)
        try:
            docs = list(yaml.safe_load_all(open(path)))
        except yaml.YAMLError as e:
            fail(f"{name}: not YAML: {e}")
            continue
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            where = f"{name} document {i + 1}"
            if not isinstance(doc, dict):
                fail(f"{where}: not a mapping")
                continue
            missing = [k for k in ("apiVersion", "kind") if not doc.get(k)]
            if not (doc.get("metadata") or {}).get("name"):
                missing.append("metadata.name")
            if missing:
                fail(f"{where}: missing {', '.join(missing)}")
                continue
            documents.append((where, doc))
    if not documents:
        fail(f"no manifests in {directory}")
    return documents


def container_env(workload, pod, container, configmaps):
    """The container's environment as Kubernetes builds it: envFrom first, then env."""
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        if ref not in configmaps:
            fail(f"{workload}/{container['name']}: envFrom names ConfigMap {ref!r}, which no manifest defines")
            continue
        env.update({source.get("prefix", "") + k: str(v) for k, v in configmaps[ref].items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
            continue
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[var["name"]] = f"{workload}-0" if path == "metadata.name" else FIELD_SAMPLES.get(path, "sample")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = str(configmaps.get(ref["name"], {}).get(ref["key"], f"$({var['name']})"))
        else:
            fail(f"{workload}/{container['name']}: env {var['name']} has a source this test does not model")
    return env


def expand(text, env):
    """Kubernetes' $(VAR) expansion: $$ is a literal $, an undefined $(VAR) stays as written."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def value_flags(binary):
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"^  (--[a-z0-9-]+) [A-Z]+ ", usage, re.M))


def check_command(where, argv, binaries, scratch):
    if not argv or argv[0] not in binaries:
        fail(f"{where}: command {argv[:1]} is not one of {sorted(binaries)}")
        return
    unresolved = [a for a in argv if re.search(r"\$\([A-Za-z_]", a)]
    if unresolved:
        fail(f"{where}: unresolved $(VAR) references (no such env or ConfigMap key): {unresolved}")
        return
    program = binaries[argv[0]]
    args = []
    for a in argv[1:]:
        # Paths a started program would write are moved into the scratch dir, in case it does start.
        for path, local in (("/var/lib/", f"{scratch}/var/lib/"), ("/srv/loom", f"{scratch}/srv/loom")):
            a = a.replace(path, local)
        for installed, built in binaries.items():
            a = a.replace(installed, built)
        args.append(a)
    # A flag that takes a value must get one, or it would take --help as its value and start.
    takes_value = value_flags(program)
    for i, a in enumerate(args):
        if a in takes_value and (i + 1 == len(args) or args[i + 1].startswith("--")):
            fail(f"{where}: {a} has no value")
            return
    try:
        run = subprocess.run([program, *args, "--help"], capture_output=True, text=True, timeout=20, cwd=scratch)
    except subprocess.TimeoutExpired:
        fail(f"{where}: '{' '.join(argv)} --help' did not exit within 20 s")
        return
    if run.returncode != 0 or not run.stdout.startswith("usage:"):
        fail(f"{where}: '{' '.join(argv)} --help' exited {run.returncode} (want 0 and the usage text): "
             f"{(run.stderr or run.stdout).strip()[:300]}")


def seconds(duration):
    """Seconds in a Loom duration such as 30s, 2m or 1m30s; None if it is not one."""
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    if "".join(n + u for n, u in parts) != duration:
        return None
    return sum(int(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


def flag(argv, name):
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    directory = sys.argv[1]
    binaries = {"/usr/bin/loom-coordinator": sys.argv[2], "/usr/bin/loom-worker": sys.argv[3],
                "/usr/libexec/loom/loom-rank": sys.argv[4]}
    for b in binaries.values():
        if not os.access(b, os.X_OK):
            sys.exit(f"FAIL: {b} is not built (build loom-coordinator, loom-worker and loom-rank)")

    documents = load(directory)
    by_kind = {}
    for where, doc in documents:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    configmaps = {n: d.get("data", {}) for n, d in by_kind.get("ConfigMap", {}).items()}
    claims = by_kind.get("PersistentVolumeClaim", {})
    services = by_kind.get("Service", {})
    statefulsets = by_kind.get("StatefulSet", {})

    # Each workload's containers, with their expanded command lines and mounts.
    programs = {}  # program -> (workload, pod spec, pod metadata, container, argv)
    with tempfile.TemporaryDirectory(prefix="loom-k8s-") as scratch:
        for kind in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            for name, workload in by_kind.get(kind, {}).items():
                template = workload["spec"]["template"]
                pod = template["spec"]
                volumes = {v["name"]: v for v in pod.get("volumes", [])}
                volumes.update({t["metadata"]["name"]: {"name": t["metadata"]["name"], "claimTemplate": t}
                                for t in workload["spec"].get("volumeClaimTemplates", [])})
                for v in volumes.values():
                    claim = v.get("persistentVolumeClaim", {}).get("claimName")
                    if claim is not None and claim not in claims:
                        fail(f"{kind} {name}: volume {v['name']} claims {claim!r}, which no manifest defines")
                for container in pod.get("initContainers", []) + pod["containers"]:
                    where = f"{kind} {name}, container {container['name']}"
                    if container.get("image") != "loom:0.1.0":
                        fail(f"{where}: image {container.get('image')!r}, want loom:0.1.0")
                    for m in container.get("volumeMounts", []):
                        if m["name"] not in volumes:
                            fail(f"{where}: mounts volume {m['name']!r}, which the pod does not define")
                    env = container_env(name, pod, container, configmaps)
                    argv = [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
                    check_command(where, argv, binaries, scratch)
                    if argv:
                        programs[argv[0]] = (name, workload, template, container, argv, volumes)

    coordinator = programs.get("/usr/bin/loom-coordinator")
    worker = programs.get("/usr/bin/loom-worker")
    if coordinator is None or worker is None:
        fail("want one container running /usr/bin/loom-coordinator and one running /usr/bin/loom-worker")
        return finish()

    def mounts(program):
        _, _, _, container, _, volumes = program
        return {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts", [])}

    # The checkpoint root: on a ReadWriteMany claim mounted at the same path on both sides.
    root = flag(coordinator[4], "--checkpoint-root") or ""
    for program in (coordinator, worker):
        found = [(path, v) for path, v in mounts(program).items() if (root + "/").startswith(path.rstrip("/") + "/")]
        if not found:
            fail(f"{program[0]}: nothing is mounted at the checkpoint root {root!r} or above it")
            continue
        path, volume = max(found, key=lambda pv: len(pv[0]))
        claim = claims.get(volume.get("persistentVolumeClaim", {}).get("claimName"), {})
        if "ReadWriteMany" not in claim.get("spec", {}).get("accessModes", []):
            fail(f"{program[0]}: the checkpoint root {root!r} is not on a ReadWriteMany PersistentVolumeClaim")

    # The coordinator's store: on its volumeClaimTemplate.
    data_dir = flag(coordinator[4], "--data-dir")
    if "claimTemplate" not in mounts(coordinator).get(data_dir, {}):
        fail(f"{coordinator[0]}: --data-dir {data_dir!r} is not a volumeClaimTemplate's mount")

    # A worker's id is its StatefulSet pod name.
    _, _, _, wcontainer, _, _ = worker
    raw_args = wcontainer.get("command", []) + wcontainer.get("args", [])
    id_ref = re.fullmatch(r"\$\((\w+)\)", flag(raw_args, "--worker-id") or "")
    by_name = {e["name"]: e for e in wcontainer.get("env", [])}
    if (worker[1]["kind"] != "StatefulSet" or not id_ref or
            by_name.get(id_ref.group(1), {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name"):
        fail(f"{worker[0]}: --worker-id is not the StatefulSet pod's name (metadata.name)")

    # Kubernetes waits for a stopping worker longer than the worker waits for its ranks.
    usage = subprocess.run([binaries["/usr/bin/loom-worker"], "--help"], capture_output=True, text=True).stdout
    default = re.search(r"^  --stop-grace .*\(default (\w+)\)$", usage, re.M)
    grace = seconds(flag(worker[4], "--stop-grace") or (default.group(1) if default else ""))
    period = worker[2]["spec"].get("terminationGracePeriodSeconds", 30)
    if grace is None or period < grace + 10:
        fail(f"{worker[0]}: terminationGracePeriodSeconds {period} is not 10 s more than the worker's "
             f"--stop-grace ({grace} s), so ranks still stopping at a step boundary would be killed")

    # Workers' ranks all-reduce through /dev/shm: a memory emptyDir, not the container's 64 MiB.
    if mounts(worker).get("/dev/shm", {}).get("emptyDir", {}).get("medium") != "Memory":
        fail(f"{worker[0]}: no emptyDir with medium Memory mounted at /dev/shm")

    # Prometheus annotations name the metrics port each program listens on.
    for program, default in ((coordinator, None), (worker, "7072")):
        name, _, template, container, argv, _ = program
        listen = flag(argv, "--metrics-listen")
        port = listen.rsplit(":", 1)[1] if listen else default
        annotations = template.get("metadata", {}).get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != port:
            fail(f"{name}: want pod annotations prometheus.io/scrape \"true\" and prometheus.io/port {port!r}, "
                 f"have {annotations}")
        if int(port) not in [p.get("containerPort") for p in container.get("ports", [])]:
            fail(f"{name}: metrics port {port} is not a containerPort")

    # Services: each selects pods that exist and targets ports they have; the coordinator has a
    # headless Service (its StatefulSet's serviceName) and a ClusterIP one with grpc 7070 and
    # metrics 7071; the workers dial a Service that exists.
    templates = [(n, t["spec"]["template"]) for n, t in statefulsets.items()]
    for sname, service in services.items():
        selector = service["spec"].get("selector", {})
        matched = [(n, t) for n, t in templates
                   if selector and selector.items() <= t.get("metadata", {}).get("labels", {}).items()]
        if not matched:
            fail(f"Service {sname}: its selector {selector} matches no pod template")
            continue
        for p in service["spec"].get("ports", []):
            names = {cp.get("name") for _, t in matched for c in t["spec"]["containers"] for cp in c.get("ports", [])}
            numbers = {cp.get("containerPort") for _, t in matched for c in t["spec"]["containers"] for cp in c.get("ports", [])}
            if p.get("targetPort", p["port"]) not in names | numbers:
                fail(f"Service {sname}: port {p.get('name')} targets {p.get('targetPort')!r}, which its pods do not expose")
    coordinator_services = [s for s in services.values()
                            if s["spec"].get("selector", {}).items() <= coordinator[2]["metadata"]["labels"].items()]
    headless = {s["metadata"]["name"] for s in coordinator_services if s["spec"].get("clusterIP") == "None"}
    if coordinator[1]["spec"].get("serviceName") not in headless:
        fail(f"StatefulSet {coordinator[0]}: serviceName is not a headless Service of its pods")
    cluster_ip = [s for s in coordinator_services if s["spec"].get("clusterIP") != "None"
                  and {(p.get("name"), p["port"]) for p in s["spec"]["ports"]} >= {("grpc", 7070), ("metrics", 7071)}]
    if not cluster_ip:
        fail("no ClusterIP Service for the coordinator with ports grpc 7070 and metrics 7071")
    dial = flag(worker[4], "--coordinator") or ""
    if dial.rsplit(":", 1)[0] not in {s["metadata"]["name"] for s in cluster_ip} or not dial.endswith(":7070"):
        fail(f"{worker[0]}: --coordinator {dial!r} is not the coordinator's ClusterIP Service on port 7070")
    if flag(coordinator[4], "--advertise") != dial:
        fail(f"{coordinator[0]}: --advertise {flag(coordinator[4], '--advertise')!r} is not the address workers dial ({dial!r})")
    return finish()


def finish():
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("PASS: every manifest parses, every container's command line is accepted, the pieces fit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
