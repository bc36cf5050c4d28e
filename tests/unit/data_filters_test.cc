// The noise filters and the text measures under them: every filter rejects its noise and keeps
// normal English and Chinese text, each can be switched off, bad thresholds are refused, and the
// bundled corpora pass.
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <string>

#include "data/document.hpp"
#include "data/filters.hpp"
#include "data/text_stats.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

// Normal prose, written for these tests.
const char* const kEnglish =
    "The committee met on Tuesday to review the budget for the coming year. After a long discussion, "
    "the members agreed that the library should receive more money for new books, while the road "
    "repairs would wait until the spring. Several residents spoke in favour of the plan.";
const char* const kGlossary =
    "Bronchitis: Inflammation of the mucous membrane of the bronchial tubes, usually causing a cough "
    "and difficulty in breathing.";
// "Diabetes is a metabolic disease marked by high blood sugar. Long-term high blood sugar damages
// the eyes, kidneys, heart, blood vessels and nerves. Patients should control their diet, exercise
// regularly and take their medicine on time under a doctor's guidance."
const char* const kChinese =
    "糖尿病是一种以高血糖为特征的代谢性疾病。长期高血糖会导致眼、肾、心脏、血管和神经的慢性损害。"
    "患者应在医生指导下控制饮食、规律运动并按时服药。";
// "Hypertension is one of the most common chronic diseases; blood pressure should be measured
// regularly, salt intake reduced, and antihypertensive drugs taken as prescribed."
const char* const kChinese2 = "高血压是最常见的慢性病之一，患者应定期测量血压，减少食盐摄入，并遵医嘱服用降压药物。";

DocumentFilter make_filter(const FilterOptions& options = {}) {
  auto filter = DocumentFilter::create(options);
  REQUIRE_OK(filter);
  return *std::move(filter);
}

std::string repeat(const std::string& piece, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += piece;
  return out;
}

FilterOptions only(bool FilterOptions::*flag) {
  FilterOptions options;
  options.check_utf8 = options.check_length = options.check_repetition = options.check_non_word =
      options.check_boilerplate = false;
  options.*flag = true;
  return options;
}

}  // namespace

TEST_CASE("text stats count categories, CJK letters, words and lines", "[unit]") {
  const TextStats s = measure_text("Hello, world! 你好世界 123 don't\nsecond line #tag...");
  CHECK(s.cjk_letters == 4);
  CHECK(s.digits == 3);
  CHECK(s.letters == 10 + 4 + 4 + 6 + 4 + 3);
  CHECK(s.punctuation == 1 + 1 + 1 + 1 + 3);  // , ! ' # ...
  CHECK(s.hash_signs == 1);
  CHECK(s.ellipses == 1);
  CHECK(s.lines == 2);
  CHECK(s.invalid == 0);
  CHECK(s.control == 0);
  // Hello world 你 好 世 界 123 don t second line tag
  REQUIRE(s.word_count == 12);
  REQUIRE(s.words.size() == 12);
  CHECK(s.words[2].chars == 1);
  CHECK(s.words[2].size == 3);
  CHECK(s.words[6].chars == 3);

  const TextStats bad = measure_text("ab\xff" "cd\x07" "e\tf\r\n");
  CHECK(bad.invalid == 1);
  CHECK(bad.first_invalid == 2);
  CHECK(bad.control == 1);
  CHECK(bad.first_control == 5);
  CHECK(bad.first_control_char == 7);
  CHECK(bad.whitespace == 3);
  CHECK(bad.word_count == 4);  // ab cd e f

  const TextStats run = measure_text("ab=====c  ====");
  CHECK(run.longest_run == 5);
  CHECK(run.longest_run_char == '=');
  CHECK(measure_text("").lines == 0);
}

TEST_CASE("default filters keep normal English, glossary and Chinese medical text", "[unit]") {
  const DocumentFilter filter = make_filter();
  for (const char* text : {kEnglish, kGlossary, kChinese, kChinese2}) {
    const FilterVerdict verdict = filter.check(text);
    INFO(text << " -> " << verdict.filter << ": " << verdict.reason);
    CHECK(verdict.keep);
  }
  const std::string multi_line = std::string(kEnglish) + "\n\n" + kGlossary + "\n" + kChinese + "\n";
  CHECK(filter.check(multi_line).keep);
  CHECK(filter.check_tokens(100).keep);
}

