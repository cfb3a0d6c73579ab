#include "coordinator/rendezvous.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom::coordinator {

std::string NewRendezvousSecret() {
  std::string secret(RendezvousStore::kSecretBytes, '\0');
  // Without randomness there is no secret worth the name: better to stop than to hand out a
  // guessable one.
  if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()), static_cast<int>(secret.size())) != 1) std::abort();
  return secret;
}

absl::Status RendezvousStore::CheckKey(const std::string& key) const {
  if (key.empty()) return absl::InvalidArgumentError("rendezvous key is empty");
  if (key.size() > kMaxKeyBytes)
    return absl::InvalidArgumentError(absl::StrCat("rendezvous key over ", kMaxKeyBytes, " bytes"));
  return absl::OkStatus();
}

absl::Status RendezvousStore::OpenAttempt(const std::string& prefix, const std::string& secret) {
  if (prefix.empty() || prefix.back() != '/')
    return absl::InvalidArgumentError(absl::StrCat("rendezvous prefix '", prefix, "' does not end in '/'"));
  if (secret.size() != kSecretBytes)
    return absl::InvalidArgumentError(absl::StrCat("rendezvous secret of '", prefix, "' is ", secret.size(),
                                                   " bytes, not ", kSecretBytes));
  absl::MutexLock lock(&mu_);
  Attempt& attempt = attempts_[prefix];
  attempt.secret = secret;
  // Keys set before it opened (the lease, after a restart) count from now on.
  attempt.keys = attempt.bytes = 0;
  for (auto it = values_.lower_bound(prefix); it != values_.end() && absl::StartsWith(it->first, prefix); ++it) {
    ++attempt.keys;
    attempt.bytes += it->first.size() + it->second.size();
  }
  return absl::OkStatus();
}

void RendezvousStore::CloseAttempt(const std::string& prefix) {
  absl::MutexLock lock(&mu_);
  for (auto it = values_.lower_bound(prefix); it != values_.end() && absl::StartsWith(it->first, prefix);) {
    it = values_.erase(it);
  }
  for (auto it = attempts_.lower_bound(prefix); it != attempts_.end() && absl::StartsWith(it->first, prefix);) {
    OPENSSL_cleanse(it->second.secret.data(), it->second.secret.size());
    it = attempts_.erase(it);
  }
}

bool RendezvousStore::HasAttempt(const std::string& prefix) const {
  absl::MutexLock lock(&mu_);
  return attempts_.contains(prefix);
}

std::pair<size_t, size_t> RendezvousStore::AttemptUsage(const std::string& prefix) const {
  absl::MutexLock lock(&mu_);
  auto it = attempts_.find(prefix);
  if (it == attempts_.end()) return {0, 0};
  return {it->second.keys, it->second.bytes};
}

absl::Status RendezvousStore::Authenticate(const Credential& caller, const std::vector<std::string>& keys) const {
  // The messages name the attempt, never the secret.
  if (caller.prefix.empty() || caller.secret.empty()) {
    return absl::PermissionDeniedError(
        "rendezvous call without an attempt and its secret (RendezvousAttempt: the assignment's "
        "rendezvous_prefix and rendezvous_secret)");
  }
  auto it = attempts_.find(caller.prefix);
  const bool match = it != attempts_.end() && caller.secret.size() == it->second.secret.size() &&
                     CRYPTO_memcmp(caller.secret.data(), it->second.secret.data(), caller.secret.size()) == 0;
  if (!match) {
    return absl::PermissionDeniedError(absl::StrCat("rendezvous attempt '", caller.prefix,
                                                    "' is not open or its secret is wrong (an attempt's keys are "
                                                    "usable only by its own ranks, and only while it runs)"));
  }
  for (const std::string& key : keys) {
    if (!absl::StartsWith(key, caller.prefix)) {
      return absl::PermissionDeniedError(
          absl::StrCat("rendezvous key '", key, "' is outside the attempt's prefix '", caller.prefix, "'"));
    }
  }
  return absl::OkStatus();
}

RendezvousStore::Attempt* RendezvousStore::AttemptOf(const std::string& key) {
  // Prefixes end in '/': try each '/'-ended head of the key, shortest first.
  for (size_t slash = key.find('/'); slash != std::string::npos; slash = key.find('/', slash + 1)) {
    auto it = attempts_.find(key.substr(0, slash + 1));
    if (it != attempts_.end()) return &it->second;
  }
  return nullptr;
}

