// Matmul, RMSNorm, RoPE, SwiGLU, embedding: forward against the reference, backward against finite
// differences, and the same bits with one thread or two.
#include <cstring>

#include <gtest/gtest.h>

#include "kernel_test_util.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::ExpectGradientMatches;
using loom::testing::RandomFloats;
using loom::testing::ToDouble;
using reference::Vec;

struct LinearShape {
  int64_t rows, in, out;
};

class LinearTest : public ::testing::TestWithParam<LinearShape> {};

TEST_P(LinearTest, ForwardAndBackward) {
  // Plain variables, not a structured binding: clang 14 (the sanitizer build) cannot capture one.
  const int64_t rows = GetParam().rows, in = GetParam().in, out = GetParam().out;
  const auto x = RandomFloats(rows * in, 1), w = RandomFloats(out * in, 2, 0.3f),
             dy = RandomFloats(rows * out, 3);
  std::vector<float> y(rows * out);
  LinearForward(x.data(), w.data(), y.data(), rows, in, out);
  EXPECT_CLOSE(y, reference::Linear(ToDouble(x), ToDouble(w), rows, in, out), 1e-5, 1e-4);

  std::vector<float> dx(rows * in, 0.5f), dw(out * in, 0.25f);
  LinearBackward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), rows, in, out, /*accumulate_dx=*/true);
  // Subtract what was there: the kernel accumulates.
  for (float& v : dx) v -= 0.5f;
  for (float& v : dw) v -= 0.25f;
  ExpectGradientMatches([&](const Vec& xx) { return reference::Linear(xx, ToDouble(w), rows, in, out); },
                        ToDouble(x), ToDouble(dy), dx, "dx");
  ExpectGradientMatches([&](const Vec& ww) { return reference::Linear(ToDouble(x), ww, rows, in, out); },
                        ToDouble(w), ToDouble(dy), dw, "dw");
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearShape{1, 1, 1}, LinearShape{7, 13, 5},
                                           LinearShape{64, 32, 48}, LinearShape{131, 17, 29}));

TEST(RmsNorm, ForwardAndBackward) {
  for (const auto& shape : {std::pair<int64_t, int64_t>{1, 4}, {37, 24}, {100, 65}}) {
    const int64_t rows = shape.first, dim = shape.second;  // not a binding: see LinearTest
    const auto x = RandomFloats(rows * dim, 4), w = RandomFloats(dim, 5), dout = RandomFloats(rows * dim, 6);
    std::vector<float> y(rows * dim), rstd(rows);
    RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, 1e-5f);
    EXPECT_CLOSE(y, reference::RmsNorm(ToDouble(x), ToDouble(w), rows, dim, 1e-5), 1e-6, 1e-5);
    std::vector<float> dx(rows * dim), dw(dim, 0.0f);
    RmsNormBackward(dout.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, dim, false);
    ExpectGradientMatches([&](const Vec& xx) { return reference::RmsNorm(xx, ToDouble(w), rows, dim, 1e-5); },
                          ToDouble(x), ToDouble(dout), dx, "dx");
    ExpectGradientMatches([&](const Vec& ww) { return reference::RmsNorm(ToDouble(x), ww, rows, dim, 1e-5); },
                          ToDouble(w), ToDouble(dout), dw, "dweight");
  }
}

TEST(Rope, ForwardMatchesDefinitionAndBackwardIsTheTranspose) {
  const int64_t tokens = 19;
  const int heads = 3, hd = 8;
  std::vector<int32_t> positions(tokens);
  for (int64_t t = 0; t < tokens; ++t) positions[t] = static_cast<int32_t>((t * 7) % 23);
  for (double divisor : {1.0, 4.0}) {
    const RopeTable table = MakeRopeTable(32, hd, 10000.0, divisor);
    const auto x = RandomFloats(tokens * heads * hd, 7), dout = RandomFloats(x.size(), 8);
    std::vector<float> y = x;
    RopeForward(y.data(), positions.data(), table, tokens, heads);
    auto ref = [&](const Vec& xx) {
      return reference::Rope(xx, positions, tokens, heads, hd, 10000.0, divisor);
    };
    EXPECT_CLOSE(y, ref(ToDouble(x)), 1e-6, 1e-5);
    std::vector<float> dx = dout;
    RopeBackward(dx.data(), positions.data(), table, tokens, heads);
    ExpectGradientMatches(ref, ToDouble(x), ToDouble(dout), dx, "drope");
  }
}

TEST(SwiGlu, ForwardAndBackward) {
  const int64_t n = 5000;
  const auto g = RandomFloats(n, 9, 3.0f), u = RandomFloats(n, 10), dout = RandomFloats(n, 11);
  std::vector<float> y(n), dg(n), du(n);
  SwiGluForward(g.data(), u.data(), y.data(), n);
  EXPECT_CLOSE(y, reference::SwiGlu(ToDouble(g), ToDouble(u)), 1e-6, 1e-5);
  SwiGluBackward(dout.data(), g.data(), u.data(), dg.data(), du.data(), n);
  ExpectGradientMatches([&](const Vec& gg) { return reference::SwiGlu(gg, ToDouble(u)); }, ToDouble(g),
                        ToDouble(dout), dg, "dgate", 200);
  ExpectGradientMatches([&](const Vec& uu) { return reference::SwiGlu(ToDouble(g), uu); }, ToDouble(u),
                        ToDouble(dout), du, "dup", 200);
}

TEST(Embedding, ForwardGathersAndBackwardScattersRepeatedIds) {
  const int64_t vocab = 11, dim = 6;
  const std::vector<int32_t> ids = {3, 0, 3, 10, 3, 7};
  const auto table = RandomFloats(vocab * dim, 12), dout = RandomFloats(ids.size() * dim, 13);
  std::vector<float> y(ids.size() * dim), dtable(vocab * dim, 0.0f);
  EmbeddingForward(ids.data(), table.data(), y.data(), ids.size(), dim);
  EXPECT_CLOSE(y, reference::Embedding(ids, ToDouble(table), dim), 0, 0 + 1e-12);
  EmbeddingBackward(ids.data(), dout.data(), dtable.data(), ids.size(), dim);
  ExpectGradientMatches([&](const Vec& t) { return reference::Embedding(ids, t, dim); }, ToDouble(table),
                        ToDouble(dout), dtable, "dtable", 1000);
}

TEST(Parallel, ResultsAreTheSameBitsWithOneOrTwoThreads) {
  const int64_t rows = 300, dim = 96;
  const auto x = RandomFloats(rows * dim, 14), w = RandomFloats(dim, 15), dout = RandomFloats(rows * dim, 16);
  auto run = [&](int threads) {
    SetNumThreads(threads);
    std::vector<float> y(rows * dim), rstd(rows), dx(rows * dim), dw(dim, 0.0f);
    RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, 1e-5f);
    RmsNormBackward(dout.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, dim, false);
    y.insert(y.end(), dx.begin(), dx.end());
    y.insert(y.end(), dw.begin(), dw.end());
    return y;
  };
  const std::vector<float> one = run(1), two = run(2);
  SetNumThreads(2);
  EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * sizeof(float)));
}

TEST(Parallel, NestedCallsRunInline) {
  std::vector<int> hits(100, 0);
  ParallelFor(10, 1, [&](int64_t a, int64_t) {
    ParallelFor(10, 3, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) hits[a * 10 + b]++;
    });
  });
  for (int h : hits) EXPECT_EQ(h, 1);
}

}  // namespace
}  // namespace loom::kernels::cpu
