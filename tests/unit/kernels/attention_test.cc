// Attention over a table of shapes: causal, grouped-query, sliding window, packed segments, sizes
// that are not multiples of the 64-row block.
#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include "kernel_test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::ExpectGradientMatches;
using loom::testing::RandomFloats;
using loom::testing::ToDouble;
using reference::Vec;

struct Case {
  const char* name;
  int64_t batch, seq;
  int heads, kv_heads, hd, window;
  bool segments;
};

class AttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionTest, ForwardAndBackward) {
  const Case& c = GetParam();
  const AttentionShape shape{c.batch, c.seq, c.heads, c.kv_heads, c.hd, c.window};
  const int64_t nq = c.batch * c.seq * c.heads * c.hd, nkv = c.batch * c.seq * c.kv_heads * c.hd;
  const auto q = RandomFloats(nq, 21), k = RandomFloats(nkv, 22), v = RandomFloats(nkv, 23),
             dout = RandomFloats(nq, 24);
  std::vector<int32_t> segments;
  if (c.segments) {
    // Three packed examples per sequence, of uneven lengths.
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t t = 0; t < c.seq; ++t) segments.push_back(t < c.seq / 3 ? 0 : (t < c.seq / 2 + 5 ? 1 : 2));
  }
  const int32_t* seg = segments.empty() ? nullptr : segments.data();
  std::vector<float> out(nq), lse(c.batch * c.heads * c.seq);
  AttentionForward(shape, q.data(), k.data(), v.data(), seg, out.data(), lse.data());
  auto ref = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    return reference::Attention(qq, kk, vv, segments, c.batch, c.seq, c.heads, c.kv_heads, c.hd, c.window);
  };
  EXPECT_CLOSE(out, ref(ToDouble(q), ToDouble(k), ToDouble(v)), 1e-5, 1e-4);

  std::vector<float> dq(nq), dk(nkv, 7.0f), dv(nkv, 7.0f);  // written, not accumulated
  AttentionBackward(shape, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), seg, dq.data(),
                    dk.data(), dv.data());
  const Vec qd = ToDouble(q), kd = ToDouble(k), vd = ToDouble(v), proj = ToDouble(dout);
  ExpectGradientMatches([&](const Vec& x) { return ref(x, kd, vd); }, qd, proj, dq, "dq", 48);
  ExpectGradientMatches([&](const Vec& x) { return ref(qd, x, vd); }, kd, proj, dk, "dk", 48);
  ExpectGradientMatches([&](const Vec& x) { return ref(qd, kd, x); }, vd, proj, dv, "dv", 48);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(Case{"mha_tiny", 1, 5, 2, 2, 4, 0, false},
                                           Case{"gqa_odd_len", 2, 37, 4, 2, 8, 0, false},
                                           Case{"mqa_two_blocks", 1, 70, 4, 1, 8, 0, false},
                                           Case{"window", 2, 70, 2, 1, 6, 9, false},
                                           Case{"segments", 1, 45, 2, 2, 4, 0, true},
                                           Case{"window_and_segments", 2, 130, 4, 2, 4, 17, true},
                                           Case{"window_one", 1, 9, 1, 1, 2, 1, false}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

TEST(Attention, WindowAndSegmentsAreExactMasks) {
  // With window 1 each token sees only itself: out == v (one head, one kv head).
  const AttentionShape shape{1, 9, 1, 1, 2, 1};
  const auto q = RandomFloats(18, 31), k = RandomFloats(18, 32), v = RandomFloats(18, 33);
  std::vector<float> out(18), lse(9);
  AttentionForward(shape, q.data(), k.data(), v.data(), nullptr, out.data(), lse.data());
  for (int i = 0; i < 18; ++i) EXPECT_FLOAT_EQ(out[i], v[i]);
  // A token at a segment start sees only itself too, whatever came before it.
  const std::vector<int32_t> seg = {0, 0, 0, 1, 1, 2, 2, 2, 2};
  const AttentionShape full{1, 9, 1, 1, 2, 0};
  AttentionForward(full, q.data(), k.data(), v.data(), seg.data(), out.data(), lse.data());
  for (int t : {0, 3, 5})
    for (int d = 0; d < 2; ++d) EXPECT_FLOAT_EQ(out[t * 2 + d], v[t * 2 + d]);
}

}  // namespace
}  // namespace loom::kernels::cpu
