#include "temper/data_mixer.hpp"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "data/chat_template.hpp"
#include "data/dedup.hpp"
#include "data/document.hpp"
#include "data/filters.hpp"
#include "data/packer.hpp"
#include "data/readers.hpp"
#include "data/share_schedule.hpp"
#include "io/atomic_file.hpp"
#include "io/json_file.hpp"
#include "model/loss.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

constexpr int kStateVersion = 1;
constexpr size_t kExamplesPerFilter = 3;

void count_drop(SourceReport& report, const std::string& filter, const Document& doc, size_t bytes,
                const std::string& reason) {
  FilterCount& count = report.dropped[filter];
  ++count.documents;
  count.bytes += static_cast<int64_t>(bytes);
  if (count.examples.size() < kExamplesPerFilter) count.examples.push_back(str_cat(doc.origin, ": ", reason));
}

nlohmann::json report_to_json(const MixReport& report) {
  nlohmann::json sources = nlohmann::json::array();
  for (const SourceReport& s : report.sources) {
    nlohmann::json dropped = nlohmann::json::object();
    for (const auto& [filter, c] : s.dropped) {
      dropped[filter] = {{"documents", c.documents}, {"bytes", c.bytes}, {"examples", c.examples}};
    }
    sources.push_back({{"name", s.name}, {"role", s.role}, {"target_share", s.target_share},
                       {"achieved_share", s.achieved_share}, {"documents_in", s.documents_in},
                       {"bytes_in", s.bytes_in}, {"malformed", s.malformed},
                       {"malformed_examples", s.malformed_examples}, {"dropped", dropped},
                       {"documents_kept", s.documents_kept}, {"tokens_kept", s.tokens_kept},
                       {"truncated", s.truncated}, {"epochs", s.epochs}, {"exhausted", s.exhausted}});
  }
  return {{"tokens_mixed", report.tokens_mixed}, {"batches", report.batches}, {"sources", sources}};
}

void report_from_json(const nlohmann::json& j, MixReport& report) {
  report.tokens_mixed = j.at("tokens_mixed").get<int64_t>();
  report.batches = j.at("batches").get<int64_t>();
  const auto& sources = j.at("sources");
  for (size_t i = 0; i < report.sources.size(); ++i) {
    const auto& s = sources.at(i);
    SourceReport& r = report.sources[i];
    r.achieved_share = s.at("achieved_share").get<double>();
    r.documents_in = s.at("documents_in").get<int64_t>();
    r.bytes_in = s.at("bytes_in").get<int64_t>();
    r.malformed = s.at("malformed").get<int64_t>();
    r.malformed_examples = s.at("malformed_examples").get<std::vector<std::string>>();
    r.dropped.clear();
    for (auto it = s.at("dropped").begin(); it != s.at("dropped").end(); ++it) {
      r.dropped[it.key()] = {it->at("documents").get<int64_t>(), it->at("bytes").get<int64_t>(),
                             it->at("examples").get<std::vector<std::string>>()};
    }
    r.documents_kept = s.at("documents_kept").get<int64_t>();
    r.tokens_kept = s.at("tokens_kept").get<int64_t>();
    r.truncated = s.at("truncated").get<int64_t>();
    r.epochs = s.at("epochs").get<int64_t>();
    r.exhausted = s.at("exhausted").get<bool>();
  }
}

}  // namespace

std::string MixReport::to_json() const { return report_to_json(*this).dump(2); }

struct DataMixer::Impl {
  struct Source {
    SourceSpec spec;
    std::unique_ptr<DocumentReader> reader;
    std::optional<DocumentFilter> filter;
    int64_t kept_this_pass = 0;
    int64_t pass = 0;     // completed passes (epochs) over this source
    int64_t ordinal = 0;  // documents read in the current pass
    // Deduplication runs in the first pass only: a later pass re-reads the same documents, which
    // the index would all call duplicates. Instead the first pass's duplicate verdicts (by
    // document ordinal, in increasing order) are replayed; filters are deterministic and rerun.
    std::vector<std::pair<int64_t, bool>> duplicates;  // (ordinal, near?)
    int64_t malformed_seen = 0;  // reader counts already folded into the report
    int64_t examples_seen = 0;
  };

  MixerOptions options;
  const Tokenizer* tokenizer = nullptr;
  std::vector<Source> sources;
  std::vector<Deduplicator> dedup;  // one, or one per source
  std::unique_ptr<ShareSchedule> schedule;
  std::vector<double> credits;
  std::vector<bool> active;
  SequencePacker packer{1};
  ChatTemplate chat_template = ChatTemplate::kPlain;
  MixReport report;

