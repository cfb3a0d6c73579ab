// A Hugging Face export is what the ecosystem needs to use the model, checked with the
// ecosystem's own tools rather than Loom's: plain PyTorch (tests/integration/hf_reference.py, no
// Loom code) reading the exported safetensors reproduces Loom's logits, in F32 and in sharded
// BF16; and jinja2 rendering the exported chat template gives Loom's text and, tokenized the way
// Hugging Face tokenizers treat special tokens, the tokens Loom trained on.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "tests/integration/run_command.h"
#include "tests/unit/data/bpe_fixture.h"
#include "tests/unit/data/data_test_util.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/model/hf_format.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace {
namespace fs = std::filesystem;

constexpr char kReference[] = LOOM_SOURCE_DIR "/tests/integration/hf_reference.py";

struct Fixture {
  std::string root;
  std::string tokenizer_path;
  std::unique_ptr<data::Tokenizer> tokenizer;
};

// With `bpe`, a Hugging Face byte-level BPE tokenizer.json (Llama-3 pre-tokenizer, a few merges,
// ChatML's special tokens), else Loom's own SentencePiece model.
Fixture Make(const std::string& name, bool bpe = false) {
  Fixture f;
  f.root = ::testing::TempDir() + "/hf_export_" + name;
  fs::remove_all(f.root);
  fs::create_directories(f.root);
  if (bpe) {
    data::testing::HandTokenizer hand;
    hand.llama3 = true;
    hand.merges = {{"t", "h"}, {"th", "e"}, {" ", "the"}, {"a", "n"}, {" ", "an"}, {"e", "r"}, {"o", "u"}};
    f.tokenizer_path = f.root + "/tokenizer.json";
    EXPECT_TRUE(WriteFileDurably(f.tokenizer_path, hand.Build().dump()).ok());
  } else {
    f.tokenizer_path = data::testing::TinyTokenizerModel(320);
  }
  absl::StatusOr<std::unique_ptr<data::Tokenizer>> tokenizer = data::Tokenizer::Load(f.tokenizer_path);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  f.tokenizer = *std::move(tokenizer);
  return f;
}

loom::v1::ModelConfig Model(bool tied) {
  loom::v1::ModelConfig m;
  m.set_layers(2);
  m.set_d_model(48);
  m.set_heads(6);
  m.set_kv_heads(2);
  m.set_ffn_size(96);
  m.set_vocab_size(320);
  m.set_rope_theta(500000);
  m.set_norm_eps(1e-5);
  m.set_tied_embeddings(tied);
  m.set_init_std(0.2);  // large enough that attention is sharp: a wrong position shows in the logits
  m.mutable_rope_scaling()->set_type(loom::v1::RopeScaling::TYPE_LINEAR);
  m.mutable_rope_scaling()->set_factor(2.0);
  return m;
}

// A checkpoint as a stage writes it: the tokenizer and chat template recorded in its manifest.
std::string SaveCheckpointOf(const Fixture& f, const loom::v1::ModelConfig& m, const std::string& chat_template) {
  Transformer model(*TransformerConfig::FromProto(m));
  model.InitWeights(5);
  loom::v1::CheckpointManifest manifest;
  manifest.set_plan_id("hf-1");
  manifest.set_stage("sft");
  manifest.set_step(1);
  *manifest.mutable_model() = m;
  manifest.set_tokenizer_sha256(f.tokenizer->hash());
  (*manifest.mutable_metadata())["tokenizer"] = f.tokenizer_path;
  (*manifest.mutable_metadata())["chat_template"] = chat_template;
  const std::string dir = f.root + "/ckpt";
  EXPECT_TRUE(SaveCheckpoint(dir, model, nullptr, manifest).ok());
  return dir;
}

