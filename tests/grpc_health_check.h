// grpc.health.v1.Health/Check of a whole server, for tests: one call over the given credentials,
// with no generated health stubs (the request, HealthCheckRequest{service: ""}, encodes to no bytes).
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace loom::testing {

struct HealthCheckResult {
  grpc::Status status;
  // The response's bytes: "\x08\x01" SERVING, "\x08\x02" NOT_SERVING; empty when the call failed.
  std::string bytes;
};

inline HealthCheckResult CheckHealth(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials,
                                     std::chrono::milliseconds deadline) {
  grpc::GenericStub generic(grpc::CreateChannel(address, std::move(credentials)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  grpc::Slice no_bytes("", 0);
  grpc::ByteBuffer request(&no_bytes, 1), reply;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &reply,
                    [&](grpc::Status st) { done.set_value(st); });
  HealthCheckResult result;
  result.status = done.get_future().get();
  std::vector<grpc::Slice> slices;
  if (result.status.ok() && reply.Dump(&slices).ok()) {
    for (const auto& s : slices) result.bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return result;
}

}  // namespace loom::testing
