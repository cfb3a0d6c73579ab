#include "coordinator/rendezvous.h"

#include <grpcpp/grpcpp.h>

#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

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
  const std::string secret = NewRendezvousSecret();
  ASSERT_TRUE(store.OpenAttempt("j#1/", secret).ok());
  loom::v1::RendezvousAttempt attempt;
  attempt.set_prefix("j#1/");
  attempt.set_secret(secret);
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
    *r.mutable_attempt() = attempt;
    loom::v1::RendezvousSetResponse out;
    ASSERT_TRUE(stub->Set(&c, r, &out).ok());
  }
  {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousGetRequest r;
    r.add_keys("j#1/id");
    r.set_wait_ms(1000);
    *r.mutable_attempt() = attempt;
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
    *r.mutable_attempt() = attempt;
    loom::v1::RendezvousGetResponse out;
    EXPECT_EQ(stub->Get(&c, r, &out).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousAddRequest r;
    r.set_key("j#1/n");
    r.set_delta(5);
    *r.mutable_attempt() = attempt;
    loom::v1::RendezvousAddResponse out;
    ASSERT_TRUE(stub->Add(&c, r, &out).ok());
    EXPECT_EQ(out.value(), 5);
  }
  // Without the attempt's secret, or with another's: PERMISSION_DENIED, nothing read or written.
  for (const std::string& wrong : {std::string(), std::string(RendezvousStore::kSecretBytes, 'x')}) {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousSetRequest r;
    r.set_key("j#1/id");
    r.set_value("forged");
    r.mutable_attempt()->set_prefix("j#1/");
    r.mutable_attempt()->set_secret(wrong);
    loom::v1::RendezvousSetResponse out;
    EXPECT_EQ(stub->Set(&c, r, &out).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext c;
    c.set_deadline(deadline());
    loom::v1::RendezvousGetRequest r;
    r.add_keys("j#1/id");
    loom::v1::RendezvousGetResponse out;
    EXPECT_EQ(stub->Get(&c, r, &out).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ((*store.Get({"j#1/id"}, absl::ZeroDuration()))[0], std::string("\0nccl", 5));
  server->Shutdown();
}

TEST(Rendezvous, AnAttemptReachesOnlyItsOwnKeysWithItsOwnSecret) {
  RendezvousStore store;
  const RendezvousStore::Credential one{"job#1/", NewRendezvousSecret()};
  const RendezvousStore::Credential two{"job#2/", NewRendezvousSecret()};
  ASSERT_NE(one.secret, two.secret);
  EXPECT_EQ(one.secret.size(), RendezvousStore::kSecretBytes);
  ASSERT_TRUE(store.OpenAttempt(one.prefix, one.secret).ok());
  ASSERT_TRUE(store.OpenAttempt(two.prefix, two.secret).ok());
  ASSERT_TRUE(store.Set(one, "job#1//addr0", "a").ok());
  ASSERT_TRUE(store.Set(two, "job#2//addr0", "b").ok());
  // Attempt 2's ranks, with their own good secret, name attempt 1's keys: refused.
  EXPECT_EQ(store.Get(two, {"job#1//addr0"}, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store.Set(two, "job#1//addr0", "forged").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store.Add(two, "job#1//count", 1).status().code(), absl::StatusCode::kPermissionDenied);
  // Attempt 1's prefix with attempt 2's secret: refused.
  const RendezvousStore::Credential mixed{one.prefix, two.secret};
  EXPECT_EQ(store.Get(mixed, {"job#1//addr0"}, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kPermissionDenied);
  // A secret of the right length but one byte off, a short one, none.
  std::string off = one.secret;
  off.back() ^= 1;
  for (const std::string& secret : {off, one.secret.substr(0, 16), std::string()}) {
    EXPECT_EQ(store.Set({one.prefix, secret}, "job#1//addr0", "x").code(), absl::StatusCode::kPermissionDenied);
  }
  // A prefix that is not an open attempt.
  EXPECT_EQ(store.Set({"job#3/", one.secret}, "job#3//k", "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*store.Get(one, {"job#1//addr0"}, absl::ZeroDuration()))[0], "a");
  EXPECT_EQ(*store.Add(one, "job#1//count", 2), 2);
  // The secret must be kSecretBytes long.
  EXPECT_EQ(store.OpenAttempt("job#4/", "short").code(), absl::StatusCode::kInvalidArgument);
}

TEST(Rendezvous, ClosingAnAttemptForgetsItsKeysAndItsSecret) {
  RendezvousStore store;
  const RendezvousStore::Credential one{"job#1/", NewRendezvousSecret()};
  const RendezvousStore::Credential ten{"job#10/", NewRendezvousSecret()};
  ASSERT_TRUE(store.OpenAttempt(one.prefix, one.secret).ok());
  ASSERT_TRUE(store.OpenAttempt(ten.prefix, ten.secret).ok());
  ASSERT_TRUE(store.Set(one, "job#1//a", "1").ok());
  ASSERT_TRUE(store.Set(ten, "job#10//a", "10").ok());
  // A rank waiting on attempt 1 when it ends is told so at once, not at its deadline.
  std::thread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    store.CloseAttempt(one.prefix);
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<std::string>> waited = store.Get(one, {"job#1//never"}, absl::Seconds(10));
  closer.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(store.HasAttempt(one.prefix));
  EXPECT_EQ(store.size(), 1u);  // job#10's key stays
  EXPECT_EQ(store.Set(one, "job#1//a", "again").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*store.Get(ten, {"job#10//a"}, absl::ZeroDuration()))[0], "10");
}

TEST(Rendezvous, EachAttemptIsBoundedInKeysAndBytes) {
  RendezvousStore store;
  const RendezvousStore::Credential one{"job#1/", NewRendezvousSecret()};
  const RendezvousStore::Credential two{"job#2/", NewRendezvousSecret()};
  ASSERT_TRUE(store.OpenAttempt(one.prefix, one.secret).ok());
  ASSERT_TRUE(store.OpenAttempt(two.prefix, two.secret).ok());
  for (size_t i = 0; i < RendezvousStore::kMaxKeysPerAttempt; ++i) {
    ASSERT_TRUE(store.Set(one, absl::StrCat("job#1//k", i), "v").ok()) << i;
  }
  absl::Status over = store.Set(one, "job#1//one-more", "v");
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("limit of"), std::string::npos) << over;
  EXPECT_EQ(store.Add(one, "job#1//counter", 1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store.Set(one, "job#1//k0", "replaced").ok());  // an existing key may change
  // The other attempt is not starved by the first.
  EXPECT_TRUE(store.Set(two, "job#2//k", "v").ok());

  // Bytes: 1 MiB values up to kMaxBytesPerAttempt.
  store.CloseAttempt(one.prefix);
  ASSERT_TRUE(store.OpenAttempt(one.prefix, one.secret).ok());
  const std::string mib(RendezvousStore::kMaxValueBytes, 'x');
  absl::Status s;
  size_t set = 0;
  for (; set < 100 && (s = store.Set(one, absl::StrCat("job#1//big", set), mib)).ok(); ++set) {
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(set, RendezvousStore::kMaxBytesPerAttempt / RendezvousStore::kMaxValueBytes - 1);
  EXPECT_LE(store.AttemptUsage(one.prefix).second, RendezvousStore::kMaxBytesPerAttempt);
  store.CloseAttempt(one.prefix);
  EXPECT_EQ(store.AttemptUsage(one.prefix).first, 0u);
}

}  // namespace
}  // namespace loom::coordinator
