"""LoomError: a failed call to the coordinator, with the plan's field paths when the plan was refused."""

import dataclasses
import re
from typing import List, Optional

import grpc

# A field path as the plan validator writes it: `stages[1].batch_ramp[2].at_tokens`, map keys as
# `.key` or `["odd key"]` (common/plan_error.h).
_PATH = r'[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+|\[\d+\]|\["[^"]*"\])*'
_LINE = re.compile(r"^(?:(\d+):(\d+):)?\s*(?:(" + _PATH + r"): )?(.*?)(?: \(hint: (.*)\))?$")


@dataclasses.dataclass(frozen=True)
class PlanError:
    """One problem the coordinator found in a plan (common/plan_error.h)."""
    path: str          # field path, e.g. "stages[1].tokens"; "" for the whole plan (a YAML syntax error)
    message: str       # what is wrong
    hint: str = ""     # how to fix it
    line: int = 0      # 1-based position in the plan text, 0 when unknown
    column: int = 0


class LoomError(Exception):
    """A coordinator call failed.

    `code` is the gRPC status code (grpc.StatusCode.INVALID_ARGUMENT for a refused plan,
    NOT_FOUND for an unknown plan or worker, UNAVAILABLE when the coordinator cannot be reached,
    DEADLINE_EXCEEDED when it did not answer in time). For a refused plan, `errors` lists every
    problem and `field_path` is the first one's path ("" when the coordinator named none).
    """

    def __init__(self, code: grpc.StatusCode, message: str, errors: Optional[List[PlanError]] = None,
                 call: str = ""):
        self.code = code
        self.message = message
        self.errors: List[PlanError] = list(errors or [])
        self.field_path = self.errors[0].path if self.errors else ""
        self.call = call
        where = f"{call}: " if call else ""
        super().__init__(f"{where}{code.name}: {message}")


def parse_plan_errors(message: str, source: str) -> List[PlanError]:
    """The errors of an INVALID_ARGUMENT message: "N errors in SOURCE:" then one error per line,
    each "SOURCE:LINE:COL: PATH: MESSAGE (hint: HINT)" (common/plan_error.cc)."""
    lines = message.split("\n")
    if not re.match(r"^\d+ errors?( in .*)?:$", lines[0]):
        return []
    errors = []
    for line in lines[1:]:
        if not line:
            continue
        if source and line.startswith(source + ":"):
            line = line[len(source) + 1:]
        match = _LINE.match(line)
        if match is None:  # cannot happen: every part of the pattern is optional but the message
            errors.append(PlanError(path="", message=line))
            continue
        row, col, path, text, hint = match.groups()
        errors.append(PlanError(path=path or "", message=text, hint=hint or "",
                                line=int(row or 0), column=int(col or 0)))
    return errors


def from_rpc_error(error: grpc.RpcError, call: str, source: str = "") -> LoomError:
    """A LoomError for a failed gRPC call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    message = message or ""
    errors = parse_plan_errors(message, source) if code == grpc.StatusCode.INVALID_ARGUMENT else []
    return LoomError(code, message, errors, call)