  Deduplicator* dedup_for(size_t source) {
    if (dedup.empty()) return nullptr;
    return &dedup[options.dedup.across_sources ? 0 : source];
  }

  // Folds what the reader counted since the last call into the report (the reader's own counts
  // start again at 0 when a state is restored into a fresh reader; the report's do not).
  void sync_reader_stats(size_t i) {
    const ReaderStats& stats = sources[i].reader->stats();
    SourceReport& r = report.sources[i];
    r.malformed += stats.malformed - sources[i].malformed_seen;
    for (size_t k = static_cast<size_t>(std::max<int64_t>(0, sources[i].examples_seen));
         k < stats.malformed_examples.size() && r.malformed_examples.size() < 5; ++k) {
      r.malformed_examples.push_back(stats.malformed_examples[k]);
    }
    sources[i].malformed_seen = stats.malformed;
    sources[i].examples_seen = static_cast<int64_t>(stats.malformed_examples.size());
  }

  // The next document of source i that passes filters and dedup, tokenized (pre-training) or
  // rendered (SFT); nullopt when the source has left the mix.
  struct Drawn {
    std::vector<TokenId> ids;
    std::vector<bool> target;  // SFT only
  };
  StatusOr<std::optional<Drawn>> draw(size_t i);

  // Applies the exhaustion policy to source i, which just ended a pass.
  Status exhausted(size_t i);

  void account(size_t i, int64_t tokens) {
    const std::vector<double> shares = schedule->shares(report.tokens_mixed, active);
    for (size_t j = 0; j < credits.size(); ++j) {
      if (active[j]) credits[j] += shares[j] * static_cast<double>(tokens);
    }
    credits[i] -= static_cast<double>(tokens);
    report.tokens_mixed += tokens;
    report.sources[i].tokens_kept += tokens;
    for (size_t j = 0; j < sources.size(); ++j) {
      report.sources[j].achieved_share =
          static_cast<double>(report.sources[j].tokens_kept) / static_cast<double>(report.tokens_mixed);
      report.sources[j].target_share = schedule->shares(report.tokens_mixed, active)[j];
    }
  }
};

