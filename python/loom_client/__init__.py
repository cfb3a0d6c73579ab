"""Loom's Python client: submit, watch and inspect training plans on a loom-coordinator.

    from loom_client import Client, LoomError
    with Client("127.0.0.1:7070") as loom:
        plan_id = loom.submit("plan.yaml")
        final = loom.wait(plan_id)

See python/README.md.
"""

from .client import Client, DEFAULT_ADDRESS, MAX_PLAN_BYTES
from .errors import LoomError, PlanError
from .types import (Checkpoint, Device, Event, Job, JobState, MetricPoint, PlanState, PlanStatus, Progress,
                    Worker, WorkerState)

__version__ = "0.1.0"

__all__ = ["Client", "DEFAULT_ADDRESS", "MAX_PLAN_BYTES", "LoomError", "PlanError", "Checkpoint", "Device",
           "Event", "Job", "JobState", "MetricPoint", "PlanState", "PlanStatus", "Progress", "Worker", "WorkerState"]
