// Saving and loading the engine's state in Loom's checkpoint format (common/checkpoint_io.h):
//   model.safetensors      every parameter, Hugging Face Llama names, F32
//   optimizer.safetensors  "exp_avg.<name>" and "exp_avg_sq.<name>" (AdamW) or "exp_avg.<name>" (Lion)
//   manifest.json          step, tokens, model config, data and RNG state, optimizer step, digests
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "loom/v1/checkpoint.pb.h"
#include "worker/engine/model/optimizer.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

// Writes `dir` atomically. `manifest` carries what the caller knows (plan, stage, step, tokens,
// model config, data and RNG state); files and digests are filled in here. `optimizer` may be
// null (weights-only checkpoints: averages, merges, imports).
absl::Status SaveCheckpoint(const std::string& dir, const Transformer& model, const Optimizer* optimizer,
                            loom::v1::CheckpointManifest manifest);

// Verifies `dir` (every file's sha256) and loads its weights into `model`, whose architecture
// must match: an error names the missing or misshapen tensor. Returns the manifest.
absl::StatusOr<loom::v1::CheckpointManifest> LoadWeights(const std::string& dir, Transformer* model);

// A model of the checkpoint's own architecture (its manifest's model config, RoPE included) with
// its verified weights: for evaluation, references and teachers, which train nothing.
absl::StatusOr<std::unique_ptr<Transformer>> LoadModel(const std::string& dir);

// Loads the optimizer moments and step written by SaveCheckpoint (the files were verified by
// LoadWeights).
absl::Status LoadOptimizerState(const std::string& dir, const loom::v1::CheckpointManifest& manifest,
                                Optimizer* optimizer);

}  // namespace loom::engine
