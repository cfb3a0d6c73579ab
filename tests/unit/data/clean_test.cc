#include "data/clean.h"

#include <string>
#include <vector>

#include "data/hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::data {
namespace {

// A document of `words` words drawn from a vocabulary of 3000 made-up words.
std::string RandomDoc(SplitMix64& rng, int words) {
  std::string doc;
  for (int i = 0; i < words; ++i) {
    if (i > 0) doc += ' ';
    const uint64_t w = rng.Below(3000);
    doc += "w" + std::to_string(w) + (w % 7 == 0 ? "," : "");
  }
  return doc;
}

// Changes about `fraction` of the words (substitution, deletion or insertion).
std::string Perturb(SplitMix64& rng, const std::string& doc, double fraction) {
  std::vector<std::string> words;
  size_t start = 0;
  while (start <= doc.size()) {
    const size_t end = std::min(doc.find(' ', start), doc.size());
    words.push_back(doc.substr(start, end - start));
    start = end + 1;
  }
  const int edits = std::max(1, static_cast<int>(fraction * words.size()));
  for (int e = 0; e < edits; ++e) {
    const size_t at = rng.Below(words.size());
    switch (rng.Below(3)) {
      case 0:
        words[at] = "edit" + std::to_string(e);
        break;
      case 1:
        words.erase(words.begin() + at);
        break;
      default:
        words.insert(words.begin() + at, "inserted");
        break;
    }
  }
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) out += (i ? " " : "") + words[i];
  return out;
}

TEST(Normalize, FixesLineEndsControlsAndBlankSpace) {
  EXPECT_EQ(NormalizeText("\n\n  Title\r\n\r\n\r\n\r\nbody  \t\n  indented\x01 line\rend \n\n"),
            "Title\n\nbody\n  indented line\nend");
  EXPECT_EQ(NormalizeText("naïve  über"), "naïve  über");
}

TEST(Quality, EachFilterRejectsWhatItNames) {
  QualityOptions o;
  o.min_chars = 10;
  o.max_chars = 100;
  EXPECT_EQ(QualityFilter("a perfectly fine sentence.", o), "");
  EXPECT_EQ(QualityFilter("short", o), kFilterTooShort);
  EXPECT_EQ(QualityFilter(std::string(101, 'a'), o), kFilterTooLong);
  EXPECT_EQ(QualityFilter("|||| ---- ==== #### !!!!", o), kFilterCharClass);
  EXPECT_EQ(QualityFilter("🙂🙂🙂🙂🙂🙂 ok", o), kFilterCharClass);
  EXPECT_EQ(QualityFilter("Съешь же ещё этих мягких булок", o), "");
  EXPECT_EQ(QualityFilter("bad byte \xff here, long enough", o), kFilterInvalidUtf8);
  EXPECT_FALSE(IsValidUtf8("\xc0\x80"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));  // surrogate
}

TEST(Dedup, PlantedExactAndNearDuplicatesAreRemovedAndDistinctKept) {
  SplitMix64 rng(11);
  std::vector<std::string> originals;
  for (int i = 0; i < 300; ++i) originals.push_back(RandomDoc(rng, 150 + static_cast<int>(rng.Below(150))));
  struct Doc {
    std::string text;
    bool duplicate;
  };
  std::vector<Doc> docs;
  for (const std::string& o : originals) docs.push_back({o, false});
  for (int i = 0; i < 40; ++i) docs.push_back({originals[rng.Below(originals.size())], true});  // exact
  for (int i = 0; i < 60; ++i) {
    const double fraction = 0.01 + 0.02 * rng.Uniform();  // 1-3 % of the words edited
    docs.push_back({Perturb(rng, originals[rng.Below(originals.size())], fraction), true});
  }
  ExactDeduper exact;
  NearDeduper near(NearDedupOptions{});
  int exact_removed = 0, near_removed = 0;
  for (const Doc& d : docs) {
    bool kept = false;
    if (!exact.Insert(d.text)) {
      ++exact_removed;
    } else if (!near.Insert(d.text)) {
      ++near_removed;
    } else {
      kept = true;
    }
    if (kept == d.duplicate) {
      ADD_FAILURE() << (d.duplicate ? "duplicate kept: " : "distinct removed: ") << d.text.substr(0, 80);
    }
  }
  EXPECT_EQ(exact_removed, 40);
  EXPECT_EQ(near_removed, 60);
}

TEST(Dedup, SignaturesEstimateJaccard) {
  SplitMix64 rng(5);
  const std::string a = RandomDoc(rng, 400);
  const std::string b = RandomDoc(rng, 400);
  NearDedupOptions o;
  o.bands = 32, o.rows = 8;
  NearDeduper near(o);
  EXPECT_EQ(NearDeduper::EstimatedJaccard(near.Signature(a), near.Signature(a)), 1.0);
  EXPECT_LT(NearDeduper::EstimatedJaccard(near.Signature(a), near.Signature(b)), 0.05);
  EXPECT_GT(NearDeduper::EstimatedJaccard(near.Signature(a), near.Signature(Perturb(rng, a, 0.01))), 0.8);
}

TEST(Decontamination, PlantedEvalNgramsAreRemoved) {
  SplitMix64 rng(23);
  Decontaminator decontam(DecontamOptions{});
  std::vector<std::string> eval;
  for (int i = 0; i < 50; ++i) eval.push_back(RandomDoc(rng, 60));
  const std::string short_eval = "Alice has 12 apples and buys 7 more apples";  // 9 words
  for (const std::string& e : eval) decontam.AddEval(e);
  decontam.AddEval(short_eval);
  decontam.AddEval("What is 2 + 2?");  // too short for n-grams: left to exact dedup
  for (int i = 0; i < 200; ++i) {
    std::string train = RandomDoc(rng, 100);
    EXPECT_FALSE(decontam.Contaminated(train)) << "clean document " << i;
    // Plant 13 consecutive words of an eval document (different case and punctuation).
    const std::string& e = eval[rng.Below(eval.size())];
    size_t start = 0;
    for (int skip = static_cast<int>(rng.Below(40)); skip > 0; --skip) start = e.find(' ', start) + 1;
    size_t end = start;
    for (int w = 0; w < 13; ++w) end = e.find(' ', end + 1);
    std::string planted = e.substr(start, end - start);
    for (char& c : planted) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_TRUE(decontam.Contaminated(train + " " + planted + ". " + train)) << planted;
    // Twelve words of it are not enough.
    const std::string twelve = planted.substr(0, planted.rfind(' '));
    EXPECT_FALSE(decontam.Contaminated(train + " " + twelve + " " + train)) << twelve;
  }
  EXPECT_TRUE(decontam.Contaminated("Question: alice has 12 apples, and buys 7 more apples! How many?"));
  EXPECT_FALSE(decontam.Contaminated("what is 2 2 and other words that follow here"));
}

TEST(Report, FormatsOneRowPerSource) {
  FilterReport r;
  r.by_source["english/train"].input = 10;
  r.by_source["english/train"].kept = 7;
  r.by_source["english/train"].removed[kFilterNearDup] = 3;
  const std::string text = r.Format();
  EXPECT_THAT(text, ::testing::HasSubstr("near_dup"));
  EXPECT_THAT(text, ::testing::HasSubstr("english/train"));
}

}  // namespace
}  // namespace loom::data
