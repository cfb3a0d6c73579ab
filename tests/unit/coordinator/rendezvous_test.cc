#include "coordinator/rendezvous.h"

#include <grpcpp/grpcpp.h>

#include <thread>

#include <gtest/gtest.h>

#include "coordinator/service.h"

namespace loom::coordinator {
namespace {

TEST(Rendezvous, SetGetAddAndDropPrefix) {
  RendezvousStore store;
  ASSERT_TRUE(store.Set("job#1/rank0", "addr0").ok());
  absl::StatusOr<std::vector<std::string>> got = store.Get({"job#1/rank0"}, absl::ZeroDuration());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0], "addr0");
  EXPECT_EQ(*store.Add("job#1/count", 1), 1);
  EXPECT_EQ(*store.Add("job#1/count", 2), 3);
  EXPECT_EQ(store.Add("job#1/rank0", 1).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(store.Set("job#2/rank0", "other").ok());
  store.DropPrefix("job#1/");
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.Set("", "x").code(), absl::StatusCode::kInvalidArgument);
}

TEST(Rendezvous, GetWaitsForAKeySetLaterAndTimesOutNamingTheMissingKey) {
  RendezvousStore store;
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(store.Set("p/b", "2").ok());
  });
  ASSERT_TRUE(store.Set("p/a", "1").ok());
  absl::StatusOr<std::vector<std::string>> got = store.Get({"p/a", "p/b"}, absl::Seconds(5));
  setter.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[1], "2");
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<std::string>> missing = store.Get({"p/a", "p/never"}, absl::Milliseconds(100));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(missing.status().message().find("p/never"), std::string::npos);
}

TEST(Rendezvous, ServedOverGrpc) {
  RendezvousStore store;
  RendezvousServiceImpl service(&store);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  auto stub = loom::v1::RendezvousService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(5); };
  {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousSetRequest r;
    r.set_key("j#1/id");
    r.set_value(std::string("\0nccl", 5));
    loom::v1::RendezvousSetResponse out;
    ASSERT_TRUE(stub->Set(&c, r, &out).ok());
  }
  {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousGetRequest r;
    r.add_keys("j#1/id");
    r.set_wait_ms(1000);
    loom::v1::RendezvousGetResponse out;
    ASSERT_TRUE(stub->Get(&c, r, &out).ok());
    EXPECT_EQ(out.values(0), std::string("\0nccl", 5));
  }
  {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousGetRequest r;
    r.add_keys("j#1/absent");
    r.set_wait_ms(50);
    loom::v1::RendezvousGetResponse out;
    EXPECT_EQ(stub->Get(&c, r, &out).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousAddRequest r;
    r.set_key("j#1/n");
    r.set_delta(5);
    loom::v1::RendezvousAddResponse out;
    ASSERT_TRUE(stub->Add(&c, r, &out).ok());
    EXPECT_EQ(out.value(), 5);
  }
  server->Shutdown();
}

}  // namespace
}  // namespace loom::coordinator
