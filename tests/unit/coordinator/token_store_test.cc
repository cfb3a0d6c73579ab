// The bearer-token store with a real RocksDB store: tokens authenticate until revoked, survive a
// reopen, and the database never holds a token itself.
#include "coordinator/token_store.h"

#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "tests/directory_bytes.h"

namespace loom::coordinator {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/token_store_test_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

loom::v1::Principal Admin() {
  loom::v1::Principal p;
  p.set_role("admin");
  p.set_name("root");
  p.set_via("certificate");
  return p;
}

TEST(TokenStore, IssuedTokensAuthenticateUntilRevokedAndSurviveAReopen) {
  const std::string dir = FreshDir("lifecycle");
  std::string alice, bob;
  {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<std::unique_ptr<TokenStore>> tokens = TokenStore::Open(store->get());
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    loom::v1::TokenInfo info;
    absl::StatusOr<std::string> a = (*tokens)->Issue("submitter", "alice", Admin(), 1000, &info);
    ASSERT_TRUE(a.ok()) << a.status();
    alice = *a;
    EXPECT_EQ(info.name(), "alice");
    EXPECT_EQ(info.role(), "submitter");
    EXPECT_EQ(info.created_ms(), 1000);
    EXPECT_EQ(info.issued_by().name(), "root");
    // "loom_" and 256 bits in hex.
    ASSERT_EQ(alice.size(), 5u + 64u);
    EXPECT_EQ(alice.rfind("loom_", 0), 0u);
    absl::StatusOr<std::string> b = (*tokens)->Issue("viewer", "bob", Admin(), 2000);
    ASSERT_TRUE(b.ok()) << b.status();
    bob = *b;
    EXPECT_NE(alice, bob);

    std::optional<loom::v1::TokenInfo> who = (*tokens)->Authenticate(alice);
    ASSERT_TRUE(who.has_value());
    EXPECT_EQ(who->name(), "alice");
    EXPECT_EQ(who->role(), "submitter");
    EXPECT_EQ((*tokens)->Authenticate(bob)->name(), "bob");
    // A near miss, a prefix, an empty string: nobody.
    std::string near = alice;
    near.back() = near.back() == '0' ? '1' : '0';
    EXPECT_FALSE((*tokens)->Authenticate(near).has_value());
    EXPECT_FALSE((*tokens)->Authenticate(alice.substr(0, 20)).has_value());
    EXPECT_FALSE((*tokens)->Authenticate("").has_value());

    // One token per name.
    absl::StatusOr<std::string> again = (*tokens)->Issue("admin", "alice", Admin(), 3000);
    EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
    EXPECT_NE(again.status().message().find("loom tokens revoke alice"), std::string::npos);
  }
  {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    // The coordinator's own state load is not confused by the token records.
    ASSERT_TRUE((*store)->Load().ok());
    absl::StatusOr<std::unique_ptr<TokenStore>> tokens = TokenStore::Open(store->get());
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ((*tokens)->Authenticate(alice)->name(), "alice");
    std::vector<loom::v1::TokenInfo> list = (*tokens)->List();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].name(), "alice");
    EXPECT_EQ(list[1].name(), "bob");
    EXPECT_EQ(list[1].role(), "viewer");

    ASSERT_TRUE((*tokens)->Revoke("alice").ok());
    EXPECT_FALSE((*tokens)->Authenticate(alice).has_value());
    EXPECT_TRUE((*tokens)->Authenticate(bob).has_value());
    EXPECT_EQ((*tokens)->Revoke("alice").code(), absl::StatusCode::kNotFound);
  }
  {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<std::unique_ptr<TokenStore>> tokens = TokenStore::Open(store->get());
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_FALSE((*tokens)->Authenticate(alice).has_value());  // the revocation was durable
    EXPECT_EQ((*tokens)->List().size(), 1u);
  }
  // The database's files hold neither token, nor the random part of one.
  const std::string bytes = loom::testing::AllBytesUnder(dir);
  ASSERT_FALSE(bytes.empty());
  for (const std::string& token : {alice, bob}) {
    EXPECT_EQ(bytes.find(token), std::string::npos);
    EXPECT_EQ(bytes.find(token.substr(5)), std::string::npos);
  }
}

TEST(TokenStore, RefusesRolesThatAreNotForPeopleAndBadNames) {
  const std::string dir = FreshDir("refusals");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::unique_ptr<TokenStore>> tokens = TokenStore::Open(store->get());
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  for (const std::string& role : std::vector<std::string>{"worker", "rank", "coordinator", "", "Admin"}) {
    absl::StatusOr<std::string> t = (*tokens)->Issue(role, "x", Admin(), 1);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << role;
  }
  EXPECT_NE((*tokens)->Issue("worker", "x", Admin(), 1).status().message().find("viewer, submitter or admin"),
            std::string::npos);
  for (const std::string& name :
       std::vector<std::string>{"", "a/b", "a b", "../x", std::string(65, 'a'), std::string("a\0b", 3)}) {
    absl::StatusOr<std::string> t = (*tokens)->Issue("viewer", name, Admin(), 1);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_TRUE((*tokens)->List().empty());
  // Many tokens: all distinct.
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    absl::StatusOr<std::string> t = (*tokens)->Issue("viewer", "u" + std::to_string(i), Admin(), 1);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(seen.insert(*t).second);
  }
}

}  // namespace
}  // namespace loom::coordinator
