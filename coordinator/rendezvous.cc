#include "coordinator/rendezvous.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom::coordinator {

absl::Status RendezvousStore::CheckKey(const std::string& key) const {
  if (key.empty()) return absl::InvalidArgumentError("rendezvous key is empty");
  if (key.size() > kMaxKeyBytes)
    return absl::InvalidArgumentError(absl::StrCat("rendezvous key over ", kMaxKeyBytes, " bytes"));
  return absl::OkStatus();
}

absl::Status RendezvousStore::Set(const std::string& key, std::string value) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous value of '", key, "' over ", kMaxValueBytes, " bytes"));
  }
  absl::MutexLock lock(&mu_);
  if (values_.size() >= kMaxKeys && !values_.contains(key)) {
    return absl::ResourceExhaustedError(absl::StrCat("rendezvous store holds ", kMaxKeys, " keys"));
  }
  values_[key] = std::move(value);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> RendezvousStore::Get(const std::vector<std::string>& keys,
                                                              absl::Duration wait) {
  for (const std::string& key : keys) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
  }
  absl::MutexLock lock(&mu_);
  auto all_present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const std::string& key : keys) {
      if (!values_.contains(key)) return false;
    }
    return true;
  };
  mu_.AwaitWithTimeout(absl::Condition(&all_present), wait);
  std::vector<std::string> out;
  for (const std::string& key : keys) {
    auto it = values_.find(key);
    if (it == values_.end()) {
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous key '", key, "' was not set within ", absl::FormatDuration(wait)));
    }
    out.push_back(it->second);
  }
  return out;
}

absl::StatusOr<int64_t> RendezvousStore::Add(const std::string& key, int64_t delta) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  int64_t value = 0;
  auto it = values_.find(key);
  if (it != values_.end() && !absl::SimpleAtoi(it->second, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous key '", key, "' holds a value that is not an integer"));
  }
  if (it == values_.end() && values_.size() >= kMaxKeys) {
    return absl::ResourceExhaustedError(absl::StrCat("rendezvous store holds ", kMaxKeys, " keys"));
  }
  value += delta;
  values_[key] = absl::StrCat(value);
  return value;
}

void RendezvousStore::DropPrefix(const std::string& prefix) {
  absl::MutexLock lock(&mu_);
  for (auto it = values_.lower_bound(prefix);
       it != values_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
    it = values_.erase(it);
  }
}

size_t RendezvousStore::size() const {
  absl::MutexLock lock(&mu_);
  return values_.size();
}

}  // namespace loom::coordinator
