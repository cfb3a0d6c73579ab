#!/usr/bin/python3
"""`pip install ./python` works offline on Debian 12: into a fresh venv that sees Debian's
python3-grpcio, python3-protobuf and python3-yaml (--system-site-packages), built with Debian's
setuptools (--no-build-isolation --no-index). The installed package imports from outside the
source tree and carries its generated stubs.

    /usr/bin/python3 tests/python/install_test.py python/
"""

import os
import shutil
import subprocess
import sys
import tempfile


def main():
    source = os.path.abspath(sys.argv[1])
    try:
        import ensurepip  # noqa: F401  (python3-venv)
        import setuptools  # noqa: F401  (python3-setuptools)
    except ImportError as e:
        print(f"SKIP: {e}: install python3-venv and python3-setuptools (scripts/setup)")
        return 77
    with tempfile.TemporaryDirectory(prefix="loom-pip-") as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
        # pip builds in place: work on a copy so that the source tree gets no build/ or egg-info.
        copy = os.path.join(tmp, "python")
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation", "--no-index",
                              "--disable-pip-version-check", copy], capture_output=True, text=True)
        if pip.returncode != 0:
            print(pip.stdout, pip.stderr)
            print("FAIL: pip install ./python failed")
            return 1
        probe = ("import loom_client, loom_client._proto.coordinator_pb2 as pb; "
                 "print(loom_client.__file__); print(pb.SubmitPlanRequest.DESCRIPTOR.fields_by_name['plan_yaml'].number)")
        run = subprocess.run([os.path.join(venv, "bin", "python"), "-c", probe], capture_output=True, text=True,
                             cwd=tmp)
        lines = run.stdout.split()
        if run.returncode != 0 or len(lines) != 2 or not lines[0].startswith(venv) or lines[1] != "3":
            print(run.stdout, run.stderr)
            print(f"FAIL: the installed loom_client did not import from {venv} with its stubs")
            return 1
        print(f"ok: pip installed loom_client into a venv ({lines[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