TEST_CASE("utf8 filter rejects invalid sequences and control characters", "[unit]") {
  const DocumentFilter filter = make_filter();
  const std::string english = kEnglish;

  FilterVerdict verdict = filter.check(english.substr(0, 40) + "\xc3\x28" + english.substr(40));
  CHECK_FALSE(verdict.keep);
  CHECK(verdict.filter == "utf8");
  CHECK(verdict.reason == "invalid UTF-8 at byte 40");

  CHECK(filter.check(std::string(kChinese) + "\xe4\xbd").filter == "utf8");  // truncated sequence
  CHECK(filter.check(english + "\xed\xa0\x80").filter == "utf8");            // a surrogate

  verdict = filter.check(english + "\x07");
  CHECK(verdict.filter == "utf8");
  CHECK(verdict.reason.find("U+0007") != std::string::npos);
  CHECK(filter.check(english + "\x0c").filter == "utf8");              // form feed
  CHECK(filter.check(english + "\xc2\x85").filter == "utf8");          // NEL (C1 control)
  CHECK(filter.check(english + "\t\r\n" + kGlossary + "\n").keep);     // tab, CR, LF are layout

  const DocumentFilter off = make_filter([] {
    FilterOptions o;
    o.check_utf8 = false;
    return o;
  }());
  CHECK(off.check(english + "\x07").keep);
  CHECK(off.check(english.substr(0, 40) + "\xff" + english.substr(40)).keep);
}

TEST_CASE("length filter counts characters, not bytes, and tokens", "[unit]") {
  const DocumentFilter filter = make_filter();
  FilterVerdict verdict = filter.check("Too short.");
  CHECK(verdict.filter == "length");
  CHECK(verdict.reason == "10 characters, fewer than min_chars 20");
  // 10 Chinese characters are 30 bytes but 10 characters.
  CHECK(filter.check("糖尿病是一种代谢疾病").filter == "length");
  CHECK(filter.check(kChinese2).keep);

  FilterOptions options;
  options.max_chars = 100;
  options.max_tokens = 50;
  const DocumentFilter bounded = make_filter(options);
  verdict = bounded.check(kEnglish);
  CHECK(verdict.filter == "length");
  CHECK(verdict.reason.find("more than max_chars 100") != std::string::npos);

  CHECK(bounded.check_tokens(7).filter == "length");
  CHECK(bounded.check_tokens(8).keep);
  CHECK(bounded.check_tokens(50).keep);
  CHECK(bounded.check_tokens(51).reason == "51 tokens, more than max_tokens 50");
  CHECK(filter.check_tokens(1000000).keep);  // max_tokens 0: no upper bound

  options.check_length = false;
  const DocumentFilter off = make_filter(options);
  CHECK(off.check("Too short.").keep);
  CHECK(off.check(kEnglish).keep);
  CHECK(off.check_tokens(1).keep);
}

TEST_CASE("repetition filter rejects character runs, word runs and repeated n-grams", "[unit]") {
  const DocumentFilter filter = make_filter();
  const std::string english = kEnglish;

  FilterVerdict verdict = filter.check(english + " " + repeat("=", 45));
  CHECK(verdict.filter == "repetition");
  CHECK(verdict.reason == "character run of 45 x '='");
  CHECK(filter.check(english + " " + repeat("=", 30)).keep);  // max_char_run is 30: kept
  CHECK(filter.check(english + repeat(" ", 60) + kGlossary).keep);  // whitespace is layout, not a run

  // A Chinese line with a long run of one character ("ah").
  verdict = filter.check(std::string(kChinese2) + repeat("啊", 40));
  CHECK(verdict.filter == "repetition");
  CHECK(verdict.reason == "character run of 40 x '啊'");

  verdict = filter.check(english + repeat(" very", 12) + " good.");
  CHECK(verdict.filter == "repetition");
  CHECK(verdict.reason == "word 'very' repeated 12 times in a row");
  CHECK(filter.check(english + repeat(" very", 8) + " good.").keep);  // max_word_run is 8

  // Top 2-gram: "buy now" covers far more than 20% of the characters.
  verdict = filter.check("Great offer today: " + repeat("buy now, ", 6) + "before it ends.");
  CHECK(verdict.filter == "repetition");
  CHECK(verdict.reason.find("2-gram 'buy now'") == 0);

  // Duplicate 5-grams: a paragraph pasted twice.
  verdict = filter.check(english + " " + english);
  CHECK(verdict.filter == "repetition");
  CHECK(verdict.reason.find("repeated 5-grams cover") == 0);
  // ... and in Chinese, where each character is a word.
  CHECK(filter.check(std::string(kChinese) + kChinese).filter == "repetition");

  FilterOptions options;
  options.check_repetition = false;
  const DocumentFilter off = make_filter(options);
  CHECK(off.check(english + " " + repeat("=", 45)).keep);
  CHECK(off.check(english + repeat(" very", 12) + " good.").keep);
  CHECK(off.check(english + " " + english).keep);
}