Status DataMixer::Impl::exhausted(size_t i) {
  Source& s = sources[i];
  SourceReport& r = report.sources[i];
  if (s.kept_this_pass == 0) {
    return absl::FailedPreconditionError(str_cat("DataMixer: source \"", s.spec.name, "\" yields no document after ",
                                                 "filtering and deduplication (", r.documents_in, " read, ", r.malformed,
                                                 " malformed); see the mix report for why"));
  }
  ++r.epochs;
  ++s.pass;
  s.ordinal = 0;
  s.kept_this_pass = 0;
  switch (options.on_exhausted) {
    case ExhaustionPolicy::kRestart:
      return s.reader->rewind();
    case ExhaustionPolicy::kRenormalize:
      r.exhausted = true;
      active[i] = false;
      credits[i] = 0.0;
      return absl::OkStatus();
    case ExhaustionPolicy::kStop:
      r.exhausted = true;
      std::fill(active.begin(), active.end(), false);
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

StatusOr<std::optional<DataMixer::Impl::Drawn>> DataMixer::Impl::draw(size_t i) {
  Source& s = sources[i];
  SourceReport& r = report.sources[i];
  for (;;) {
    if (!active[i]) return std::optional<Drawn>();
    TEMPER_ASSIGN_OR_RETURN(std::optional<Document> doc, s.reader->next());
    sync_reader_stats(i);
    if (!doc) {
      TEMPER_RETURN_IF_ERROR(exhausted(i));
      continue;
    }
    ++r.documents_in;
    const int64_t ordinal = s.ordinal++;
    const bool pretokenized = s.spec.format == SourceFormat::kTokenShard;
    const std::string text = pretokenized ? std::string() : document_text(*doc);
    r.bytes_in += static_cast<int64_t>(pretokenized ? doc->tokens.size() * sizeof(TokenId) : text.size());
    if (!pretokenized) {
      const FilterVerdict verdict = s.filter->check(text);
      if (!verdict.keep) {
        count_drop(r, verdict.filter, *doc, text.size(), verdict.reason);
        continue;
      }
      std::optional<bool> duplicate;  // near?
      if (s.pass > 0) {
        auto it = std::lower_bound(s.duplicates.begin(), s.duplicates.end(), std::make_pair(ordinal, false));
        if (it != s.duplicates.end() && it->first == ordinal) duplicate = it->second;
      } else if (Deduplicator* d = dedup_for(i)) {
        const Deduplicator::Verdict v = d->check_and_insert(text);
        if (v != Deduplicator::Verdict::kUnique) {
          duplicate = v == Deduplicator::Verdict::kNearDuplicate;
          s.duplicates.emplace_back(ordinal, *duplicate);
        }
      }
      if (duplicate) {
        count_drop(r, *duplicate ? "near_duplicate" : "exact_duplicate", *doc, text.size(),
                   *duplicate ? "MinHash estimate above the threshold" : "same normalised text seen before");
        continue;
      }
    }
    Drawn drawn;
    if (options.objective == Objective::kSft) {
      if (doc->messages.empty()) {
        count_drop(r, "not_a_conversation", *doc, text.size(), "SFT needs instruction or chat records");
        continue;
      }
      absl::StatusOr<RenderedExample> rendering = render_chat(chat_template, doc->messages, *tokenizer, options.add_bos);
      if (absl::IsInvalidArgument(rendering.status())) {  // e.g. roles the template cannot alternate
        count_drop(r, "unrenderable", *doc, text.size(), std::string(rendering.status().message()));
        continue;
      }
      if (!rendering.ok()) return rendering.status();
      RenderedExample rendered = std::move(*rendering);
      if (static_cast<int64_t>(rendered.ids.size()) > options.seq_len) {
        rendered.ids.resize(options.seq_len);
        rendered.is_target.resize(options.seq_len);
        ++r.truncated;
      }
      if (std::find(rendered.is_target.begin(), rendered.is_target.end(), true) == rendered.is_target.end()) {
        count_drop(r, "too_long", *doc, text.size(), "no response token fits within seq_len");
        continue;
      }
      drawn.ids = std::move(rendered.ids);
      drawn.target = std::move(rendered.is_target);
    } else if (pretokenized) {
      drawn.ids = std::move(doc->tokens);
    } else {
      TEMPER_ASSIGN_OR_RETURN(drawn.ids, tokenizer->encode_with(text, options.add_bos, options.add_eos));
    }
    const FilterVerdict tokens_ok = s.filter->check_tokens(static_cast<int64_t>(drawn.ids.size()));
    if (!tokens_ok.keep) {
      count_drop(r, tokens_ok.filter, *doc, text.size(), tokens_ok.reason);
      continue;
    }
    ++r.documents_kept;
    ++s.kept_this_pass;
    return std::optional<Drawn>(std::move(drawn));
  }
}

DataMixer::DataMixer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataMixer::~DataMixer() = default;

StatusOr<std::unique_ptr<DataMixer>> DataMixer::create(const MixerOptions& options, const Tokenizer& tokenizer) {
  if (options.sources.empty()) return absl::InvalidArgumentError("DataMixer: no sources");
  if (options.batch_size < 1 || options.seq_len < 2) {
    return absl::InvalidArgumentError("DataMixer: batch_size must be >= 1 and seq_len >= 2");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->tokenizer = &tokenizer;
  std::set<std::string> names;
  std::vector<std::string> source_names;
  std::vector<double> weights;
  for (const SourceSpec& spec : options.sources) {
    if (spec.name.empty() || !names.insert(spec.name).second) {
      return absl::InvalidArgumentError(str_cat("DataMixer: source names must be unique and non-empty (\"", spec.name, "\")"));
    }
    if (!std::isfinite(spec.weight) || spec.weight <= 0.0) {
      return absl::InvalidArgumentError(str_cat("DataMixer: source \"", spec.name, "\" has weight ", spec.weight,
                                                "; weights must be finite and positive"));
    }
    if (options.objective == Objective::kSft && spec.format != SourceFormat::kJsonlChat &&
        spec.format != SourceFormat::kJsonlInstruction) {
      return absl::InvalidArgumentError(str_cat("DataMixer: SFT source \"", spec.name,
                                                "\" must hold instruction or chat JSONL records"));
    }
    Impl::Source source;
    source.spec = spec;
    TEMPER_ASSIGN_OR_RETURN(source.reader, open_reader(spec));
    TEMPER_ASSIGN_OR_RETURN(DocumentFilter filter, DocumentFilter::create(spec.filters));
    source.filter.emplace(std::move(filter));
    impl->sources.push_back(std::move(source));
    source_names.push_back(spec.name);
    weights.push_back(spec.weight);
    SourceReport report;
    report.name = spec.name;
    report.role = spec.role;
    impl->report.sources.push_back(report);
  }
  for (const ShareSchedulePoint& point : options.schedule) {
    if (point.at_tokens < 0) return absl::InvalidArgumentError("DataMixer: schedule points need at_tokens >= 0");
    for (const auto& [name, w] : point.weights) {
      if (!names.count(name)) {
        return absl::InvalidArgumentError(str_cat("DataMixer: the schedule names an unknown source \"", name, "\""));
      }
      if (!std::isfinite(w) || w < 0.0) {
        return absl::InvalidArgumentError(str_cat("DataMixer: schedule weight for \"", name, "\" must be finite and >= 0"));
      }
    }
  }
  if (options.dedup.exact || options.dedup.near) {
    const size_t count = options.dedup.across_sources ? 1 : impl->sources.size();
    for (size_t i = 0; i < count; ++i) {
      TEMPER_ASSIGN_OR_RETURN(Deduplicator d, Deduplicator::create(options.dedup));
      impl->dedup.push_back(std::move(d));
    }
  }
  if (options.objective == Objective::kSft) {
    if (!options.chat_template.empty()) {
      TEMPER_ASSIGN_OR_RETURN(impl->chat_template, parse_chat_template_name(options.chat_template));
    } else if (!options.model_dir.empty()) {
      impl->chat_template = detect_chat_template(options.model_dir).value_or(ChatTemplate::kPlain);
    }
  }
  impl->schedule = std::make_unique<ShareSchedule>(source_names, weights, options.schedule, options.seed);
  impl->credits.assign(impl->sources.size(), 0.0);
  impl->active.assign(impl->sources.size(), true);
  impl->packer = SequencePacker(options.seq_len);
  const std::vector<double> shares = impl->schedule->shares(0, impl->active);
  for (size_t i = 0; i < shares.size(); ++i) impl->report.sources[i].target_share = shares[i];
  return std::unique_ptr<DataMixer>(new DataMixer(std::move(impl)));
}

StatusOr<Batch> DataMixer::next() {
  Impl& m = *impl_;
  auto pick_and_draw = [&]() -> StatusOr<std::optional<std::pair<size_t, Impl::Drawn>>> {
    for (;;) {
      const int i = m.schedule->pick(m.credits, m.active);
      if (i < 0) return std::optional<std::pair<size_t, Impl::Drawn>>();
      TEMPER_ASSIGN_OR_RETURN(std::optional<Impl::Drawn> drawn, m.draw(static_cast<size_t>(i)));
      if (!drawn) continue;  // that source left the mix; pick again
      m.account(static_cast<size_t>(i), static_cast<int64_t>(drawn->ids.size()));
      return std::optional<std::pair<size_t, Impl::Drawn>>(std::make_pair(static_cast<size_t>(i), std::move(*drawn)));
    }
  };
  auto end_of_stream = [&]() {
    return absl::OutOfRangeError(str_cat("DataMixer: the data is exhausted after ", m.report.tokens_mixed,
                                         " mixed tokens (exhaustion policy)"));
  };

  if (m.options.objective == Objective::kContinuedPretraining) {
    while (m.packer.ready_rows() < m.options.batch_size) {
      TEMPER_ASSIGN_OR_RETURN(auto drawn, pick_and_draw());
      if (!drawn) return end_of_stream();
      m.packer.add(drawn->second.ids);
    }
    ++m.report.batches;
    return guarded("DataMixer: assembling a batch", [&]() -> StatusOr<Batch> { return m.packer.take(m.options.batch_size); });
  }

  std::vector<Impl::Drawn> rows;
  while (static_cast<int64_t>(rows.size()) < m.options.batch_size) {
    TEMPER_ASSIGN_OR_RETURN(auto drawn, pick_and_draw());
    if (!drawn) return end_of_stream();
    rows.push_back(std::move(drawn->second));
  }
  size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.ids.size());
  const TokenId pad = m.tokenizer->special_tokens().pad.value_or(m.tokenizer->special_tokens().eos.value_or(0));
  Batch batch;
  batch.input_ids = at::full({m.options.batch_size, static_cast<int64_t>(width)}, static_cast<int64_t>(pad), at::kLong);
  batch.labels = at::full({m.options.batch_size, static_cast<int64_t>(width)}, kIgnoreIndex, at::kLong);
  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto labels = batch.labels.accessor<int64_t, 2>();
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t t = 0; t < rows[r].ids.size(); ++t) {
      ids[r][t] = rows[r].ids[t];
      if (rows[r].target[t]) labels[r][t] = rows[r].ids[t];
    }
  }
  ++m.report.batches;
  return batch;
}

