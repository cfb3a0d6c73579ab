#!/usr/bin/python3
"""The Python client against a real cluster: loom-coordinator, two loom-worker daemons and real
loom-rank training on data prepared with the real `loom data corpus` and `loom data prepare`.

    /usr/bin/python3 tests/python/client_cluster_test.py BUILD_DIR

Checks: submit (a file) -> watch until SUCCEEDED with the loss reported by events; status;
workers; checkpoints; cancel of a second, long plan; a plan refused with LoomError carrying the
field path (from a dict, and from a file with its line); NOT_FOUND for an unknown plan.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SOURCE, "python"))

try:
    import grpc  # noqa: E402  (python3-grpcio)
    from loom_client import Client, JobState, LoomError, PlanState, WorkerState  # noqa: E402
except ImportError as e:
    print(f"SKIP: {e}: install python3-grpcio, python3-protobuf and python3-yaml (scripts/setup)")
    sys.exit(77)

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(SOURCE, "build")

# 16 steps of 512 tokens on a 2-layer model: a few seconds on one CPU core.
TRAIN_PLAN = """name: pyclient
seed: 5
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
data: {dir: DATA}
defaults:
  parallel: {dp: 1, micro_batch_size: 2}
  optimizer: {lr: 3e-3}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  checkpoint: {every_steps: 5, keep_last: 0}
