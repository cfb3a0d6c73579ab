// Hugging Face Llama format: a directory with config.json (LlamaConfig) and model.safetensors
// (or shards listed in model.safetensors.index.json) using the tensor names Loom already uses,
// so the ecosystem's tools load what Loom trained and Loom can start from their checkpoints.
//
// Export writes the effective RoPE base (NTK scaling folded in) and linear scaling as
// rope_scaling. Sliding-window layers have no LlamaConfig field: they are written as
// loom_sliding_window / loom_sliding_window_layers, which Loom reads back and Hugging Face
// ignores (the export says so).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace loom::engine {

// Reads (and verifies) a Loom checkpoint and writes `out_dir`. Returns a warning to show, or "".
absl::StatusOr<std::string> ExportHuggingFace(const std::string& checkpoint_dir, const std::string& out_dir);

// Reads a Hugging Face Llama directory (F32, BF16 or F16 weights) and writes a weights-only Loom
// checkpoint at `checkpoint_dir` (step 0).
absl::Status ImportHuggingFace(const std::string& hf_dir, const std::string& checkpoint_dir);

}  // namespace loom::engine
