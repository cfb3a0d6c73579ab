#include "coordinator/token_store.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sha256.h"

namespace loom::coordinator {
namespace {

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Open(Store* store) {
  std::unique_ptr<TokenStore> tokens(new TokenStore(store));
  absl::Status parse = absl::OkStatus();
  absl::MutexLock lock(&tokens->mu_);
  absl::Status scan = store->Scan(kKeyPrefix, [&](std::string_view key, std::string_view value) {
    loom::v1::TokenRecord record;
    if (!record.ParseFromArray(value.data(), static_cast<int>(value.size())) ||
        record.sha256().size() != 64) {
      parse =
          absl::DataLossError(absl::StrCat("coordinator store: token record '",
                                           absl::string_view(key.data(), key.size()), "' does not parse"));
      return false;
    }
    tokens->by_name_[record.info().name()] = std::move(record);
    return true;
  });
  if (!scan.ok()) return scan;
  if (!parse.ok()) return parse;
  return tokens;
}

absl::StatusOr<std::string> TokenStore::Issue(const std::string& role, const std::string& name,
                                              const loom::v1::Principal& issued_by, int64_t now_ms,
                                              loom::v1::TokenInfo* info) {
  if (role != "viewer" && role != "submitter" && role != "admin") {
    return absl::InvalidArgumentError(absl::StrCat("token role '", role,
                                                   "': use viewer, submitter or admin (workers and ranks "
                                                   "authenticate with certificates only)"));
  }
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token name '", name, "': use 1 to 64 letters, digits, '.', '_' or '-'"));
  }
  unsigned char random[32];
  if (RAND_bytes(random, sizeof(random)) != 1) {
    return absl::InternalError("RAND_bytes failed: no randomness for a token");
  }
  std::string token = absl::StrCat(kTokenPrefix, absl::BytesToHexString(absl::string_view(
                                                     reinterpret_cast<const char*>(random), sizeof(random))));
  OPENSSL_cleanse(random, sizeof(random));
  loom::v1::TokenRecord record;
  record.mutable_info()->set_name(name);
  record.mutable_info()->set_role(role);
  record.mutable_info()->set_created_ms(now_ms);
  *record.mutable_info()->mutable_issued_by() = issued_by;
  record.set_sha256(Sha256Hex(token));

  absl::MutexLock lock(&mu_);
  if (by_name_.count(name) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("a token named '", name, "' exists; revoke it first (loom tokens revoke ", name, ")"));
  }
  Store::RawWrite write;
  write.puts.emplace_back(absl::StrCat(kKeyPrefix, name), record.SerializeAsString());
  write.sync = true;
  if (absl::Status s = store_->WriteRaw(write); !s.ok()) return s;
  if (info != nullptr) *info = record.info();
  by_name_[name] = std::move(record);
  return token;
}

absl::Status TokenStore::Revoke(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (by_name_.count(name) == 0) {
    return absl::NotFoundError(absl::StrCat("no token named '", name, "' (loom tokens list shows them)"));
  }
  Store::RawWrite write;
  write.deletes.push_back(absl::StrCat(kKeyPrefix, name));
  write.sync = true;
  if (absl::Status s = store_->WriteRaw(write); !s.ok()) return s;
  by_name_.erase(name);
  return absl::OkStatus();
}

std::vector<loom::v1::TokenInfo> TokenStore::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<loom::v1::TokenInfo> out;
  for (const auto& [name, record] : by_name_) out.push_back(record.info());
  return out;
}

std::optional<loom::v1::TokenInfo> TokenStore::Authenticate(std::string_view token) const {
  const std::string digest = Sha256Hex(token);
  absl::MutexLock lock(&mu_);
  std::optional<loom::v1::TokenInfo> found;
  // Every record is compared, whatever matched before.
  for (const auto& [name, record] : by_name_) {
    if (record.sha256().size() == digest.size() &&
        CRYPTO_memcmp(record.sha256().data(), digest.data(), digest.size()) == 0) {
      found = record.info();
    }
  }
  return found;
}

}  // namespace loom::coordinator
