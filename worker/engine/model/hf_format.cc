#include "worker/engine/model/hf_format.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_io.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace fs = std::filesystem;

namespace {

nlohmann::ordered_json ConfigJson(const loom::v1::ModelConfig& m, const TransformerConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.ffn;
  j["num_hidden_layers"] = c.layers;
  j["num_attention_heads"] = c.heads;
  j["num_key_value_heads"] = c.kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab;
  j["rms_norm_eps"] = m.norm_eps();
  j["rope_theta"] = c.rope_theta;  // NTK scaling folded in
  if (c.rope_position_divisor != 1.0) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"type", "linear"}, {"factor", c.rope_position_divisor}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = c.max_seq_len > 0 ? c.max_seq_len : 4096;
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["initializer_range"] = m.init_std();
  j["torch_dtype"] = "float32";
  if (c.sliding_window > 0) {
    j["loom_sliding_window"] = c.sliding_window;
    std::vector<int> local;
    for (int l = 0; l < c.layers; ++l)
      if (c.local_layer[l]) local.push_back(l);
    j["loom_sliding_window_layers"] = local;
  }
  return j;
}

absl::StatusOr<loom::v1::ModelConfig> ModelFromConfigJson(const nlohmann::json& j, const std::string& path) {
  loom::v1::ModelConfig m;
  try {
    const std::string type = j.value("model_type", "llama");
    if (type != "llama" && type != "mistral") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model_type '", type, "' is not a Llama-family model"));
    }
    if (j.value("attention_bias", false) || j.value("mlp_bias", false)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": biases in attention or MLP are not supported"));
    }
    if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": hidden_act must be silu (SwiGLU)"));
    }
    m.set_layers(j.at("num_hidden_layers").get<int>());
    m.set_d_model(j.at("hidden_size").get<int>());
    m.set_heads(j.at("num_attention_heads").get<int>());
    m.set_kv_heads(j.value("num_key_value_heads", m.heads()));
    m.set_ffn_size(j.at("intermediate_size").get<int>());
    m.set_vocab_size(j.at("vocab_size").get<int>());
    m.set_rope_theta(j.value("rope_theta", 10000.0));
    m.set_norm_eps(j.value("rms_norm_eps", 1e-5));
    m.set_tied_embeddings(j.value("tie_word_embeddings", false));
    m.set_max_seq_len(j.value("max_position_embeddings", 0));
    m.set_init_std(j.value("initializer_range", 0.02));
    if (j.contains("head_dim") && !j["head_dim"].is_null() &&
        j["head_dim"].get<int>() * m.heads() != m.d_model()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": head_dim x num_attention_heads must equal hidden_size"));
    }
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
      const auto& s = j["rope_scaling"];
      const std::string kind = s.value("rope_type", s.value("type", ""));
      if (kind != "linear") {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": rope_scaling type '", kind, "' is not supported (only linear)"));
      }
      m.mutable_rope_scaling()->set_type(loom::v1::RopeScaling::TYPE_LINEAR);
      m.mutable_rope_scaling()->set_factor(s.at("factor").get<double>());
    }
    if (j.contains("loom_sliding_window")) {
      m.set_sliding_window(j["loom_sliding_window"].get<int>());
      for (int l : j.value("loom_sliding_window_layers", std::vector<int>{})) m.add_sliding_window_layers(l);
    } else if (j.contains("sliding_window") && !j["sliding_window"].is_null()) {
      m.set_sliding_window(j["sliding_window"].get<int>());  // Mistral: every layer
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a usable LlamaConfig: ", e.what()));
  }
  return m;
}

}  // namespace

absl::StatusOr<std::string> ExportHuggingFace(const std::string& checkpoint_dir, const std::string& out_dir) {
  absl::StatusOr<loom::v1::CheckpointManifest> manifest =
      ReadCheckpointManifest(checkpoint_dir, /*verify=*/false);
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<TransformerConfig> config = TransformerConfig::FromProto(manifest->model());
  if (!config.ok()) return config.status();
  Transformer model(*config);
  if (auto loaded = LoadWeights(checkpoint_dir, &model); !loaded.ok()) return loaded.status();

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  std::vector<TensorToWrite> tensors;
  for (const ParamTensor& t : model.layout().tensors())
    tensors.push_back({t.name, t.shape, model.params() + t.offset});
  // transformers refuses safetensors files without format=pt.
  if (absl::Status s =
          WriteSafetensors((fs::path(out_dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  const std::string json = ConfigJson(manifest->model(), *config).dump(2);
  if (absl::Status s = WriteFileDurably((fs::path(out_dir) / "config.json").string(), json + "\n"); !s.ok())
    return s;
  if (config->sliding_window > 0) {
    return std::string(
        "note: this model uses sliding-window attention, which LlamaConfig cannot express; Loom wrote it as "
        "loom_sliding_window(_layers), which Hugging Face ignores (it would attend globally)");
  }
  return std::string();
}

absl::Status ImportHuggingFace(const std::string& hf_dir, const std::string& checkpoint_dir) {
  const std::string config_path = (fs::path(hf_dir) / "config.json").string();
  absl::StatusOr<std::string> text = ReadFile(config_path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(config_path, " is not JSON"));
  absl::StatusOr<loom::v1::ModelConfig> model_config = ModelFromConfigJson(j, config_path);
  if (!model_config.ok()) return model_config.status();
  absl::StatusOr<TransformerConfig> config = TransformerConfig::FromProto(*model_config);
  if (!config.ok()) return config.status();
  Transformer model(*config);

  // One file, or shards named by model.safetensors.index.json.
  std::map<std::string, std::string> file_of;  // tensor -> file
  const fs::path index = fs::path(hf_dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    absl::StatusOr<std::string> index_text = ReadFile(index.string());
    if (!index_text.ok()) return index_text.status();
    nlohmann::json ij = nlohmann::json::parse(*index_text, nullptr, false);
    if (ij.is_discarded() || !ij.contains("weight_map")) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), " has no weight_map"));
    }
    for (auto it = ij["weight_map"].begin(); it != ij["weight_map"].end(); ++it) {
      file_of[it.key()] = it.value().get<std::string>();
    }
  }
  std::map<std::string, SafetensorsFile> open;
  for (const ParamTensor& t : model.layout().tensors()) {
    const std::string file = file_of.contains(t.name) ? file_of[t.name] : "model.safetensors";
    if (!open.contains(file)) {
      absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Read((fs::path(hf_dir) / file).string());
      if (!f.ok()) return f.status();
      open.emplace(file, std::move(*f));
    }
    if (absl::Status s = open.at(file).ReadF32(t.name, t.shape, model.params() + t.offset); !s.ok()) return s;
  }
  loom::v1::CheckpointManifest manifest;
  *manifest.mutable_model() = *model_config;
  manifest.set_dp(1);
  manifest.set_tp(1);
  manifest.set_pp(1);
  manifest.set_final(true);
  (*manifest.mutable_metadata())["imported_from"] = fs::absolute(hf_dir).string();
  return SaveCheckpoint(checkpoint_dir, model, nullptr, manifest);
}

}  // namespace loom::engine
