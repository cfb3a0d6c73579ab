"""Typed views of the coordinator's answers (proto/loom/v1/coordinator.proto), as dataclasses.

Names follow the proto; enums drop their prefix (PLAN_STATE_SUCCEEDED -> PlanState.SUCCEEDED,
STAGE_KIND_PRETRAIN -> "pretrain"). Times are Unix milliseconds, as in the proto.
"""

import dataclasses
import enum
from typing import Dict, List, Optional

from ._proto import coordinator_pb2 as pb
from ._proto import plan_pb2


class PlanState(enum.Enum):
    UNSPECIFIED = 0
    ACTIVE = 1      # some job has not ended
    SUCCEEDED = 2   # every job succeeded
    FAILED = 3      # a job failed; the jobs that depend on it will not run
    CANCELLED = 4


class JobState(enum.Enum):
    UNSPECIFIED = 0
    PENDING = 1     # waiting for its dependencies or free slots (see Job.reason)
    SCHEDULED = 2   # placed; ranks are starting
    RUNNING = 3
    RECOVERING = 4  # an attempt failed; the next resumes from a checkpoint
    SUCCEEDED = 5
    FAILED = 6
    CANCELLED = 7


class WorkerState(enum.Enum):
    UNSPECIFIED = 0
    IDLE = 1
    BUSY = 2
    LOST = 3


def _enum(cls, value: int):
    try:
        return cls(value)
    except ValueError:  # a newer coordinator's value
        return cls.UNSPECIFIED


def _kind(value: int) -> str:
    name = plan_pb2.StageKind.Name(value) if value in plan_pb2.StageKind.values() else "STAGE_KIND_UNSPECIFIED"
    return name[len("STAGE_KIND_"):].lower()


@dataclasses.dataclass(frozen=True)
class Progress:
    """Rank 0's latest training step of a job."""
    step: int
    tokens: int                 # tokens consumed by the stage so far (all ranks)
    loss: float
    tokens_per_second: float
    learning_rate: float
    grad_norm: float
    global_batch_tokens: int
    seq_len: int
    time_ms: int
    eval_loss: Dict[str, float]
    train_metrics: Dict[str, float]

    @staticmethod
    def from_proto(p: "pb.Progress") -> "Progress":
        return Progress(step=p.step, tokens=p.tokens, loss=p.loss, tokens_per_second=p.tokens_per_second,
                        learning_rate=p.learning_rate, grad_norm=p.grad_norm,
                        global_batch_tokens=p.global_batch_tokens, seq_len=p.seq_len, time_ms=p.time_ms,
                        eval_loss=dict(p.eval_loss), train_metrics=dict(p.train_metrics))


@dataclasses.dataclass(frozen=True)
class MetricPoint:
    """One step of a job's run history (Client.metrics, `loom metrics`), as its rank 0 reported it."""
    stage: str
    attempt: int
    step: int
    tokens: int                 # tokens consumed by the stage so far (all ranks)
    loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    time_ms: int
    eval_loss: Dict[str, float]      # by eval set; empty when the step ran no evaluation
    eval_metrics: Dict[str, float]
    train_metrics: Dict[str, float]

    @staticmethod
    def from_proto(p: "pb.MetricPoint") -> "MetricPoint":
        return MetricPoint(stage=p.stage, attempt=p.attempt, step=p.step, tokens=p.tokens, loss=p.loss,
                           learning_rate=p.learning_rate, grad_norm=p.grad_norm,
                           tokens_per_second=p.tokens_per_second, time_ms=p.time_ms, eval_loss=dict(p.eval_loss),
                           eval_metrics=dict(p.eval_metrics), train_metrics=dict(p.train_metrics))


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    plan_id: str
    stage: str
    step: int
    tokens: int
    path: str          # checkpoint directory on the shared filesystem
    attempt: int
    committed_ms: int
    final: bool        # written when the stage finished
    bad: str = ""      # why a resume found it corrupt or incomplete; "" while good (never resumed from once bad)

    @staticmethod
    def from_proto(c: "pb.CheckpointInfo") -> "Checkpoint":
        return Checkpoint(plan_id=c.plan_id, stage=c.stage, step=c.step, tokens=c.tokens, path=c.path,
                          attempt=c.attempt, committed_ms=c.committed_ms, final=c.final, bad=c.bad)