TEST_CASE("non-word filter rejects symbol, digit and markup soup", "[unit]") {
  const DocumentFilter filter = make_filter();
  FilterVerdict verdict = filter.check("$$ 100 %% 200 ^^ 300 && 400 ** 500 ++ 600 -- 700 == 800 ok");
  CHECK(verdict.filter == "non_word");
  CHECK(verdict.reason.find("letters are") == 0);
  // Mostly CJK punctuation and symbols, a few Chinese letters.
  CHECK(filter.check("【】《》★☆◆◇※→←↑↓『』「」〔〕［］｛｝〈〉医生").filter == "non_word");
  CHECK(filter.check("0800-555-0199 / 0611-324-0123 / 0700-918-0147 / 0935-272-0188").filter == "non_word");

  // '#' and ellipses per word (Gopher's symbol-to-word ratio).
  verdict = filter.check("#health #fitness #diet #sleep #news and some words here to read");
  CHECK(verdict.filter == "non_word");
  CHECK(verdict.reason.find("5 '#' or ellipses for 11 words") == 0);
  CHECK(filter.check("Wait... what... no... really... yes... it is so.").filter == "non_word");
  CHECK(filter.check(std::string(kEnglish) + " See #3 on page 12...").keep);

  FilterOptions options;
  options.check_non_word = false;
  const DocumentFilter off = make_filter(options);
  CHECK(off.check("$$ 100 %% 200 ^^ 300 && 400 ** 500 ++ 600 -- 700 == 800 ok").keep);
  CHECK(off.check("#health #fitness #diet #sleep #news and some words here to read").keep);
}

TEST_CASE("boilerplate filter rejects documents of repeated lines", "[unit]") {
  const DocumentFilter filter = make_filter();
  // A short navigation line between paragraphs: too little text for the repetition measures,
  // which is why lines are judged on their own.
  const std::string nav = "Share this page\n";
  const std::string page = nav + "Bronchitis is an inflammation of the lining of the tubes that carry air to the lungs.\n" +
                           nav + "It usually causes a cough that brings up mucus, and sometimes wheezing.\n" + nav +
                           "Most cases clear up within three weeks without any specific treatment.\n" + nav;
  FilterVerdict verdict = filter.check(page);
  CHECK(verdict.filter == "boilerplate");
  CHECK(verdict.reason == "3 of 7 lines repeat an earlier line (max 30%)");

  // Trimmed lines compare equal; blank lines are not lines.
  const DocumentFilter lines_only = make_filter(only(&FilterOptions::check_boilerplate));
  CHECK(lines_only.check("  Subscribe now  \nA line of text that is here.\n\n\nSubscribe now\r\nSubscribe now\n").filter ==
        "boilerplate");
  CHECK(lines_only.check("One line.\n\n\n\nAnother line.\n  \nA third line.\n").keep);
  // Two lines: one repeat is no pattern yet.
  CHECK(filter.check("Bronchitis is an inflammation.\nBronchitis is an inflammation.").keep);
  CHECK(filter.check(std::string(kEnglish) + "\n" + kGlossary + "\n" + kChinese + "\n" + kChinese2).keep);

  FilterOptions options;
  options.check_boilerplate = false;
  CHECK(make_filter(options).check(page).keep);
}

