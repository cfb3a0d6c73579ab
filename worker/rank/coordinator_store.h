// The rendezvous store of a rank: the coordinator's RendezvousService, with every key under the
// job attempt's prefix (Assignment.rendezvous_prefix), so the ranks of one attempt meet without
// a shared filesystem and a new attempt never reads an old one's keys. Every call carries the
// attempt's prefix and secret (Assignment.rendezvous_secret): the coordinator refuses keys of
// another attempt, and every key once the attempt has ended.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/parallel/key_value_store.h"

namespace loom::worker {

// `secret`: the attempt's rendezvous secret, sent with every call, never logged.
// `tls_dir` / `tls_name`: mutual TLS with that identity (common/tls.h; the worker's, passed in
// LOOM_TLS_DIR / LOOM_TLS_NAME); an empty `tls_dir` dials without TLS. A TLS directory that cannot
// be used is an error naming the file.
absl::StatusOr<std::unique_ptr<engine::KeyValueStore>> NewCoordinatorKeyValueStore(const std::string& address,
                                                                                   const std::string& prefix,
                                                                                   const std::string& secret,
                                                                                   const std::string& tls_dir = "",
                                                                                   const std::string& tls_name = "");

}  // namespace loom::worker