@dataclasses.dataclass(frozen=True)
class Job:
    """One stage of a plan (a stage runs as one job)."""
    job_id: str                   # "<plan_id>/<stage>"
    stage: str
    kind: str                     # "pretrain", "sft", ...
    round: int
    state: JobState
    reason: str                   # why it is in this state
    attempt: int
    tokens_budget: int
    progress: Optional[Progress]  # None before rank 0 reported a step
    last_checkpoint: Optional[Checkpoint]
    final_checkpoint: Optional[Checkpoint]
    resumed_from: str
    eval_loss: Dict[str, float]
    eval_metrics: Dict[str, float]
    rank_workers: List[str]
    checkpoint_save_failures: int  # saves that failed (training went on)
    last_checkpoint_save_error: str
    warning: str                  # e.g. no checkpoint committed for several intervals; "" when all is well

    @staticmethod
    def from_proto(j: "pb.JobStatus") -> "Job":
        return Job(job_id=j.job_id, stage=j.stage, kind=_kind(j.kind), round=j.round,
                   state=_enum(JobState, j.state), reason=j.reason, attempt=j.attempt,
                   tokens_budget=j.tokens_budget,
                   progress=Progress.from_proto(j.progress) if j.HasField("progress") else None,
                   last_checkpoint=Checkpoint.from_proto(j.last_checkpoint) if j.HasField("last_checkpoint") else None,
                   final_checkpoint=(Checkpoint.from_proto(j.final_checkpoint)
                                     if j.HasField("final_checkpoint") else None),
                   resumed_from=j.resumed_from, eval_loss=dict(j.eval_loss), eval_metrics=dict(j.eval_metrics),
                   rank_workers=list(j.rank_workers), checkpoint_save_failures=j.checkpoint_save_failures,
                   last_checkpoint_save_error=j.last_checkpoint_save_error, warning=j.warning)


@dataclasses.dataclass(frozen=True)
class PlanStatus:
    plan_id: str
    name: str
    state: PlanState
    submitted_ms: int
    ended_ms: int
    priority: int
    jobs: List[Job]   # one per stage, in stage order
    # Who submitted it: the name and role of the certificate or token (empty without TLS).
    submitted_by_name: str = ""
    submitted_by_role: str = ""

    @property
    def ended(self) -> bool:
        """True once the plan succeeded, failed or was cancelled."""
        return self.state not in (PlanState.ACTIVE, PlanState.UNSPECIFIED)

    def job(self, stage: str) -> Job:
        """The job of `stage`; KeyError naming the stages when there is none."""
        for j in self.jobs:
            if j.stage == stage:
                return j
        raise KeyError(f"plan {self.plan_id} has no stage {stage!r} (stages: {[j.stage for j in self.jobs]})")

    @staticmethod
    def from_proto(s: "pb.PlanStatus") -> "PlanStatus":
        return PlanStatus(plan_id=s.plan_id, name=s.name, state=_enum(PlanState, s.state),
                          submitted_ms=s.submitted_ms, ended_ms=s.ended_ms, priority=s.priority,
                          jobs=[Job.from_proto(j) for j in s.jobs],
                          submitted_by_name=s.submitted_by.name, submitted_by_role=s.submitted_by.role)


@dataclasses.dataclass(frozen=True)
class Event:
    """One change of a watched plan: its whole status after the change."""
    time_ms: int
    status: PlanStatus
    # The latest change, e.g. "core: checkpoint step 10 committed"; events that only carry new
    # progress repeat it, so compare with the previous one to print each change once.
    message: str

    @staticmethod
    def from_proto(e: "pb.PlanEvent") -> "Event":
        return Event(time_ms=e.time_ms, status=PlanStatus.from_proto(e.status), message=e.message)


@dataclasses.dataclass(frozen=True)
class Device:
    kind: str          # "cpu", "cuda"
    index: int
    name: str
    memory_bytes: int
    threads: int


@dataclasses.dataclass(frozen=True)
class Worker:
    worker_id: str
    host: str
    state: WorkerState
    devices: List[Device]
    slots: int
    slots_used: int
    last_heartbeat_ms: int
    ranks: List[str]   # "<job_id>#<attempt>/rank<r>" for each rank it runs
    draining: bool
    lost_reason: str
    address: str
    metrics_address: str

    @staticmethod
    def from_proto(w: "pb.WorkerStatus") -> "Worker":
        kinds = {v.number: v.name[len("KIND_"):].lower() for v in pb.Device.Kind.DESCRIPTOR.values}
        devices = [Device(kind=kinds.get(d.kind, "unspecified"), index=d.index, name=d.name,
                          memory_bytes=d.memory_bytes, threads=d.threads) for d in w.devices]
        return Worker(worker_id=w.worker_id, host=w.host, state=_enum(WorkerState, w.state), devices=devices,
                      slots=w.slots, slots_used=w.slots_used, last_heartbeat_ms=w.last_heartbeat_ms,
                      ranks=list(w.ranks), draining=w.draining, lost_reason=w.lost_reason, address=w.address,
                      metrics_address=w.metrics_address)