TEST_CASE("each filter alone judges only its own noise", "[unit]") {
  const std::string noise_utf8 = std::string(kEnglish) + "\x01";
  const std::string noise_run = std::string(kEnglish) + repeat("!", 50);
  const std::string noise_symbols = "$$ 100 %% 200 ^^ 300 && 400 ** 500 ++ 600 -- 700 == 800 ok";
  CHECK_FALSE(make_filter(only(&FilterOptions::check_utf8)).check(noise_utf8).keep);
  CHECK(make_filter(only(&FilterOptions::check_utf8)).check(noise_run).keep);
  CHECK_FALSE(make_filter(only(&FilterOptions::check_repetition)).check(noise_run).keep);
  CHECK(make_filter(only(&FilterOptions::check_repetition)).check(noise_symbols).keep);
  CHECK_FALSE(make_filter(only(&FilterOptions::check_non_word)).check(noise_symbols).keep);
  CHECK(make_filter(only(&FilterOptions::check_non_word)).check("short").keep);
  CHECK_FALSE(make_filter(only(&FilterOptions::check_length)).check("short").keep);

  FilterOptions none = only(&FilterOptions::check_utf8);
  none.check_utf8 = false;
  const DocumentFilter off = make_filter(none);
  for (const std::string& text : {noise_utf8, noise_run, noise_symbols, std::string("short"), std::string()}) {
    CHECK(off.check(text).keep);
  }
}

TEST_CASE("filter options with impossible thresholds are refused", "[unit]") {
  auto refused = [](FilterOptions options, const std::string& name) {
    auto filter = DocumentFilter::create(options);
    INFO(status_text(filter));
    REQUIRE_FALSE(filter.ok());
    CHECK(filter.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(filter.status().message()).find(name) != std::string::npos);
  };
  FilterOptions o;
  o.min_chars = -1;
  refused(o, "min_chars");
  o = {};
  o.max_chars = 10;
  refused(o, "max_chars");  // below min_chars 20
  o = {};
  o.max_tokens = -5;
  refused(o, "max_tokens");
  o = {};
  o.max_char_run = 0;
  refused(o, "max_char_run");
  o = {};
  o.max_word_run = -1;
  refused(o, "max_word_run");
  o = {};
  o.max_top_ngram_fraction = 1.5;
  refused(o, "max_top_ngram_fraction");
  o = {};
  o.max_duplicate_ngram_fraction = std::nan("");
  refused(o, "max_duplicate_ngram_fraction");
  o = {};
  o.min_letter_fraction = -0.1;
  refused(o, "min_letter_fraction");
  o = {};
  o.max_symbol_word_ratio = std::numeric_limits<double>::infinity();
  refused(o, "max_symbol_word_ratio");
  o = {};
  o.max_duplicate_line_fraction = 2.0;
  refused(o, "max_duplicate_line_fraction");

  o = {};
  o.max_chars = 0;  // no upper bound
  o.min_letter_fraction = 0.0;
  o.max_top_ngram_fraction = 1.0;
  REQUIRE_OK(DocumentFilter::create(o));
}

TEST_CASE("document text joins chat messages by newlines", "[unit]") {
  Document doc;
  doc.text = "plain";
  CHECK(document_text(doc) == "plain");
  doc.text.clear();
  doc.messages = {{"user", "Question?"}, {"assistant", ""}, {"user", "More."}};
  CHECK(document_text(doc) == "Question?\n\nMore.");
}

// The bundled corpora (data/corpora, generated at set-up) are the normal text the defaults must
// keep: Brown corpus paragraphs and medical glossary entries. Each filter alone drops < 2%.
TEST_CASE("default filters keep the bundled corpora", "[unit]") {
  const auto dir = source_dir() / "data" / "corpora";
  for (const char* name : {"general_train.txt", "medical_train.txt"}) {
    std::ifstream in(dir / name);
    if (!in) {
      WARN("no " << (dir / name) << " (scripts/corpora.sh makes it): corpus check skipped");
      continue;
    }
    std::map<std::string, int> dropped;
    int documents = 0;
    const DocumentFilter filter = make_filter();
    for (std::string line; std::getline(in, line); ++documents) {
      const FilterVerdict verdict = filter.check(line);
      if (!verdict.keep) ++dropped[verdict.filter];
    }
    REQUIRE(documents > 1000);
    for (const auto& [filter_name, count] : dropped) {
      INFO(name << ": " << filter_name << " dropped " << count << " of " << documents);
      CHECK(count < documents / 50);
    }
  }
}
