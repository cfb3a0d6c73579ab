// Hugging Face Llama format: a directory with config.json (LlamaConfig) and model.safetensors
// (or shards listed in model.safetensors.index.json) using the tensor names Loom already uses,
// so the ecosystem's tools load what Loom trained and Loom can start from their checkpoints.
//
// An export is complete: beside the weights it writes the tokenizer the model was trained with
// (tokenizer.model, or tokenizer.json for a Hugging Face BPE tokenizer), tokenizer_config.json
// (special tokens; the chat template as Jinja when the model was trained with one),
// special_tokens_map.json and generation_config.json. Checkpoints record their tokenizer and chat
// template (trainer.h); options override them.
//
// Export writes the effective RoPE base (NTK scaling folded in) and linear scaling as
// rope_scaling. Sliding-window layers have no LlamaConfig field: they are written as
// loom_sliding_window / loom_sliding_window_layers, which Loom reads back and Hugging Face
// ignores (the export says so).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace loom::engine {

struct HfExportOptions {
  // Weights as BF16 (rounded to nearest even) instead of F32.
  bool bf16 = false;
  // Above this many bytes of weights, model-0000i-of-0000n.safetensors files of at most this size
  // (a larger tensor gets a file of its own) and model.safetensors.index.json. Hugging Face's
  // default is 5 GB.
  int64_t max_shard_bytes = 5'000'000'000;
  // The tokenizer file; "" = the one the checkpoint records. It must have the sha256 the
  // checkpoint records, if it records one.
  std::string tokenizer;
  // "chatml", "alpaca" or "none"; "" = the checkpoint's (none when it records none).
  std::string chat_template;
};

// Reads (and verifies) a Loom checkpoint and writes `out_dir`, which must not exist or be empty.
// Returns warnings to show (one per line), or "".
absl::StatusOr<std::string> ExportHuggingFace(const std::string& checkpoint_dir, const std::string& out_dir,
                                              const HfExportOptions& options = {});

// Reads a Hugging Face Llama directory (F32, BF16 or F16 weights) and writes a weights-only Loom
// checkpoint at `checkpoint_dir` (step 0).
absl::Status ImportHuggingFace(const std::string& hf_dir, const std::string& checkpoint_dir);

}  // namespace loom::engine