stages:
  - name: core
    kind: pretrain
    tokens: 8Ki
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_log(path, pattern, process, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            match = re.search(pattern, f.read())
        if match:
            return match.group(0)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    with open(path, errors="replace") as f:
        raise AssertionError(f"{path}: no {pattern!r} within {timeout}s:\n{f.read()}")


class ClientClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="loom-python-client-")
        cls.processes = []
        cls.client = None
        try:
            cls.start_cluster()
        except BaseException:
            cls.tearDownClass()  # unittest does not call it when setUpClass fails
            raise

    @classmethod
    def start_cluster(cls):
        loom = os.path.join(BUILD, "cli", "loom")
        data = os.path.join(cls.dir, "prepared")
        log = os.path.join(cls.dir, "prepare.log")
        with open(log, "w") as out:
            subprocess.run([loom, "data", "corpus", "--out", cls.dir + "/corpus", "--sources", "math",
                            "--max-docs", "200", "--math-docs", "400"], stdout=out, stderr=out, check=True)
            subprocess.run([loom, "data", "prepare", "--corpus", cls.dir + "/corpus", "--out", data, "--vocab",
                            "512", "--threads", "2"], stdout=out, stderr=out, check=True)
        cls.data = data
        cls.address = f"127.0.0.1:{free_port()}"
        cls.start(["coordinator/loom-coordinator", "--listen", cls.address, "--data-dir", cls.dir + "/coordinator",
                   "--metrics-listen", "127.0.0.1:0", "--heartbeat", "200ms", "--heartbeat-timeout", "2s",
                   "--prepared-data", data], "coordinator")
        for worker in ("w1", "w2"):
            cls.start(["worker/daemon/loom-worker", "--coordinator", cls.address, "--devices", "cpu:1",
                       "--work-dir", f"{cls.dir}/{worker}", "--worker-id", worker, "--rank-binary",
                       os.path.join(BUILD, "worker", "loom-rank"), "--metrics-listen", "127.0.0.1:0"], worker)
        cls.client = Client(cls.address, timeout=10)
        deadline = time.monotonic() + 15
        while len(cls.client.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)

    @classmethod
    def start(cls, argv, name):
        log = os.path.join(cls.dir, name + ".log")
        with open(log, "w") as out:
            p = subprocess.Popen([os.path.join(BUILD, argv[0])] + argv[1:], stdout=out, stderr=subprocess.STDOUT)
        cls.processes.append(p)
        wait_for_log(log, r"metrics on http://", p)

    @classmethod
    def tearDownClass(cls):
        if cls.client is not None:
            cls.client.close()
        for p in reversed(cls.processes):
            p.kill()
            p.wait()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def logs(self):
        out = ""
        for name in ("coordinator", "w1", "w2"):
            with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
                out += f"--- {name}.log\n" + f.read()[-3000:]
        return out

    def write_plan(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_a_workers(self):
        workers = {w.worker_id: w for w in self.client.workers()}
        self.assertEqual(sorted(workers), ["w1", "w2"])
        for w in workers.values():
            self.assertNotEqual(w.state, WorkerState.LOST, w)
            self.assertEqual(w.slots, 1)
            self.assertEqual([d.kind for d in w.devices], ["cpu"])
            self.assertGreater(w.last_heartbeat_ms, 0)

    def test_b_submit_watch_status_checkpoints(self):
        plan_id = self.client.submit(self.write_plan("train.yaml", TRAIN_PLAN.replace("DATA", self.data)))
        self.assertTrue(plan_id.startswith("pyclient-"), plan_id)
        losses = {}
        events = 0
        messages = []
        for event in self.client.watch(plan_id, timeout=60):
            events += 1
            self.assertEqual(event.status.plan_id, plan_id)
            if event.message:
                messages.append(event.message)
            core = event.status.job("core")
            if core.progress is not None and core.progress.step > 0:
                losses[core.progress.step] = core.progress.loss
        status = self.client.status(plan_id)
        self.assertEqual(status.state, PlanState.SUCCEEDED, f"{status}\n{self.logs()}")
        self.assertTrue(status.ended)
        core = status.job("core")
        self.assertEqual(core.state, JobState.SUCCEEDED)
        self.assertEqual(core.kind, "pretrain")
        self.assertEqual(core.tokens_budget, 8192)
        self.assertEqual(core.progress.step, 16, core.progress)
        self.assertGreater(events, 2, "watch gave the status and the end only")
        self.assertTrue(any("SUCCEEDED" in m for m in messages), messages)
        self.assertGreaterEqual(len(losses), 2, f"the events carried the loss of too few steps: {losses}")
        first, last = losses[min(losses)], losses[max(losses)]
        print(f"\n  {events} events; loss by step {sorted(losses.items())}", file=sys.stderr)
        self.assertTrue(0 < last < first, f"loss did not fall: {losses}")

        checkpoints = self.client.checkpoints(plan_id)
        self.assertTrue(checkpoints, "no checkpoints")
        final = [c for c in checkpoints if c.final]
        self.assertEqual(len(final), 1, checkpoints)
        self.assertEqual(final[0].step, 16)
        self.assertEqual(final[0].stage, "core")
        self.assertTrue(os.path.isfile(os.path.join(final[0].path, "manifest.json")), final[0].path)
        self.assertEqual(core.final_checkpoint.path, final[0].path)
        self.assertEqual(self.client.checkpoints(plan_id, stage="nonesuch"), [])
        self.assertIn(plan_id, [p.plan_id for p in self.client.plans()])

        # The run history: every step of core, the last one the job's progress.
        points = self.client.metrics(plan_id)
        self.assertEqual([p.step for p in points], list(range(1, 17)), points)
        self.assertTrue(all(p.stage == "core" and p.attempt == 1 for p in points), points)
        self.assertEqual(points[-1].loss, core.progress.loss)
        for step, loss in losses.items():
            self.assertEqual(points[step - 1].loss, loss, f"step {step}")
        self.assertEqual(len(self.client.metrics(plan_id, stage="core")), 16)
        with self.assertRaises(LoomError) as missing:
            self.client.metrics(plan_id, stage="nonesuch")
        self.assertIn("no stage 'nonesuch'", str(missing.exception))
        # Rank 0's log, through the coordinator: loom-rank logs every step.
        log = self.client.logs(plan_id, "core").decode()
        self.assertIn("step 16 tokens", log)

    def test_c_cancel(self):
        long_plan = TRAIN_PLAN.replace("DATA", self.data).replace("name: pyclient", "name: long") \
                              .replace("tokens: 8Ki", "tokens: 64Mi")
        plan_id = self.client.submit({**__import__("yaml").safe_load(long_plan)})
        for event in self.client.watch(plan_id, timeout=30):
            if event.status.job("core").state == JobState.RUNNING:
                break
        self.client.cancel(plan_id, reason="python client test")
        final = self.client.wait(plan_id, timeout=30)
        self.assertEqual(final.state, PlanState.CANCELLED, final)
        self.assertEqual(final.job("core").state, JobState.CANCELLED)

    def test_d_invalid_plans(self):
        plan = __import__("yaml").safe_load(TRAIN_PLAN.replace("DATA", self.data))
        plan["stages"][0]["tokens"] = -5
        with self.assertRaises(LoomError) as refused:
            self.client.submit(plan)
        e = refused.exception
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT, e)
        self.assertEqual(e.field_path, "stages[0].tokens", e)
        self.assertIn("stages[0].tokens", str(e))

        # From a file: the error has its line and column, and every error is listed.
        text = TRAIN_PLAN.replace("DATA", self.data).replace("lr: 3e-3", "lr: -1") \
                         .replace("seq_len: 64}]", "seq_len: 0}]")
        path = self.write_plan("bad.yaml", text)
        with self.assertRaises(LoomError) as refused:
            self.client.submit(path)
        e = refused.exception
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT)
        paths = [x.path for x in e.errors]
        self.assertTrue(any(p.endswith("optimizer.lr") for p in paths), paths)
        self.assertTrue(any("seq_len" in p for p in paths), paths)
        self.assertTrue(all(x.line > 0 for x in e.errors), e.errors)

        with self.assertRaises(LoomError) as refused:
            self.client.submit(self.write_plan("syntax.yaml", "name: [unclosed\n"))
        self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(refused.exception.field_path, "")
        self.assertIn("not valid YAML", refused.exception.errors[0].message)

        with self.assertRaises(LoomError) as unknown:
            self.client.status("nonesuch-1")
        self.assertEqual(unknown.exception.code, grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
