#!/usr/bin/python3
"""Submits a plan to a Loom coordinator, watches it to the end and plots each stage's training
loss to a PNG.

    /usr/bin/python3 examples/python/train_and_plot.py examples/python/tiny.yaml \
        --coordinator 127.0.0.1:7070 --out loss.png

The loss comes from the plan's watch events: each carries rank 0's latest step and loss per job,
so the curve has one point per event the watch saw (the coordinator sends one per change, at
most about two a second while nothing else changes), not necessarily every step. The coordinator
keeps no per-step history, so a plan that already ended has no curve to plot.
Needs python3-grpcio, python3-protobuf, python3-yaml and python3-matplotlib (Debian), and
loom_client (`pip install ./python`, or run from the source tree as here).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from loom_client import Client, LoomError, PlanState  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", help="plan file (.yaml or .json)")
    parser.add_argument("--coordinator", default=None, help="host:port; default $LOOM_COORDINATOR or 127.0.0.1:7070")
    parser.add_argument("--out", default="loss.png", help="PNG to write (default %(default)s)")
    args = parser.parse_args()

    curves = {}  # stage -> {step: loss}
    with Client(args.coordinator) as loom:
        try:
            plan_id = loom.submit(args.plan)
        except LoomError as e:
            for error in e.errors:
                print(f"{args.plan}:{error.line}:{error.column}: {error.path}: {error.message}", file=sys.stderr)
            if not e.errors:
                print(e, file=sys.stderr)
            return 1
        print(f"submitted {plan_id}")
        status, last_message = None, ""
        for event in loom.watch(plan_id):
            status = event.status
            # An event repeats the last change's message until the next change.
            if event.message and event.message != last_message:
                print(event.message)
                last_message = event.message
            for job in status.jobs:
                if job.progress is not None and job.progress.step > 0:
                    curves.setdefault(job.stage, {})[job.progress.step] = job.progress.loss
    print(f"plan {plan_id} {status.state.name}")

    fig, ax = plt.subplots(figsize=(7, 4))
    for stage, points in curves.items():
        steps = sorted(points)
        ax.plot(steps, [points[s] for s in steps], marker=".", label=stage)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (rank 0)")
    ax.set_title(f"{plan_id}: {status.state.name.lower()}")
    if curves:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {os.path.abspath(args.out)} ({sum(len(p) for p in curves.values())} points)")
    return 0 if status.state == PlanState.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
