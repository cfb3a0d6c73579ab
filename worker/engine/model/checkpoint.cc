#include "worker/engine/model/checkpoint.h"

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint_io.h"
#include "common/safetensors.h"
#include "common/status_macros.h"

namespace loom::engine {
namespace {

std::vector<TensorToWrite> Tensors(const ParameterLayout& layout, const float* base,
                                   const std::string& prefix) {
  std::vector<TensorToWrite> out;
  for (const ParamTensor& t : layout.tensors()) out.push_back({prefix + t.name, t.shape, base + t.offset});
  return out;
}

absl::Status ReadTensors(const SafetensorsFile& file, const ParameterLayout& layout,
                         const std::string& prefix, float* base, const std::string& dir) {
  for (const ParamTensor& t : layout.tensors()) {
    if (absl::Status s = file.ReadF32(prefix + t.name, t.shape, base + t.offset); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", dir, " does not fit this model: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& dir, const Transformer& model, const Optimizer* optimizer,
                            loom::v1::CheckpointManifest manifest) {
  const ParameterLayout& layout = model.layout();
  std::vector<CheckpointFileData> files;
  files.push_back({"model.safetensors", "model", EncodeSafetensors(Tensors(layout, model.params(), ""))});
  if (optimizer != nullptr) {
    const Optimizer& opt = *optimizer;
    std::vector<TensorToWrite> tensors = Tensors(layout, opt.first_moment().data(), "exp_avg.");
    if (opt.has_second_moment()) {
      const auto second = Tensors(layout, opt.second_moment().data(), "exp_avg_sq.");
      tensors.insert(tensors.end(), second.begin(), second.end());
    }
    files.push_back({"optimizer.safetensors", "optimizer", EncodeSafetensors(tensors)});
    (*manifest.mutable_metadata())["optimizer"] = opt.has_second_moment() ? "adamw" : "lion";
    (*manifest.mutable_metadata())["optimizer_step"] = absl::StrCat(opt.step());
  }
  return WriteCheckpointDir(dir, files, std::move(manifest));
}

absl::StatusOr<std::unique_ptr<Transformer>> LoadModel(const std::string& dir) {
  LOOM_ASSIGN_OR_RETURN(loom::v1::CheckpointManifest manifest, ReadCheckpointManifest(dir, /*verify=*/false));
  LOOM_ASSIGN_OR_RETURN(TransformerConfig config, TransformerConfig::FromProto(manifest.model()));
  auto model = std::make_unique<Transformer>(config);
  LOOM_RETURN_IF_ERROR(LoadWeights(dir, model.get()).status());
  return model;
}

absl::StatusOr<loom::v1::CheckpointManifest> LoadWeights(const std::string& dir, Transformer* model) {
  absl::StatusOr<loom::v1::CheckpointManifest> manifest = ReadCheckpointManifest(dir, /*verify=*/true);
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<SafetensorsFile> file =
      SafetensorsFile::Read((std::filesystem::path(dir) / "model.safetensors").string());
  if (!file.ok()) return file.status();
  if (absl::Status s = ReadTensors(*file, model->layout(), "", model->params(), dir); !s.ok()) return s;
  return manifest;
}

absl::Status LoadOptimizerState(const std::string& dir, const loom::v1::CheckpointManifest& manifest,
                                Optimizer* optimizer) {
  if (!manifest.files().contains("optimizer.safetensors")) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", dir,
                     " holds no optimizer state (a weights-only checkpoint): it can start a "
                     "stage, not resume one"));
  }
  const std::string kind =
      manifest.metadata().contains("optimizer") ? manifest.metadata().at("optimizer") : "";
  const std::string want = optimizer->has_second_moment() ? "adamw" : "lion";
  if (kind != want) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", dir, " holds ", kind, " state but the stage uses ", want));
  }
  absl::StatusOr<SafetensorsFile> file =
      SafetensorsFile::Read((std::filesystem::path(dir) / "optimizer.safetensors").string());
  if (!file.ok()) return file.status();
  const ParameterLayout& layout = optimizer->layout();
  if (absl::Status s = ReadTensors(*file, layout, "exp_avg.", optimizer->first_moment().data(), dir);
      !s.ok()) {
    return s;
  }
  if (optimizer->has_second_moment()) {
    if (absl::Status s = ReadTensors(*file, layout, "exp_avg_sq.", optimizer->second_moment().data(), dir);
        !s.ok()) {
      return s;
    }
  }
  int64_t step = 0;
  if (!manifest.metadata().contains("optimizer_step") ||
      !absl::SimpleAtoi(manifest.metadata().at("optimizer_step"), &step)) {
    return absl::DataLossError(absl::StrCat("checkpoint ", dir, " has no optimizer_step in its manifest"));
  }
  optimizer->set_step(step);
  return absl::OkStatus();
}

}  // namespace loom::engine
