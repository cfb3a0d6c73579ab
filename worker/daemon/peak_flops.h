// A CPU slot's peak FLOP/s, measured: the worker times single-precision GEMMs through Loom's own
// matmul kernel (kernels/cpu/matmul.h, the one training uses: OpenBLAS single-threaded, output
// rows split over Loom's thread pool) with the thread count each rank is given
// (--threads-per-rank), so the figure is what one slot can reach on the math that dominates
// training. It is an achievable peak, not the vendor's theoretical one: MFU against it is higher
// than against a datasheet figure. MFU = achieved model FLOP/s / (ranks x this).
#pragma once

#include "absl/time/time.h"

namespace loom::worker {

// FLOP/s of the best of repeated 512x512x512 sgemms run with `threads` threads, for at most
// about `budget` (at least two products). Sets the calling process's kernel thread count to
// `threads`. Always positive.
double MeasurePeakFlops(int threads, absl::Duration budget = absl::Milliseconds(300));

// A job's MFU: its global tokens/s x the model FLOPs per token, over world_size slots of
// `peak_flops_per_slot` each (the job's slots are taken to be alike: rank 0's worker's figure
// stands for all). 0 when any input is unknown (not positive).
double ModelFlopsUtilization(double tokens_per_second, double flops_per_token, int world_size,
                             double peak_flops_per_slot);

}  // namespace loom::worker