absl::Status RendezvousStore::Store(const std::string& key, std::string value) {
  auto old = values_.find(key);
  if (values_.size() >= kMaxKeys && old == values_.end()) {
    return absl::ResourceExhaustedError(absl::StrCat("rendezvous store holds ", kMaxKeys, " keys"));
  }
  if (Attempt* attempt = AttemptOf(key)) {
    const size_t old_bytes = old == values_.end() ? 0 : key.size() + old->second.size();
    const size_t keys = attempt->keys + (old == values_.end() ? 1 : 0);
    const size_t bytes = attempt->bytes - old_bytes + key.size() + value.size();
    if (keys > kMaxKeysPerAttempt) {
      return absl::ResourceExhaustedError(absl::StrCat("rendezvous: the attempt holds its limit of ",
                                                       kMaxKeysPerAttempt, " keys; '", key, "' not set"));
    }
    if (bytes > kMaxBytesPerAttempt) {
      return absl::ResourceExhaustedError(absl::StrCat("rendezvous: the attempt's keys and values would take ",
                                                       bytes, " bytes, over its limit of ", kMaxBytesPerAttempt,
                                                       "; '", key, "' not set"));
    }
    attempt->keys = keys;
    attempt->bytes = bytes;
  }
  values_[key] = std::move(value);
  return absl::OkStatus();
}

absl::Status RendezvousStore::Set(const std::string& key, std::string value) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous value of '", key, "' over ", kMaxValueBytes, " bytes"));
  }
  absl::MutexLock lock(&mu_);
  return Store(key, std::move(value));
}

absl::Status RendezvousStore::Set(const Credential& caller, const std::string& key, std::string value) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous value of '", key, "' over ", kMaxValueBytes, " bytes"));
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Authenticate(caller, {key}); !s.ok()) return s;
  return Store(key, std::move(value));
}

absl::StatusOr<std::vector<std::string>> RendezvousStore::Wait(const std::vector<std::string>& keys,
                                                               absl::Duration wait, const std::string* prefix) {
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (prefix != nullptr && !attempts_.contains(*prefix)) return true;  // it ended meanwhile
    for (const std::string& key : keys) {
      if (!values_.contains(key)) return false;
    }
    return true;
  };
  mu_.AwaitWithTimeout(absl::Condition(&done), wait);
  if (prefix != nullptr && !attempts_.contains(*prefix)) {
    return absl::PermissionDeniedError(absl::StrCat("rendezvous attempt '", *prefix, "' ended"));
  }
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

absl::StatusOr<std::vector<std::string>> RendezvousStore::Get(const std::vector<std::string>& keys,
                                                              absl::Duration wait) {
  for (const std::string& key : keys) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
  }
  absl::MutexLock lock(&mu_);
  return Wait(keys, wait, nullptr);
}

absl::StatusOr<std::vector<std::string>> RendezvousStore::Get(const Credential& caller,
                                                              const std::vector<std::string>& keys,
                                                              absl::Duration wait) {
  for (const std::string& key : keys) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Authenticate(caller, keys); !s.ok()) return s;
  return Wait(keys, wait, &caller.prefix);
}

absl::StatusOr<int64_t> RendezvousStore::AddLocked(const std::string& key, int64_t delta) {
  int64_t value = 0;
  auto it = values_.find(key);
  if (it != values_.end() && !absl::SimpleAtoi(it->second, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous key '", key, "' holds a value that is not an integer"));
  }
  if (__builtin_add_overflow(value, delta, &value)) {
    return absl::OutOfRangeError(absl::StrCat("rendezvous key '", key, "': adding ", delta, " overflows"));
  }
  if (absl::Status s = Store(key, absl::StrCat(value)); !s.ok()) return s;
  return value;
}

absl::StatusOr<int64_t> RendezvousStore::Add(const std::string& key, int64_t delta) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  return AddLocked(key, delta);
}

absl::StatusOr<int64_t> RendezvousStore::Add(const Credential& caller, const std::string& key, int64_t delta) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Authenticate(caller, {key}); !s.ok()) return s;
  return AddLocked(key, delta);
}

size_t RendezvousStore::size() const {
  absl::MutexLock lock(&mu_);
  return values_.size();
}

}  // namespace loom::coordinator
