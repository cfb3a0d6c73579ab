// SwiGLU: out = silu(gate) ⊙ up, with silu(g) = g·σ(g). The MLP of every Llama-family model.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

void SwiGluForward(const float* gate, const float* up, float* out, int64_t n);

// dgate = dout ⊙ up ⊙ σ(g)(1 + g(1−σ(g))), dup = dout ⊙ silu(g). Written, not accumulated.
void SwiGluBackward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                    int64_t n);

}  // namespace loom::kernels::cpu
