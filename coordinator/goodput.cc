#include "coordinator/goodput.h"

#include <algorithm>

namespace loom::coordinator {
namespace {

double Seconds(int64_t from_ms, int64_t to_ms) { return std::max<int64_t>(0, to_ms - from_ms) / 1000.0; }

// Phase time a report adds to the one before it (never negative: a rank's counters only grow,
// and a report from a restarted rank starts a new baseline).
double Delta(double now, double before) { return std::max(0.0, now - before); }

}  // namespace

const char* GoodputBucketName(GoodputBucket bucket) {
  switch (bucket) {
    case GoodputBucket::kQueued: return "queued";
    case GoodputBucket::kPlacement: return "placement_and_rendezvous";
    case GoodputBucket::kStartup: return "startup_and_load";
    case GoodputBucket::kDataWait: return "data_wait";
    case GoodputBucket::kProductive: return "productive";
    case GoodputBucket::kCommunication: return "communication";
    case GoodputBucket::kCheckpointSave: return "checkpoint_save";
    case GoodputBucket::kEvaluation: return "evaluation";
    case GoodputBucket::kFailureDetection: return "failure_detection";
    case GoodputBucket::kRecovery: return "recovery";
    case GoodputBucket::kWastedProgress: return "wasted_progress";
    case GoodputBucket::kElasticReshape: return "elastic_reshape";
    case GoodputBucket::kOther: return "other";
  }
  return "other";
}

GoodputLedger::GoodputLedger(int64_t ready_ms) : last_ms_(ready_ms) {}

GoodputLedger GoodputLedger::Restore(const loom::v1::Goodput& saved, loom::v1::JobState state) {
  GoodputLedger ledger(saved.accounted_ms());
  for (int b = 0; b < kGoodputBuckets; ++b) {
    auto it = saved.seconds().find(GoodputBucketName(static_cast<GoodputBucket>(b)));
    if (it != saved.seconds().end()) ledger.seconds_[b] = it->second;
  }
  // The split of the uncommitted time by step is not kept: it commits (as productive) or is
  // wasted as a whole.
  if (saved.uncommitted_seconds() > 0) ledger.pending_.push_back({-1, 0, saved.uncommitted_seconds(), 0});
  switch (state) {
    case loom::v1::JOB_STATE_PENDING:
      ledger.open_ = static_cast<int>(GoodputBucket::kQueued);
      break;
    case loom::v1::JOB_STATE_RECOVERING:
      ledger.open_ = static_cast<int>(GoodputBucket::kRecovery);
      ledger.recovering_ = true;
      break;
    default:  // an attempt placed or running: its ranks' counters are not known yet
      ledger.open_ = static_cast<int>(GoodputBucket::kOther);
      break;
  }
  return ledger;
}

void GoodputLedger::Charge(GoodputBucket bucket, double seconds) {
  seconds_[static_cast<int>(bucket)] += std::max(0.0, seconds);
}

void GoodputLedger::Close(int64_t now_ms) {
  const double s = Seconds(last_ms_, now_ms);
  if (open_ == kUncommitted) {
    // Time after the last report of a running attempt that no report accounts for.
    Charge(GoodputBucket::kOther, s);
  } else {
    Charge(static_cast<GoodputBucket>(open_), s);
  }
  last_ms_ = std::max(last_ms_, now_ms);
}

void GoodputLedger::Placed(int64_t now_ms, int world_size) {
  if (ended_) return;
  Close(now_ms);
  const bool layout_changed = world_size_ > 0 && world_size != world_size_;
  world_size_ = world_size;
  if (recovering_) {
    recovery_bucket_ = layout_changed ? GoodputBucket::kElasticReshape : GoodputBucket::kRecovery;
    open_ = static_cast<int>(recovery_bucket_);
  } else {
    open_ = static_cast<int>(GoodputBucket::kPlacement);
  }
  before_first_report_ = true;
  have_baseline_ = false;
}

void GoodputLedger::Progress(int64_t now_ms, int64_t step, const loom::v1::RankTime& t) {
  if (ended_) return;
  const double wall = Seconds(last_ms_, now_ms);
  if (!before_first_report_ && !have_baseline_ && open_ != static_cast<int>(GoodputBucket::kQueued)) {
    // The first report seen of an attempt placed before a restart: its counters cover time this
    // ledger already accounted. It only sets the baseline.
    Close(now_ms);
    baseline_ = t;
    have_baseline_ = true;
    open_ = kUncommitted;
    return;
  }
  loom::v1::RankTime before;
  if (have_baseline_) before = baseline_;
  double rendezvous = Delta(t.rendezvous_seconds(), before.rendezvous_seconds());
  double load = Delta(t.load_seconds(), before.load_seconds());
  double data = Delta(t.data_wait_seconds(), before.data_wait_seconds());
  double compute = Delta(t.compute_seconds(), before.compute_seconds());
  double communication = Delta(t.communication_seconds(), before.communication_seconds());
  double save = Delta(t.checkpoint_save_seconds(), before.checkpoint_save_seconds());
  double evaluation = Delta(t.evaluation_seconds(), before.evaluation_seconds());
  const double accounted = rendezvous + load + data + compute + communication + save + evaluation;
  if (accounted > wall && accounted > 0) {
    // The rank's clock and the coordinator's disagree a little (the report's latency): the wall
    // time is what is split.
    const double scale = wall / accounted;
    for (double* v : {&rendezvous, &load, &data, &compute, &communication, &save, &evaluation}) *v *= scale;
  }
  const double rest = std::max(0.0, wall - (rendezvous + load + data + compute + communication + save + evaluation));
  if (before_first_report_) {
    const GoodputBucket placement = recovering_ ? recovery_bucket_ : GoodputBucket::kPlacement;
    const GoodputBucket startup = recovering_ ? recovery_bucket_ : GoodputBucket::kStartup;
    Charge(placement, rest + rendezvous);
    Charge(startup, load);
    before_first_report_ = false;
    recovering_ = false;
  } else {
    Charge(GoodputBucket::kOther, rest);
    Charge(GoodputBucket::kPlacement, rendezvous);
    Charge(GoodputBucket::kStartup, load);
  }
  Charge(GoodputBucket::kCheckpointSave, save);
  Charge(GoodputBucket::kEvaluation, evaluation);
  if (!pending_.empty() && pending_.back().step == step) {
    pending_.back().data_wait += data;
    pending_.back().compute += compute;
    pending_.back().communication += communication;
  } else {
    pending_.push_back({step, data, compute, communication});
  }
  baseline_ = t;
  have_baseline_ = true;
  last_ms_ = std::max(last_ms_, now_ms);
  open_ = kUncommitted;
}

void GoodputLedger::Committed(int64_t step) {
  auto safe = std::stable_partition(pending_.begin(), pending_.end(),
                                    [step](const PendingStep& p) { return p.step <= step; });
  for (auto it = pending_.begin(); it != safe; ++it) {
    Charge(GoodputBucket::kDataWait, it->data_wait);
    Charge(GoodputBucket::kProductive, it->compute);
    Charge(GoodputBucket::kCommunication, it->communication);
  }
  pending_.erase(pending_.begin(), safe);
}

double GoodputLedger::PendingSeconds() const {
  double s = 0;
  for (const PendingStep& p : pending_) s += p.data_wait + p.compute + p.communication;
  return s;
}

void GoodputLedger::DropPending() {
  Charge(GoodputBucket::kWastedProgress, PendingSeconds());
  pending_.clear();
}

void GoodputLedger::Failed(int64_t now_ms, int64_t failed_at_ms) {
  if (ended_) return;
  const int64_t failed_at = std::clamp(failed_at_ms, last_ms_, std::max(last_ms_, now_ms));
  // Until the failure: a step in flight is lost with the attempt; anything else stays what it was.
  Charge(open_ == kUncommitted ? GoodputBucket::kWastedProgress : static_cast<GoodputBucket>(open_),
         Seconds(last_ms_, failed_at));
  Charge(GoodputBucket::kFailureDetection, Seconds(failed_at, now_ms));
  last_ms_ = std::max(last_ms_, now_ms);
  DropPending();
  recovering_ = true;
  recovery_bucket_ = GoodputBucket::kRecovery;
  open_ = static_cast<int>(GoodputBucket::kRecovery);
  before_first_report_ = false;
  have_baseline_ = false;
}

void GoodputLedger::Ended(int64_t now_ms, bool succeeded, double final_save_seconds) {
  if (ended_) return;
  if (succeeded) {
    if (open_ == kUncommitted) {
      const double tail = Seconds(last_ms_, now_ms);
      const double save = std::clamp(final_save_seconds, 0.0, tail);
      Charge(GoodputBucket::kCheckpointSave, save);
      Charge(GoodputBucket::kOther, tail - save);
      last_ms_ = std::max(last_ms_, now_ms);
    } else {
      Close(now_ms);
    }
    Committed(INT64_MAX);
  } else {
    if (open_ == kUncommitted) open_ = static_cast<int>(GoodputBucket::kWastedProgress);
    Close(now_ms);
    DropPending();
  }
  ended_ = true;
}

loom::v1::Goodput GoodputLedger::ToProto(const std::array<double, kGoodputBuckets>& seconds, double uncommitted,
                                         int64_t accounted_ms) const {
  loom::v1::Goodput g;
  double wall = uncommitted;
  for (int b = 0; b < kGoodputBuckets; ++b) {
    (*g.mutable_seconds())[GoodputBucketName(static_cast<GoodputBucket>(b))] = seconds[b];
    wall += seconds[b];
  }
  g.set_uncommitted_seconds(uncommitted);
  g.set_wall_seconds(wall);
  g.set_ratio(wall > 0 ? seconds[static_cast<int>(GoodputBucket::kProductive)] / wall : 0);
  g.set_accounted_ms(accounted_ms);
  return g;
}

loom::v1::Goodput GoodputLedger::Closed() const { return ToProto(seconds_, PendingSeconds(), last_ms_); }

loom::v1::Goodput GoodputLedger::Snapshot(int64_t now_ms) const {
  if (ended_) return Closed();
  std::array<double, kGoodputBuckets> seconds = seconds_;
  double uncommitted = PendingSeconds();
  const double open = Seconds(last_ms_, now_ms);
  if (open_ == kUncommitted) {
    uncommitted += open;
  } else {
    seconds[open_] += open;
  }
  return ToProto(seconds, uncommitted, std::max(last_ms_, now_ms));
}

}  // namespace loom::coordinator
