#!/usr/bin/python3
"""Runs a real Prometheus on deploy/prometheus/prometheus.yml and checks that workers found through
the coordinator's /discovery are scraped with `worker` and `host` labels on their series.

    prometheus_discovery_test.py PROMETHEUS_YML

The coordinator's side is played by a small HTTP server on 127.0.0.1 serving /metrics and a
/discovery answer with two workers: one described by meta labels (__meta_loom_worker,
__meta_loom_host), one by plain `worker` and `host` labels, so the configuration is right for
either form. Only the addresses (to loopback) and the scrape interval (to 1 s) of the shipped file
are changed. Takes about 6 s: Prometheus hands discovered targets to its scrapers every 5 s.
"""
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

EXAMPLE_COORDINATOR = "192.0.2.10:7071"

WORKERS = [
    {"labels": {"__meta_loom_worker": "w-meta", "__meta_loom_host": "host-a"}, "want": ("w-meta", "host-a")},
    {"labels": {"worker": "w-plain", "host": "host-b"}, "want": ("w-plain", "host-b")},
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port_holder):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/discovery":
                me = f"127.0.0.1:{port_holder[0]}"
                # Both workers are this server; the path keeps them distinct targets.
                body = json.dumps([{"targets": [me], "labels": dict(w["labels"], __metrics_path__=f"/metrics/{i}")}
                                   for i, w in enumerate(WORKERS)]).encode()
                kind = "application/json"
            elif self.path.startswith("/metrics"):
                body = b"# TYPE loom_worker_ranks_running gauge\nloom_worker_ranks_running 0\n"
                kind = "text/plain; version=0.0.4"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_holder[0] = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def query(prometheus, promql):
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with DIRECT.open(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    source = open(sys.argv[1]).read()
    if EXAMPLE_COORDINATOR not in source:
        sys.exit(f"FAIL: {sys.argv[1]} no longer names the example coordinator {EXAMPLE_COORDINATOR}; update this test")
    binary = shutil.which("prometheus")
    if binary is None:
        sys.exit("FAIL: prometheus not found (package prometheus; run scripts/setup)")

    port = [0]
    server = serve(port)
    tmp = tempfile.mkdtemp(prefix="loom-prometheus-")
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(source.replace(EXAMPLE_COORDINATOR, f"127.0.0.1:{port[0]}")
                .replace("scrape_interval: 15s", "scrape_interval: 1s"))
    web = f"127.0.0.1:{free_port()}"
    log = open(os.path.join(tmp, "prometheus.log"), "w")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                             f"--web.listen-address={web}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        want = {w["want"] for w in WORKERS}
        got, coordinator = set(), []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if proc.poll() is not None:
                break
            try:
                got = {(s["metric"].get("worker"), s["metric"].get("host"))
                       for s in query(web, 'loom_worker_ranks_running{job="loom-workers"}')}
                coordinator = query(web, 'up{job="loom-coordinator"} == 1')
            except OSError:
                continue
            if got == want and coordinator:
                print(f"PASS: worker series labelled {sorted(got)}; coordinator scraped")
                return 0
        log.flush()
        print(f"FAIL: worker series labelled (worker, host) = {sorted(got, key=str)}, want {sorted(want)}; "
              f"coordinator up: {bool(coordinator)}")
        print("prometheus log (last lines):\n" + "".join(open(log.name).readlines()[-15:]))
        return 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
