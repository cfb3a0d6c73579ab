// Proves that the Debian packages Loom builds on are found, link, and work in this build: one
// real call into each library that CMakeLists finds but that no other test exercises yet.
// SentencePiece is here rather than in a file with Abseil headers: see data/README.md.
#include <cblas.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>

#include <benchmark/benchmark.h>
#include <gloo/config.h>
#include <gloo/rendezvous/hash_store.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <rocksdb/db.h>

namespace {

std::filesystem::path TempDir(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("loom_deps_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(Dependencies, RocksDbWritesAndReadsBack) {
  const auto dir = TempDir("rocksdb");
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, dir.string(), &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::WriteOptions sync;
  sync.sync = true;
  ASSERT_TRUE(db->Put(sync, "plan/1", "llama3_tiny").ok());
  std::string value;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), "plan/1", &value).ok());
  EXPECT_EQ(value, "llama3_tiny");
  db.reset();
  std::filesystem::remove_all(dir);
}

TEST(Dependencies, PrometheusExposerBindsAFreeLoopbackPort) {
  prometheus::Exposer exposer("127.0.0.1:0");
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter().Name("loom_test_total").Help("test").Register(*registry);
  family.Add({}).Increment();
  exposer.RegisterCollectable(registry);
  ASSERT_EQ(exposer.GetListeningPorts().size(), 1u);
  EXPECT_GT(exposer.GetListeningPorts()[0], 0);
}

TEST(Dependencies, GlooStoreRoundTrip) {
  gloo::rendezvous::HashStore store;
  store.set("key", {1, 2, 3});
  EXPECT_EQ(store.get("key"), (std::vector<char>{1, 2, 3}));
  EXPECT_GE(GLOO_VERSION_MAJOR, 0);
}

TEST(Dependencies, OpenBlasSgemm) {
  const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
  float c[4] = {};
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  EXPECT_FLOAT_EQ(c[0], 19);
  EXPECT_FLOAT_EQ(c[1], 22);
  EXPECT_FLOAT_EQ(c[2], 43);
  EXPECT_FLOAT_EQ(c[3], 50);
}

TEST(Dependencies, SentencePieceTrainsAndEncodes) {
  const auto dir = TempDir("spm");
  {
    std::ofstream corpus(dir / "corpus.txt");
    for (int i = 0; i < 200; ++i) corpus << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  const std::string prefix = (dir / "m").string();
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir / "corpus.txt").string() + " --model_prefix=" + prefix +
      " --vocab_size=320 --model_type=bpe --byte_fallback=true --minloglevel=2");
  ASSERT_TRUE(status.ok()) << status.ToString();
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(prefix + ".model").ok());
  std::vector<int> ids;
  ASSERT_TRUE(sp.Encode("the lazy fox", &ids).ok());
  EXPECT_FALSE(ids.empty());
  std::string text;
  ASSERT_TRUE(sp.Decode(ids, &text).ok());
  EXPECT_EQ(text, "the lazy fox");
  std::filesystem::remove_all(dir);
}

TEST(Dependencies, NlohmannJsonRoundTrip) {
  const auto j = nlohmann::json::parse(R"({"step": 12, "files": {"a": "b"}})");
  EXPECT_EQ(j["step"].get<int>(), 12);
  EXPECT_EQ(j.dump(), R"({"files":{"a":"b"},"step":12})");
}

void BM_Nothing(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(state.iterations());
}
BENCHMARK(BM_Nothing);

TEST(Dependencies, GoogleBenchmarkRegisters) {
  EXPECT_NE(benchmark::RegisterBenchmark("loom_probe", BM_Nothing), nullptr);
}

}  // namespace