int64_t DataMixer::epochs_completed() const {
  int64_t least = -1;
  for (const SourceReport& r : impl_->report.sources) least = least < 0 ? r.epochs : std::min(least, r.epochs);
  return std::max<int64_t>(least, 0);
}

Objective DataMixer::objective() const { return impl_->options.objective; }

const MixReport& DataMixer::report() const { return impl_->report; }

Status DataMixer::write_report(const std::filesystem::path& path) const {
  return write_file_atomic(path, impl_->report.to_json() + "\n");
}

std::string DataMixer::save_state() const {
  const Impl& m = *impl_;
  nlohmann::json sources = nlohmann::json::array();
  for (size_t i = 0; i < m.sources.size(); ++i) {
    const Impl::Source& source = m.sources[i];
    nlohmann::json duplicates = nlohmann::json::array();
    for (const auto& [ordinal, near] : source.duplicates) duplicates.push_back({ordinal, near});
    sources.push_back({{"name", source.spec.name}, {"position", source.reader->position()},
                       {"kept_this_pass", source.kept_this_pass}, {"pass", source.pass}, {"ordinal", source.ordinal},
                       {"duplicates", duplicates}, {"credit", m.credits[i]}, {"active", static_cast<bool>(m.active[i])}});
  }
  nlohmann::json dedup = nlohmann::json::array();
  for (const Deduplicator& d : m.dedup) dedup.push_back(d.save_state());
  return nlohmann::json({{"format", "temper-data-mixer"}, {"version", kStateVersion}, {"sources", sources},
                         {"packer", m.packer.state()}, {"dedup", dedup}, {"report", report_to_json(m.report)}})
      .dump();
}

