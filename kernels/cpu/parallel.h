// A small fixed pool of threads for Loom's own CPU kernels (GEMMs use OpenBLAS's threads).
//
// Work is split into chunks whose boundaries depend only on the problem size and the grain, never
// on the number of threads, and every reduction combines chunk results in chunk order: a kernel
// gives bitwise-identical results with 1 or N threads, which the engine's determinism relies on.
#pragma once

#include <cstdint>
#include <functional>

namespace loom::kernels::cpu {

// Threads used by ParallelFor (including the caller). Default: hardware concurrency.
void SetNumThreads(int threads);
int NumThreads();

// Calls fn(begin, end) for consecutive chunks [k*grain, min((k+1)*grain, n)) of [0, n), in
// parallel; returns when all are done. Chunks never overlap; fn must not throw.
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Number of chunks ParallelFor uses for (n, grain): size scratch arrays of per-chunk partials.
inline int64_t NumChunks(int64_t n, int64_t grain) { return n <= 0 ? 0 : (n + grain - 1) / grain; }

}  // namespace loom::kernels::cpu
