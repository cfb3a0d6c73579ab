#include "worker/rank/coordinator_store.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/tls.h"
#include "loom/v1/coordinator.grpc.pb.h"

namespace loom::worker {
namespace {

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

class CoordinatorKeyValueStore : public engine::KeyValueStore {
 public:
  CoordinatorKeyValueStore(std::string address, std::string prefix, const std::string& secret,
                           std::shared_ptr<grpc::ChannelCredentials> credentials)
      : address_(std::move(address)),
        prefix_(std::move(prefix)),
        stub_(loom::v1::RendezvousService::NewStub(grpc::CreateChannel(address_, credentials))) {
    attempt_.set_prefix(prefix_);
    attempt_.set_secret(secret);
  }

  absl::Status Set(const std::string& key, const std::string& value) override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    loom::v1::RendezvousSetRequest request;
    request.set_key(Key(key));
    request.set_value(value);
    *request.mutable_attempt() = attempt_;
    loom::v1::RendezvousSetResponse response;
    return FromGrpc(stub_->Set(&context, request, &response),
                    absl::StrCat("rendezvous set '", key, "' at ", address_));
  }

  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout + absl::Seconds(5)));
    loom::v1::RendezvousGetRequest request;
    request.add_keys(Key(key));
    request.set_wait_ms(absl::ToInt64Milliseconds(timeout));
    *request.mutable_attempt() = attempt_;
    loom::v1::RendezvousGetResponse response;
    absl::Status s = FromGrpc(stub_->Get(&context, request, &response),
                              absl::StrCat("rendezvous get '", key, "' at ", address_));
    if (!s.ok()) return s;
    if (response.values_size() != 1) return absl::InternalError("rendezvous get: malformed answer");
    return response.values(0);
  }

 private:
  std::string Key(const std::string& key) const { return absl::StrCat(prefix_, "/", key); }
  std::string address_, prefix_;
  loom::v1::RendezvousAttempt attempt_;
  std::unique_ptr<loom::v1::RendezvousService::Stub> stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<engine::KeyValueStore>> NewCoordinatorKeyValueStore(
    const std::string& address, const std::string& prefix, const std::string& secret, const std::string& tls_dir,
    const std::string& tls_name) {
  if (address.empty()) return absl::InvalidArgumentError("no coordinator address for the rendezvous store");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = ClientCredentials(tls_dir, tls_name);
  if (!credentials.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("rendezvous store: TLS directory ", tls_dir, ": ", credentials.status().message()));
  }
  return std::unique_ptr<engine::KeyValueStore>(new CoordinatorKeyValueStore(address, prefix, secret, *credentials));
}

}  // namespace loom::worker
