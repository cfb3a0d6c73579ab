#!/usr/bin/python3
"""The Python client against a real loom-coordinator with mutual TLS (certificates from the real
`loom certs`): with tls_dir it is served; without TLS, or with a certificate of another CA, the
handshake fails (UNAVAILABLE); a bearer token (`loom tokens issue`) stands in for a certificate; an
unusable tls_dir is a LoomError naming the fix.

    /usr/bin/python3 tests/python/client_tls_test.py BUILD_DIR
"""

import os
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
    from loom_client import Client, LoomError  # noqa: E402
except ImportError as e:
    print(f"SKIP: {e}: install python3-grpcio, python3-protobuf and python3-yaml (scripts/setup)")
    sys.exit(77)

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(SOURCE, "build")
LOOM = os.path.join(BUILD, "cli", "loom")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClientTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="loom-python-tls-")
        cls.coordinator = None
        for d in ("tls", "other"):
            subprocess.run([LOOM, "certs", "init", "--dir", f"{cls.dir}/{d}"], check=True, capture_output=True)
            for role in ("coordinator", "admin"):
                subprocess.run([LOOM, "certs", "issue", "--dir", f"{cls.dir}/{d}", "--role", role, "--name", role],
                               check=True, capture_output=True)
        cls.address = f"127.0.0.1:{free_port()}"
        cls.log = os.path.join(cls.dir, "coordinator.log")
        with open(cls.log, "w") as out:
            cls.coordinator = subprocess.Popen(
                [os.path.join(BUILD, "coordinator", "loom-coordinator"), "--listen", cls.address, "--data-dir",
                 cls.dir + "/coordinator", "--metrics-listen", "127.0.0.1:0", "--tls-dir", cls.dir + "/tls"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(cls.log) as f:
                if "metrics on http://" in f.read():
                    return
            if cls.coordinator.poll() is not None:
                break
            time.sleep(0.05)
        with open(cls.log) as f:
            raise AssertionError("the coordinator did not start:\n" + f.read())

    @classmethod
    def tearDownClass(cls):
        if cls.coordinator is not None:
            cls.coordinator.kill()
            cls.coordinator.wait()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_the_right_certificate_is_served(self):
        with Client(self.address, timeout=5, tls_dir=self.dir + "/tls") as loom:
            self.assertEqual(loom.workers(), [])

    def test_no_tls_and_another_ca_are_refused_in_the_handshake(self):
        for tls_dir in ("", self.dir + "/other"):
            with Client(self.address, timeout=3, tls_dir=tls_dir) as loom:
                with self.assertRaises(LoomError) as refused:
                    loom.workers()
                self.assertEqual(refused.exception.code, grpc.StatusCode.UNAVAILABLE, tls_dir)

    def test_a_bearer_token_stands_in_for_a_certificate(self):
        issued = subprocess.run([LOOM, "tokens", "issue", "--role", "viewer", "--name", "py-viewer", "--coordinator",
                                 self.address, "--tls-dir", self.dir + "/tls"], capture_output=True, text=True)
        self.assertEqual(issued.returncode, 0, issued.stderr)
        ca_only = self.dir + "/ca-only"
        os.makedirs(ca_only, exist_ok=True)
        shutil.copy(os.path.join(self.dir, "tls", "ca.pem"), ca_only)
        with Client(self.address, timeout=5, tls_dir=ca_only, token=issued.stdout.strip()) as loom:
            self.assertEqual(loom.workers(), [])
        with Client(self.address, timeout=5, tls_dir=ca_only, token="loom_" + "0" * 64) as loom:
            with self.assertRaises(LoomError) as refused:
                loom.workers()
            self.assertEqual(refused.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        with self.assertRaises(LoomError) as plain:
            Client(self.address, tls_dir="", token=issued.stdout.strip())
        self.assertIn("needs TLS", str(plain.exception))

    def test_an_unusable_tls_dir_names_the_fix(self):
        with self.assertRaises(LoomError) as missing:
            Client(self.address, tls_dir=self.dir + "/none")
        self.assertIn("loom certs init", str(missing.exception))
        # Two identities and no admin: the caller must choose.
        both = self.dir + "/both"
        os.makedirs(both)
        for name in ("ca.pem", "coordinator.pem", "coordinator.key"):
            shutil.copy(os.path.join(self.dir, "tls", name), both)
        shutil.copy(os.path.join(self.dir, "tls", "coordinator.pem"), both + "/w1.pem")
        shutil.copy(os.path.join(self.dir, "tls", "coordinator.key"), both + "/w1.key")
        with self.assertRaises(LoomError) as ambiguous:
            Client(self.address, tls_dir=both)
        self.assertIn("tls_name", str(ambiguous.exception))
        os.chmod(both + "/w1.key", 0o644)
        with self.assertRaises(LoomError) as open_key:
            Client(self.address, tls_dir=both, tls_name="w1")
        self.assertIn("chmod 600", str(open_key.exception))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