// Loom's logits for one sequence, from the weights `dir` holds (a Loom checkpoint).
std::vector<float> LoomLogits(const std::string& dir, const std::vector<int32_t>& ids) {
  absl::StatusOr<std::unique_ptr<Transformer>> model = LoadModel(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  data::TokenBatch batch;
  batch.Reset(1, static_cast<int>(ids.size()));
  batch.inputs = ids;
  std::fill(batch.targets.begin(), batch.targets.end(), data::kIgnoreIndex);
  const float* logits = (*model)->Forward(batch);
  const size_t n = ids.size() * static_cast<size_t>((*model)->config().vocab);
  return std::vector<float>(logits, logits + n);
}

nlohmann::json RunReference(const std::string& mode, const std::string& dir, const std::string& arg,
                            const std::string& out) {
  const testing::CommandResult r =
      testing::RunCommand(absl::StrCat("/usr/bin/python3 ", kReference, " ", mode, " ", dir, " ", arg, " ", out));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  absl::StatusOr<std::string> text = ReadFile(out);
  if (!text.ok()) return nullptr;
  return nlohmann::json::parse(*text);
}

// Largest |difference| over the largest |logit|.
double RelativeDifference(const std::vector<float>& loom, const nlohmann::json& reference) {
  double largest = 0, diff = 0;
  size_t i = 0;
  for (const auto& row : reference) {
    for (const auto& v : row) {
      const double r = v.get<double>();
      largest = std::max(largest, std::abs(r));
      diff = std::max(diff, std::abs(r - loom.at(i++)));
    }
  }
  EXPECT_EQ(i, loom.size()) << "the reference returned another number of logits";
  std::printf("largest |logit| %.4g, largest difference %.3g\n", largest, diff);
  return diff / largest;
}

void ExpectPyTorchReproducesLoom(bool tied) {
  const Fixture f = Make(tied ? "logits_tied" : "logits");
  const std::string ckpt = SaveCheckpointOf(f, Model(tied), "chatml");
  std::vector<int32_t> ids = f.tokenizer->Encode("the quick brown fox jumps over 12 lazy dogs, twice.");
  ASSERT_GE(ids.size(), 8u);
  const std::string ids_arg = absl::StrJoin(ids, ",");

  // F32, one file: the reference reads exactly Loom's weights.
  ASSERT_TRUE(ExportHuggingFace(ckpt, f.root + "/f32").ok());
  const std::vector<float> loom = LoomLogits(ckpt, ids);
  const nlohmann::json f32 = RunReference("logits", f.root + "/f32", ids_arg, f.root + "/f32.json");
  EXPECT_LT(RelativeDifference(loom, f32), 1e-5);

  // BF16 in shards of at most 32 KB: Loom reads the same rounded weights back with import-hf.
  HfExportOptions bf16;
  bf16.bf16 = true;
  bf16.max_shard_bytes = 32 * 1024;
  ASSERT_TRUE(ExportHuggingFace(ckpt, f.root + "/bf16", bf16).ok());
  const auto index = nlohmann::json::parse(*ReadFile(f.root + "/bf16/model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  EXPECT_GE(shards.size(), 3u);
  EXPECT_FALSE(fs::exists(f.root + "/bf16/model.safetensors"));
  int64_t bytes = 0;
  for (const std::string& shard : shards) {
    ASSERT_TRUE(fs::exists(f.root + "/bf16/" + shard)) << shard;
    EXPECT_LE(fs::file_size(f.root + "/bf16/" + shard), 32 * 1024 + 4096u) << shard;
    bytes += static_cast<int64_t>(fs::file_size(f.root + "/bf16/" + shard));
  }
  EXPECT_LE(index["metadata"]["total_size"].get<int64_t>(), bytes);
  ASSERT_TRUE(ImportHuggingFace(f.root + "/bf16", f.root + "/back").ok());
  const std::vector<float> rounded = LoomLogits(f.root + "/back", ids);
  const nlohmann::json reference = RunReference("logits", f.root + "/bf16", ids_arg, f.root + "/bf16.json");
  EXPECT_LT(RelativeDifference(rounded, reference), 1e-5);
  // ... and the rounding is real: BF16 logits are not F32's.
  EXPECT_GT(RelativeDifference(loom, reference), 1e-5);
}

TEST(HfExport, PlainPyTorchReproducesLoomsLogitsInF32AndShardedBf16) { ExpectPyTorchReproducesLoom(false); }
TEST(HfExport, PlainPyTorchReproducesLoomsLogitsWithTiedEmbeddings) { ExpectPyTorchReproducesLoom(true); }

// Token ids of `text` the way Hugging Face tokenizers encode it: the added (special) tokens are
// split out first and become their ids, the text between them goes through the model.
std::vector<int32_t> HuggingFaceStyleEncode(const data::Tokenizer& tokenizer, const nlohmann::json& config,
                                            std::string text) {
  std::vector<std::pair<std::string, int32_t>> specials;
  for (const auto& [id, token] : config["added_tokens_decoder"].items()) {
    specials.emplace_back(token["content"].get<std::string>(), std::stoi(id));
  }
  std::vector<int32_t> out;
  while (!text.empty()) {
    size_t at = std::string::npos, length = 0;
    int32_t id = -1;
    for (const auto& [content, special_id] : specials) {
      const size_t p = text.find(content);
      if (p < at || (p == at && p != std::string::npos && content.size() > length)) {
        at = p;
        length = content.size();
        id = special_id;
      }
    }
    const std::vector<int32_t> plain = tokenizer.Encode(text.substr(0, at));
    out.insert(out.end(), plain.begin(), plain.end());
    if (at == std::string::npos) break;
    out.push_back(id);
    text = text.substr(at + length);
  }
  return out;
}

void ExpectTemplateMatches(const std::string& name, bool bpe = false) {
  const Fixture f = Make("chat_" + name + (bpe ? "_bpe" : ""), bpe);
  const std::string ckpt = SaveCheckpointOf(f, Model(false), name);
  ASSERT_TRUE(ExportHuggingFace(ckpt, f.root + "/hf").ok());
  const auto config = nlohmann::json::parse(*ReadFile(f.root + "/hf/tokenizer_config.json"));
  ASSERT_TRUE(config.contains("chat_template"));
  const data::ChatTemplate tmpl = *data::ParseChatTemplate(name);

  const std::vector<data::Conversation> conversations = {
      {{"user", "What is 12 + 30?"}, {"assistant", "12 + 30 = 42."}},
      {{"system", "You answer briefly."}, {"user", "Name a colour."}, {"assistant", "Blue"},
       {"user", "Another, in Russian?"}, {"assistant", "Красный — red.\nDone."}},
      {{"user", "  leading spaces and\ttabs\n\nand blank lines  "}, {"assistant", "ok"}},
  };
  nlohmann::json messages = nlohmann::json::array();
  for (const data::Conversation& c : conversations) {
    nlohmann::json turns = nlohmann::json::array();
    for (const data::ChatMessage& m : c) turns.push_back({{"role", m.role}, {"content", m.content}});
    messages.push_back(turns);
  }
  ASSERT_TRUE(WriteFileDurably(f.root + "/conversations.json", messages.dump()).ok());
  const nlohmann::json rendered =
      RunReference("chat", f.root + "/hf", f.root + "/conversations.json", f.root + "/rendered.json");
  ASSERT_EQ(rendered.size(), conversations.size());
  for (size_t i = 0; i < conversations.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(name, " conversation ", i));
    const std::string text = rendered[i]["text"].get<std::string>();
    if (!bpe) EXPECT_EQ(text, data::RenderText(conversations[i], tmpl));  // a BPE's EOS is not </s>
    absl::StatusOr<data::TokenizedExample> loom = data::TokenizeConversation(conversations[i], tmpl, *f.tokenizer);
    ASSERT_TRUE(loom.ok()) << loom.status();
    EXPECT_EQ(HuggingFaceStyleEncode(*f.tokenizer, config, text), loom->tokens);

    data::Conversation prompt = conversations[i];
    prompt.pop_back();
    absl::StatusOr<std::vector<int32_t>> loom_prompt = data::TokenizePrompt(prompt, tmpl, *f.tokenizer);
    ASSERT_TRUE(loom_prompt.ok()) << loom_prompt.status();
    EXPECT_EQ(HuggingFaceStyleEncode(*f.tokenizer, config, rendered[i]["prompt"].get<std::string>()), *loom_prompt);
  }
}

TEST(HfExport, TheJinjaChatTemplateGivesLoomsTextAndTokensForChatML) { ExpectTemplateMatches("chatml"); }
TEST(HfExport, TheJinjaChatTemplateGivesLoomsTextAndTokensForAlpaca) { ExpectTemplateMatches("alpaca"); }

TEST(HfExport, WithAHuggingFaceBpeTokenizerTheTemplatesGiveLoomsTokensToo) {
  ExpectTemplateMatches("chatml", /*bpe=*/true);
  ExpectTemplateMatches("alpaca", /*bpe=*/true);
  const Fixture f = Make("files_bpe", /*bpe=*/true);
  ASSERT_TRUE(ExportHuggingFace(SaveCheckpointOf(f, Model(false), "chatml"), f.root + "/hf").ok());
  EXPECT_EQ(*ReadFile(f.root + "/hf/tokenizer.json"), *ReadFile(f.tokenizer_path));
  EXPECT_FALSE(fs::exists(f.root + "/hf/tokenizer.model"));
  const auto tc = nlohmann::json::parse(*ReadFile(f.root + "/hf/tokenizer_config.json"));
  EXPECT_EQ(tc["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(tc["eos_token"], "<|endoftext|>");
  EXPECT_FALSE(tc.contains("bos_token"));
}

TEST(HfExport, TheExportShipsTheTokenizerAndItsSpecialTokens) {
  const Fixture f = Make("files");
  const std::string ckpt = SaveCheckpointOf(f, Model(false), "chatml");
  absl::StatusOr<std::string> warnings = ExportHuggingFace(ckpt, f.root + "/hf");
  ASSERT_TRUE(warnings.ok()) << warnings.status();
  EXPECT_EQ(*warnings, "");
  EXPECT_EQ(*ReadFile(f.root + "/hf/tokenizer.model"), *ReadFile(f.tokenizer_path));
  const auto tc = nlohmann::json::parse(*ReadFile(f.root + "/hf/tokenizer_config.json"));
  EXPECT_EQ(tc["tokenizer_class"], "LlamaTokenizer");
  EXPECT_EQ(tc["bos_token"], "<s>");
  EXPECT_EQ(tc["eos_token"], "</s>");
  EXPECT_EQ(tc["add_bos_token"], false);
  const int32_t im_end = f.tokenizer->PieceToId(data::kImEnd);
  EXPECT_EQ(tc["added_tokens_decoder"][std::to_string(im_end)]["content"], data::kImEnd);
  const auto map = nlohmann::json::parse(*ReadFile(f.root + "/hf/special_tokens_map.json"));
  EXPECT_EQ(map["additional_special_tokens"], nlohmann::json({data::kImStart, data::kImEnd}));
  const auto generation = nlohmann::json::parse(*ReadFile(f.root + "/hf/generation_config.json"));
  EXPECT_EQ(generation["eos_token_id"], nlohmann::json({f.tokenizer->eos_id(), im_end}));
  const auto config = nlohmann::json::parse(*ReadFile(f.root + "/hf/config.json"));
  EXPECT_EQ(config["eos_token_id"], f.tokenizer->eos_id());
  EXPECT_EQ(config["torch_dtype"], "float32");

  // Another tokenizer than the one trained with is refused, naming both hashes.
  const std::string other = data::testing::TinyTokenizerModel(400);
  HfExportOptions wrong;
  wrong.tokenizer = other;
  absl::StatusOr<std::string> refused = ExportHuggingFace(ckpt, f.root + "/wrong", wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(f.tokenizer->hash()), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("--tokenizer"), std::string::npos) << refused.status();
  // An existing export is never mixed with a new one.
  absl::StatusOr<std::string> again = ExportHuggingFace(ckpt, f.root + "/hf");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("not an empty directory"), std::string::npos) << again.status();
  // Without a chat template: none written, and generation stops at EOS only.
  HfExportOptions plain;
  plain.chat_template = "none";
  ASSERT_TRUE(ExportHuggingFace(ckpt, f.root + "/plain", plain).ok());
  EXPECT_FALSE(nlohmann::json::parse(*ReadFile(f.root + "/plain/tokenizer_config.json")).contains("chat_template"));
  EXPECT_EQ(nlohmann::json::parse(*ReadFile(f.root + "/plain/generation_config.json"))["eos_token_id"],
            f.tokenizer->eos_id());
}

}  // namespace
}  // namespace loom::engine
