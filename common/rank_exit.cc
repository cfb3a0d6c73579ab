#include "common/rank_exit.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace loom {

namespace {
constexpr char kResumeCheckpointBad[] = "loom.dev/resume-checkpoint-bad";
constexpr char kPreempted[] = "loom.dev/preempted";
}  // namespace

absl::Status ResumeCheckpointBad(absl::Status status) {
  if (status.code() == absl::StatusCode::kDataLoss || status.code() == absl::StatusCode::kNotFound) {
    status.SetPayload(kResumeCheckpointBad, absl::Cord("1"));
  }
  return status;
}

absl::Status Preempted(int64_t step) {
  absl::Status status = absl::UnavailableError(
      absl::StrCat("stopped on request after the checkpoint at step ", step, " (the worker is drained)"));
  status.SetPayload(kPreempted, absl::Cord("1"));
  return status;
}

int RankExitCodeFor(const absl::Status& status) {
  if (status.GetPayload(kResumeCheckpointBad).has_value()) return kRankExitResumeCheckpointBad;
  if (status.GetPayload(kPreempted).has_value()) return kRankExitPreempted;
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
      return kRankExitInputMissing;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return kRankExitConfigRejected;
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
      return kRankExitTransient;
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kResourceExhausted:
      return kRankExitIoError;
    default:
      return kRankExitFailed;
  }
}

}  // namespace loom
