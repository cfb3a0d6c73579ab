#include "worker/engine/parallel/process_groups.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace loom::engine {

absl::StatusOr<ProcessGroups> ProcessGroups::Join(const RankLayout& layout, const StoreOpener& open_store,
                                                  absl::Duration timeout, const std::string& host) {
  ProcessGroups groups;
  auto join = [&](const std::string& prefix, int rank, int size,
                  std::unique_ptr<Communicator>* group) -> absl::Status {
    if (size <= 1) return absl::OkStatus();
    if (!groups.store_) {
      LOOM_ASSIGN_OR_RETURN(groups.store_, open_store());
    }
    GlooOptions options;
    options.rank = rank;
    options.size = size;
    options.prefix = prefix;
    options.timeout = timeout;
    options.host = host;
    LOOM_ASSIGN_OR_RETURN(*group, NewGlooCommunicator(groups.store_.get(), options));
    Log(LogLevel::kInfo, "groups", "group ", prefix, ": rank ", rank, " of ", size, " on ", host, ", ",
        (*group)->transport());
    return absl::OkStatus();
  };
  // Each group's keys carry the coordinates its members share.
  LOOM_RETURN_IF_ERROR(join(absl::StrCat("tp", layout.dp_rank, "_", layout.pp_rank), layout.tp_rank, layout.tp,
                            &groups.tensor_));
  LOOM_RETURN_IF_ERROR(join(absl::StrCat("pp", layout.dp_rank, "_", layout.tp_rank), layout.pp_rank, layout.pp,
                            &groups.pipeline_));
  LOOM_RETURN_IF_ERROR(join(layout.model_parallel() ? absl::StrCat("dp", layout.pp_rank, "_", layout.tp_rank)
                                                    : std::string("dp"),
                            layout.dp_rank, layout.dp, &groups.data_));
  return groups;
}

}  // namespace loom::engine
