#!/usr/bin/python3
"""Runs a real Prometheus on deploy/prometheus/prometheus.yml against a real coordinator and a real
worker on 127.0.0.1, and checks that the worker, found through the coordinator's /discovery, is
scraped with `worker` and `host` labels on its series, and the coordinator exactly once, and that
the server loaded the alerting rules of alerts.yml (rule_files).

    prometheus_discovery_test.py PROMETHEUS_YML LOOM_COORDINATOR LOOM_WORKER

Only the coordinator's address (to the loopback one it bound) and the scrape interval (to 1 s) of
the shipped file are changed. Takes about 8 s: Prometheus hands discovered targets to its
scrapers every 5 s.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

EXAMPLE_COORDINATOR = "192.0.2.10:7071"
WORKER_ID = "w-discovered"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with DIRECT.open(url, timeout=5) as r:
        return json.load(r)


def query(prometheus, promql):
    return get(f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))["data"]["result"]


def wait_for_line(path, pattern, proc, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        match = re.search(pattern, open(path).read())
        if match:
            return match
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    sys.exit(f"FAIL: no '{pattern}' from {proc.args[0]}; its output:\n{open(path).read()[-2000:]}")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    source = open(sys.argv[1]).read()
    if EXAMPLE_COORDINATOR not in source:
        sys.exit(f"FAIL: {sys.argv[1]} no longer names the example coordinator {EXAMPLE_COORDINATOR}; update this test")
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.exit("FAIL: prometheus not found (package prometheus; run scripts/setup)")

    tmp = tempfile.mkdtemp(prefix="loom-prometheus-")
    procs = []

    def start(name, argv):
        log = open(os.path.join(tmp, name + ".log"), "w")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp))
        return log.name, procs[-1]

    try:
        log, proc = start("coordinator", [sys.argv[2], "--data-dir", f"{tmp}/data",
                                          "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        found = wait_for_line(log, r"listening on (\S+) .*metrics on http://(\S+)/metrics", proc)
        grpc, metrics = found.group(1), found.group(2)
        log, proc = start("worker", [sys.argv[3], "--coordinator", grpc, "--listen", "127.0.0.1",
                                     "--metrics-listen", "127.0.0.1:0", "--work-dir", f"{tmp}/work",
                                     "--worker-id", WORKER_ID])
        wait_for_line(log, r"registered with", proc)
        discovered = get(f"http://{metrics}/discovery")
        hosts = {g["labels"].get("host") for g in discovered if g["labels"].get("worker") == WORKER_ID}
        if len(hosts) != 1 or not next(iter(hosts)):
            sys.exit(f"FAIL: /discovery does not list {WORKER_ID} with a host: {discovered}")
        want = {(WORKER_ID, hosts.pop())}

        config = os.path.join(tmp, "prometheus.yml")
        # Its rule_files name alerts.yml beside it: Prometheus loads the shipped rules too.
        shutil.copy(os.path.join(os.path.dirname(sys.argv[1]), "alerts.yml"), tmp)
        with open(config, "w") as f:
            f.write(source.replace(EXAMPLE_COORDINATOR, metrics).replace("scrape_interval: 15s", "scrape_interval: 1s"))
        web = f"127.0.0.1:{free_port()}"
        log, proc = start("prometheus", [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/tsdb",
                                         f"--web.listen-address={web}"])

        got, coordinator = set(), []
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if proc.poll() is not None:
                break
            try:
                # Every loom_ series scraped from the workers, and `up` of each target.
                got = {(s["metric"].get("worker"), s["metric"].get("host"))
                       for s in query(web, '{job="loom-workers", __name__=~"loom_.+"}')}
                coordinator = query(web, f'up{{instance="{metrics}"}}')
            except OSError:
                continue
            if got == want and len(coordinator) == 1 and coordinator[0]["value"][1] == "1":
                # The server loaded alerts.yml through rule_files (its relative path).
                rules = [r["name"] for g in get(f"http://{web}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
                if not rules or not all(r.startswith("Loom") for r in rules):
                    print(f"FAIL: Prometheus loaded the alerting rules {rules}, want those of alerts.yml")
                    return 1
                print(f"PASS: the worker's series carry (worker, host) = {sorted(got)}; the coordinator is scraped "
                      f"once; {len(rules)} alerting rules loaded")
                return 0
        print(f"FAIL: the workers' series carry (worker, host) = {sorted(got, key=str)}, want {sorted(want)}; "
              f"want one `up` of 1 for the coordinator {metrics}, have {[(s['metric'], s['value'][1]) for s in coordinator]}")
        print("prometheus log (last lines):\n" + "".join(open(log).readlines()[-15:]))
        return 1
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