Status DataMixer::restore_state(const std::string& state) {
  Impl& m = *impl_;
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json j, parse_json(state, "DataMixer state"));
  try {
    if (j.value("format", "") != "temper-data-mixer" || j.value("version", 0) != kStateVersion) {
      return absl::FailedPreconditionError("DataMixer state: not a state of this DataMixer version");
    }
    const auto& sources = j.at("sources");
    if (sources.size() != m.sources.size() || j.at("dedup").size() != m.dedup.size()) {
      return absl::FailedPreconditionError("DataMixer state: written for another set of sources or dedup scope");
    }
    for (size_t i = 0; i < m.sources.size(); ++i) {
      if (sources[i].at("name").get<std::string>() != m.sources[i].spec.name) {
        return absl::FailedPreconditionError(str_cat("DataMixer state: source ", i, " was \"",
                                                     sources[i].at("name").get<std::string>(), "\", now \"",
                                                     m.sources[i].spec.name, "\""));
      }
    }
    for (size_t i = 0; i < m.sources.size(); ++i) {
      TEMPER_RETURN_IF_ERROR(m.sources[i].reader->seek(sources[i].at("position").get<std::string>()));
      m.sources[i].kept_this_pass = sources[i].at("kept_this_pass").get<int64_t>();
      m.sources[i].pass = sources[i].at("pass").get<int64_t>();
      m.sources[i].ordinal = sources[i].at("ordinal").get<int64_t>();
      m.sources[i].duplicates.clear();
      for (const auto& d : sources[i].at("duplicates")) {
        m.sources[i].duplicates.emplace_back(d.at(0).get<int64_t>(), d.at(1).get<bool>());
      }
      m.credits[i] = sources[i].at("credit").get<double>();
      m.active[i] = sources[i].at("active").get<bool>();
    }
    for (size_t i = 0; i < m.dedup.size(); ++i) {
      TEMPER_RETURN_IF_ERROR(m.dedup[i].restore_state(j.at("dedup")[i].get<std::string>()));
    }
    TEMPER_RETURN_IF_ERROR(m.packer.restore(j.at("packer")));
    report_from_json(j.at("report"), m.report);
    for (auto& source : m.sources) {
      source.malformed_seen = source.reader->stats().malformed;
      source.examples_seen = static_cast<int64_t>(source.reader->stats().malformed_examples.size());
    }
    const std::vector<double> shares = m.schedule->shares(m.report.tokens_mixed, m.active);
    for (size_t i = 0; i < shares.size(); ++i) m.report.sources[i].target_share = shares[i];
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(str_cat("DataMixer state: ", e.what()));
  }
}

}  // namespace temper
