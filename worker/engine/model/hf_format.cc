#include "worker/engine/model/hf_format.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "data/chat.h"
#include "data/tokenizer.h"
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

namespace {

// The weights, in files of at most max_shard_bytes (one file when they all fit).
absl::Status WriteWeights(const Transformer& model, const HfExportOptions& options, const fs::path& out) {
  std::vector<std::vector<TensorToWrite>> files(1);
  size_t in_file = 0, total = 0;
  for (const ParamTensor& t : model.layout().tensors()) {
    TensorToWrite w{t.name, t.shape, model.params() + t.offset, options.bf16};
    const size_t bytes = StoredBytes(w);
    if (!files.back().empty() && in_file + bytes > static_cast<size_t>(options.max_shard_bytes)) {
      files.emplace_back();
      in_file = 0;
    }
    files.back().push_back(w);
    in_file += bytes;
    total += bytes;
  }
  // transformers refuses safetensors files without format=pt.
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (files.size() == 1) return WriteSafetensors((out / "model.safetensors").string(), files[0], metadata);
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, files.size());
    LOOM_RETURN_IF_ERROR(WriteSafetensors((out / name).string(), files[i], metadata));
    for (const TensorToWrite& t : files[i]) weight_map[t.name] = name;
  }
  index["weight_map"] = weight_map;
  return WriteFileDurably((out / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

nlohmann::ordered_json AddedToken(const std::string& content) {
  return {{"content", content}, {"lstrip", false},  {"normalized", false},
          {"rstrip", false},    {"single_word", false}, {"special", true}};
}

// The tokenizer file and its configuration; `config` (config.json) gets the special ids.
absl::Status WriteTokenizer(const data::Tokenizer& tokenizer, const std::string& chat_template,
                            int max_positions, const fs::path& out, nlohmann::ordered_json* config,
                            nlohmann::ordered_json* generation) {
  const bool hf_json = fs::path(tokenizer.path()).extension() == ".json";
  LOOM_ASSIGN_OR_RETURN(std::string bytes, ReadFile(tokenizer.path()));
  LOOM_RETURN_IF_ERROR(WriteFileDurably((out / (hf_json ? "tokenizer.json" : "tokenizer.model")).string(), bytes));

  nlohmann::ordered_json tc;
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  nlohmann::ordered_json added = nlohmann::ordered_json::object();
  tc["tokenizer_class"] = hf_json ? "PreTrainedTokenizerFast" : "LlamaTokenizer";
  // Loom adds no BOS and no EOS when it encodes, and no dummy prefix (data/tokenizer.h).
  tc["add_bos_token"] = false;
  tc["add_eos_token"] = false;
  tc["add_prefix_space"] = false;
  tc["legacy"] = false;
  tc["clean_up_tokenization_spaces"] = false;
  tc["model_max_length"] = max_positions;
  // bos, eos and pad ids go in config.json and generation_config.json as well.
  auto special = [&](const char* key, int32_t id, bool model_config) {
    if (id < 0) return;
    const std::string piece = tokenizer.IdToPiece(id);
    tc[key] = piece;
    map[key] = piece;
    added[std::to_string(id)] = AddedToken(piece);
    if (!model_config) return;
    (*config)[std::string(key) + "_id"] = id;
    (*generation)[std::string(key) + "_id"] = id;
  };
  special("bos_token", tokenizer.bos_id(), true);
  special("eos_token", tokenizer.eos_id(), true);
  special("unk_token", tokenizer.unk_id(), false);
  special("pad_token", tokenizer.pad_id(), true);
  std::vector<std::string> extra;
  for (const char* piece : {data::kImStart, data::kImEnd}) {
    const int32_t id = tokenizer.PieceToId(piece);
    if (id < 0) continue;
    extra.push_back(piece);
    added[std::to_string(id)] = AddedToken(piece);
  }
  if (!extra.empty()) {
    tc["additional_special_tokens"] = extra;
    map["additional_special_tokens"] = extra;
  }
  tc["added_tokens_decoder"] = added;
  if (!chat_template.empty()) {
    LOOM_ASSIGN_OR_RETURN(data::ChatTemplate tmpl, data::ParseChatTemplate(chat_template));
    tc["chat_template"] = data::JinjaChatTemplate(tmpl);
    // A ChatML assistant turn ends with <|im_end|>: generation stops there as well as at EOS.
    const int32_t im_end = tokenizer.PieceToId(data::kImEnd);
    if (tmpl == data::ChatTemplate::kChatML && im_end >= 0 && tokenizer.eos_id() >= 0) {
      (*generation)["eos_token_id"] = {tokenizer.eos_id(), im_end};
    }
  }
  LOOM_RETURN_IF_ERROR(WriteFileDurably((out / "tokenizer_config.json").string(), tc.dump(2) + "\n"));
  return WriteFileDurably((out / "special_tokens_map.json").string(), map.dump(2) + "\n");
}

}  // namespace

absl::StatusOr<std::string> ExportHuggingFace(const std::string& checkpoint_dir, const std::string& out_dir,
                                              const HfExportOptions& options) {
  if (options.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max shard size must be positive, not ", options.max_shard_bytes));
  }
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !(fs::is_directory(out_dir, ec) && fs::is_empty(out_dir, ec))) {
    return absl::AlreadyExistsError(absl::StrCat(
        out_dir, " exists and is not an empty directory: export into a new one (files of an older export "
                 "would mix with this one's)"));
  }
  absl::StatusOr<loom::v1::CheckpointManifest> manifest =
      ReadCheckpointManifest(checkpoint_dir, /*verify=*/false);
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<TransformerConfig> config = TransformerConfig::FromProto(manifest->model());
  if (!config.ok()) return config.status();

  // The tokenizer and chat template: the options', else the checkpoint's.
  std::vector<std::string> warnings;
  const auto& recorded = manifest->metadata();
  std::string tokenizer_path = options.tokenizer;
  if (tokenizer_path.empty() && recorded.contains("tokenizer")) tokenizer_path = recorded.at("tokenizer");
  std::string chat_template = options.chat_template;
  if (chat_template.empty() && recorded.contains("chat_template")) chat_template = recorded.at("chat_template");
  if (chat_template == "none") chat_template.clear();
  if (!chat_template.empty() && !data::ParseChatTemplate(chat_template).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template '", chat_template, "' is not one of chatml, alpaca, none"));
  }
  std::unique_ptr<data::Tokenizer> tokenizer;
  if (tokenizer_path.empty()) {
    warnings.push_back(
        "the checkpoint records no tokenizer (it was imported or written before Loom recorded one): the export "
        "has weights and config only; pass --tokenizer FILE to include it");
  } else {
    absl::StatusOr<std::unique_ptr<data::Tokenizer>> loaded = data::Tokenizer::Load(tokenizer_path);
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(),
                          absl::StrCat("the tokenizer ", tokenizer_path, options.tokenizer.empty() ? " (recorded in the checkpoint)" : "",
                                       ": ", loaded.status().message(), "; pass --tokenizer FILE"));
    }
    tokenizer = *std::move(loaded);
    if (!manifest->tokenizer_sha256().empty() && manifest->tokenizer_sha256() != tokenizer->hash()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the checkpoint was trained with tokenizer sha256 ", manifest->tokenizer_sha256(), ", but ",
          tokenizer_path, " has sha256 ", tokenizer->hash(), ": pass --tokenizer with the one it was trained with"));
    }
    if (tokenizer->vocab_size() > config->vocab) {
      return absl::FailedPreconditionError(absl::StrCat("the tokenizer ", tokenizer_path, " has ",
                                                        tokenizer->vocab_size(), " pieces, more than the model's vocab_size ",
                                                        config->vocab));
    }
  }
  if (!chat_template.empty() && tokenizer == nullptr) {
    warnings.push_back("without a tokenizer the chat template is not written");
  }

  Transformer model(*config);
  if (auto loaded = LoadWeights(checkpoint_dir, &model); !loaded.ok()) return loaded.status();
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  const fs::path out(out_dir);
  LOOM_RETURN_IF_ERROR(WriteWeights(model, options, out));

  nlohmann::ordered_json json = ConfigJson(manifest->model(), *config);
  json["torch_dtype"] = options.bf16 ? "bfloat16" : "float32";
  nlohmann::ordered_json generation = nlohmann::ordered_json::object();
  if (tokenizer != nullptr) {
    LOOM_RETURN_IF_ERROR(WriteTokenizer(*tokenizer, chat_template, json["max_position_embeddings"].get<int>(), out,
                                        &json, &generation));
  }
  LOOM_RETURN_IF_ERROR(WriteFileDurably((out / "config.json").string(), json.dump(2) + "\n"));
  LOOM_RETURN_IF_ERROR(WriteFileDurably((out / "generation_config.json").string(), generation.dump(2) + "\n"));
  if (config->sliding_window > 0) {
    warnings.push_back(
        "this model uses sliding-window attention, which LlamaConfig cannot express; Loom wrote it as "
        "loom_sliding_window(_layers), which Hugging Face ignores (it would attend globally)");
  }
  return absl::StrJoin(warnings, "\n");
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
