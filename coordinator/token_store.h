// Bearer tokens for CLI users without a client certificate (`loom tokens issue`). The coordinator
// keeps only each token's SHA-256 (with its name, role and creation time) in its RocksDB store
// under "tok/NAME", so a copy of the store grants nothing. Tokens are "loom_" + 64 hex digits from
// OpenSSL's RAND_bytes (256 bits): a hash without a salt is enough for values that random.
//
// Thread-safe: service threads authenticate while an admin issues or revokes.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/store.h"
#include "loom/v1/coordinator.pb.h"
#include "loom/v1/coordinator_store.pb.h"

namespace loom::coordinator {

class TokenStore {
 public:
  // Loads the tokens kept in `store` (which must outlive this). DATA_LOSS for a record that does
  // not parse.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Open(Store* store);

  // Makes a new random token for `name` with `role` (viewer, submitter or admin), stores its hash
  // durably and returns the token; the only time it exists outside the caller's hands.
  // INVALID_ARGUMENT for a bad role or name, ALREADY_EXISTS when `name` has a token.
  absl::StatusOr<std::string> Issue(const std::string& role, const std::string& name,
                                    const loom::v1::Principal& issued_by, int64_t now_ms,
                                    loom::v1::TokenInfo* info = nullptr);
  // NOT_FOUND for an unknown name.
  absl::Status Revoke(const std::string& name);
  // Every token's description, by name.
  std::vector<loom::v1::TokenInfo> List() const;
  // The token's holder, or nullopt for a token that is not (or no longer) valid. Compares the
  // SHA-256 with every stored one in constant time, so timing tells nothing about near misses.
  std::optional<loom::v1::TokenInfo> Authenticate(std::string_view token) const;

  static constexpr char kKeyPrefix[] = "tok/";
  static constexpr char kTokenPrefix[] = "loom_";

 private:
  explicit TokenStore(Store* store) : store_(store) {}
  Store* const store_;
  mutable absl::Mutex mu_;
  std::map<std::string, loom::v1::TokenRecord> by_name_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::coordinator
