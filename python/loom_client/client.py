"""Client: Loom's plan API (PlanService in proto/loom/v1/coordinator.proto) from Python.

The client does not read the plan language itself: submit() sends the plan file's text and the
coordinator reads and validates it with the same code as `loom validate` (common/plan_io.h), so
a refused plan raises LoomError with the same messages, lines and field paths.
"""

import os
from typing import Iterator, List, Mapping, Optional, Union

import grpc
import yaml
from google.protobuf import text_format

from ._proto import coordinator_pb2 as pb
from ._proto import coordinator_pb2_grpc as pb_grpc
from ._proto import plan_pb2
from .errors import LoomError, from_rpc_error
from .types import Checkpoint, Event, MetricPoint, PlanStatus, Worker

DEFAULT_ADDRESS = "127.0.0.1:7070"
# The coordinator refuses plan text above this (kMaxPlanBytes, common/plan_validation.h).
MAX_PLAN_BYTES = 1 << 20


def _tls_credentials(tls_dir: str, tls_name: str) -> grpc.ChannelCredentials:
    """Channel credentials presenting NAME.pem/NAME.key of `tls_dir` and trusting only its ca.pem
    (the same choice of NAME as common/tls.h). Raises LoomError(FAILED_PRECONDITION) naming the
    file and the fix."""
    def fail(message):
        return LoomError(grpc.StatusCode.FAILED_PRECONDITION, f"TLS directory {tls_dir}: {message}")

    if not os.path.isfile(os.path.join(tls_dir, "ca.pem")):
        raise fail("no ca.pem (make a CA with `loom certs init`, or point tls_dir / LOOM_TLS_DIR elsewhere)")
    if not tls_name:
        leaves = sorted(f[:-4] for f in os.listdir(tls_dir)
                        if f.endswith(".pem") and f != "ca.pem" and os.path.isfile(os.path.join(tls_dir, f[:-4] + ".key")))
        if "admin" in leaves:
            tls_name = "admin"
        elif len(leaves) == 1:
            tls_name = leaves[0]
        else:
            raise fail(f"holds {'no NAME.pem with its NAME.key' if not leaves else 'several identities (' + ', '.join(leaves) + ')'}; "
                       "choose one with tls_name or LOOM_TLS_NAME")
    key_path = os.path.join(tls_dir, tls_name + ".key")
    try:
        if os.stat(key_path).st_mode & 0o077:
            raise fail(f"{key_path} is readable by group or others; run chmod 600 {key_path}")
        with open(os.path.join(tls_dir, "ca.pem"), "rb") as f:
            ca = f.read()
        with open(os.path.join(tls_dir, tls_name + ".pem"), "rb") as f:
            cert = f.read()
        with open(key_path, "rb") as f:
            key = f.read()
    except OSError as e:
        raise fail(f"{e.filename}: {e.strerror} (issue it with `loom certs issue --name {tls_name}`)") from None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class Client:
    """A connection to a loom-coordinator.

        with Client("127.0.0.1:7070") as loom:
            plan_id = loom.submit("examples/plans/demo.yaml")
            for event in loom.watch(plan_id):
                print(event.message)

    `address`: host:port; default $LOOM_COORDINATOR, else 127.0.0.1:7070 (as `loom`).
    `timeout`: deadline of every call in seconds (watch() has its own, default none).
    `tls_dir`: mutual TLS, as `loom --tls-dir`: a directory with ca.pem and this client's
    NAME.pem / NAME.key (`loom certs issue`; `loom up` makes <data-dir>/tls); default $LOOM_TLS_DIR;
    empty: no TLS. `tls_name`: which NAME; default $LOOM_TLS_NAME, else "admin" when the directory
    has it, else its only certificate. `token`: a bearer token from `loom tokens issue` instead of a
    certificate (default $LOOM_TOKEN); needs `tls_dir` for its ca.pem, and then no certificate is sent.
    """

    def __init__(self, address: Optional[str] = None, timeout: float = 30.0, tls_dir: Optional[str] = None,
                 tls_name: Optional[str] = None, token: Optional[str] = None):
        self.address = address or os.environ.get("LOOM_COORDINATOR") or DEFAULT_ADDRESS
        self.timeout = timeout
        tls_dir = tls_dir if tls_dir is not None else os.environ.get("LOOM_TLS_DIR", "")
        tls_name = tls_name if tls_name is not None else os.environ.get("LOOM_TLS_NAME", "")
        token = (token if token is not None else os.environ.get("LOOM_TOKEN", "")).strip()
        if token:
            # Only over TLS that verifies the coordinator: the token must not go to anyone else.
            if not tls_dir:
                raise LoomError(grpc.StatusCode.FAILED_PRECONDITION,
                                "a bearer token needs TLS: pass tls_dir (or LOOM_TLS_DIR) with the cluster's ca.pem")
            try:
                with open(os.path.join(tls_dir, "ca.pem"), "rb") as f:
                    ca = f.read()
            except OSError as e:
                raise LoomError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"TLS directory {tls_dir}: {e.strerror} reading ca.pem") from None
            credentials = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(root_certificates=ca),
                                                             grpc.access_token_call_credentials(token))
            self._channel = grpc.secure_channel(self.address, credentials)
        elif tls_dir:
            self._channel = grpc.secure_channel(self.address, _tls_credentials(tls_dir, tls_name))
        else:
            self._channel = grpc.insecure_channel(self.address)
        self._stub = pb_grpc.PlanServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, name: str, method, request, source: str = ""):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e, f"{name} at {self.address}", source) from None

    def submit(self, plan: Union[str, os.PathLike, Mapping], source: Optional[str] = None) -> str:
        """Submits a plan; returns its id (e.g. "demo-3").

        `plan`: a plan file (.yaml, .yml or .json; .textproto/.txtpb/.pbtxt as loom.v1.TrainingPlan
        text), or a dict with the same structure as a YAML plan, dumped to YAML and sent the same
        way. Paths inside the plan (data.dir, checkpoint paths) are sent as written, exactly as
        `loom submit` sends them: use absolute paths (a relative one is read by the coordinator
        and workers from their own working directories, not from the plan file's).
        `source`: the name errors and `loom status` show; default the file name, or "<dict>".
        Raises LoomError (INVALID_ARGUMENT, with .errors and .field_path) when the plan is refused.
        """
        request = pb.SubmitPlanRequest()
        if isinstance(plan, Mapping):
            request.plan_yaml = yaml.safe_dump(dict(plan), sort_keys=False)
            request.source = source or "<dict>"
        else:
            path = os.fspath(plan)
            request.source = source or path
            size = os.path.getsize(path)
            if size > MAX_PLAN_BYTES:
                raise LoomError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{path} is {size} bytes; the coordinator's limit is {MAX_PLAN_BYTES}",
                                call="submit")
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if path.lower().endswith((".textproto", ".txtpb", ".pbtxt")):
                try:
                    text_format.Parse(text, request.plan)
                except text_format.ParseError as e:
                    raise LoomError(grpc.StatusCode.INVALID_ARGUMENT, f"{path}: {e}", call="submit") from None
            else:
                request.plan_yaml = text  # JSON is YAML
        return self._call("submit", self._stub.SubmitPlan, request, request.source).plan_id

    def status(self, plan_id: str) -> PlanStatus:
        """The plan's status now. NOT_FOUND for an unknown id."""
        response = self._call("status", self._stub.GetPlan, pb.GetPlanRequest(plan_id=plan_id))
        return PlanStatus.from_proto(response.status)

    def plan(self, plan_id: str) -> plan_pb2.TrainingPlan:
        """The plan as the coordinator stored it (loom.v1.TrainingPlan, repeat blocks expanded)."""
        return self._call("plan", self._stub.GetPlan, pb.GetPlanRequest(plan_id=plan_id)).plan

    def plans(self, include_finished: bool = True) -> List[PlanStatus]:
        """Every plan (only the active ones with include_finished=False)."""
        response = self._call("plans", self._stub.ListPlans, pb.ListPlansRequest(include_finished=include_finished))
        return [PlanStatus.from_proto(p) for p in response.plans]

    def watch(self, plan_id: str, timeout: Optional[float] = None) -> Iterator[Event]:
        """The plan's status now, then one Event per change; ends after the event in which the
        plan ended (event.status.ended). `timeout`: seconds for the whole watch (DEADLINE_EXCEEDED
        after it); None: as long as the plan runs. A lost coordinator raises UNAVAILABLE."""
        stream = self._stub.WatchPlan(pb.WatchPlanRequest(plan_id=plan_id), timeout=timeout)
        try:
            for event in stream:
                typed = Event.from_proto(event)
                yield typed
                if typed.status.ended:
                    return
        except grpc.RpcError as e:
            raise from_rpc_error(e, f"watch {plan_id} at {self.address}") from None
        finally:
            stream.cancel()

    def wait(self, plan_id: str, timeout: Optional[float] = None) -> PlanStatus:
        """Watches until the plan ends; its final status."""
        last = None
        for event in self.watch(plan_id, timeout=timeout):
            last = event.status
        return last if last is not None else self.status(plan_id)

    def cancel(self, plan_id: str, reason: str = "") -> None:
        """Cancels a plan: running jobs are aborted, the others will not start."""
        self._call("cancel", self._stub.CancelPlan, pb.CancelPlanRequest(plan_id=plan_id, reason=reason))

    def workers(self) -> List[Worker]:
        """Every worker daemon the coordinator knows (lost ones included, state LOST)."""
        response = self._call("workers", self._stub.ListWorkers, pb.ListWorkersRequest())
        return [Worker.from_proto(w) for w in response.workers]

    def drain(self, worker_id: str, undrain: bool = False) -> Worker:
        """Stops placing new ranks on a worker (undrain=True: starts again). NOT_FOUND if unknown."""
        response = self._call("drain", self._stub.DrainWorker,
                              pb.DrainWorkerRequest(worker_id=worker_id, undrain=undrain))
        return Worker.from_proto(response.worker)

    def checkpoints(self, plan_id: str, stage: str = "") -> List[Checkpoint]:
        """The plan's committed checkpoints (of `stage` only, when given)."""
        response = self._call("checkpoints", self._stub.ListCheckpoints,
                              pb.ListCheckpointsRequest(plan_id=plan_id, stage=stage))
        return [Checkpoint.from_proto(c) for c in response.checkpoints]

    def metrics(self, plan_id: str, stage: str = "") -> List[MetricPoint]:
        """The plan's run history (`loom metrics`): per step of each stage (of `stage` only, when
        given), by stage, step and attempt. The coordinator keeps at most its --history-points points
        per job, thinning older ones evenly; the newest is always there. NOT_FOUND for an unknown
        plan or stage."""
        response = self._call("metrics", self._stub.GetMetrics, pb.GetMetricsRequest(plan_id=plan_id, stage=stage))
        return [MetricPoint.from_proto(p) for p in response.points]

    def logs(self, plan_id: str, stage: str, rank: int = 0) -> bytes:
        """A rank's whole log (`loom logs`) of the stage's current or last attempt, read through the
        coordinator from the worker that holds it, 256 KiB a call."""
        data = b""
        offset = 0
        while True:
            response = self._call("logs", self._stub.ReadLog,
                                  pb.ReadLogRequest(plan_id=plan_id, stage=stage, rank=rank, offset=offset))
            data += response.data
            offset = response.offset + len(response.data)
            if offset >= response.size or not response.data:
                return data
