#include "lora/lora_targets.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <map>
#include <set>

#include "util/strings.hpp"

namespace temper {
namespace {

bool is_glob(const std::string& entry) { return entry.find_first_of("*?[") != std::string::npos; }

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The module's own name, the last component of its full name ("q_proj", "query_key_value").
std::string module_kind(const LinearModuleRef& m) { return m.name.substr(m.name.rfind('.') + 1); }

}  // namespace

std::vector<LinearModuleRef> linear_modules(const ModelConfig& config) {
  const ArchitectureNames& names = architecture_names(config.family);
  std::vector<LinearModuleRef> out;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    for (LinearSlot slot : linear_slots(config.family)) {
      const std::vector<int64_t> shape = linear_shape(config, slot);
      out.push_back({names.linear_module(layer, slot), layer, slot, shape[1], shape[0]});
    }
  }
  return out;
}

bool peft_name_matches(const std::string& entry, const std::string& module_name) {
  return module_name == entry || ends_with(module_name, "." + entry);
}

bool target_entry_matches(const std::string& entry, const std::string& module_name) {
  if (is_glob(entry)) return ::fnmatch(entry.c_str(), module_name.c_str(), 0) == 0;
  return peft_name_matches(entry, module_name);
}

absl::StatusOr<std::vector<LinearModuleRef>> select_targets(const std::vector<LinearModuleRef>& modules,
                                                             const std::vector<std::string>& entries) {
  if (entries.empty()) return modules;
  std::vector<bool> chosen(modules.size(), false);
  for (const std::string& entry : entries) {
    if (entry.empty()) return absl::InvalidArgumentError("LoRA target_modules holds an empty entry");
    bool any = false;
    for (size_t i = 0; i < modules.size(); ++i) {
      if (target_entry_matches(entry, modules[i].name)) chosen[i] = any = true;
    }
    if (!any) {
      std::set<std::string> kinds;
      for (const LinearModuleRef& m : modules) kinds.insert(module_kind(m));
      return absl::InvalidArgumentError(str_cat(
          "LoRA target \"", entry, "\" matches no linear projection of this model; targets are module names (",
          fmt::format("{}", fmt::join(kinds, ", ")), ", or a suffix of a full name such as \"",
          modules.empty() ? std::string() : modules.front().name, "\") or globs over full names"));
    }
  }
  std::vector<LinearModuleRef> out;
  for (size_t i = 0; i < modules.size(); ++i) {
    if (chosen[i]) out.push_back(modules[i]);
  }
  return out;
}

std::vector<std::string> peft_target_list(const std::vector<LinearModuleRef>& modules,
                                          const std::vector<LinearModuleRef>& targets) {
  std::set<std::string> targeted;
  for (const LinearModuleRef& t : targets) targeted.insert(t.name);
  // Per kind: how many modules exist and how many are targeted.
  std::map<std::string, std::pair<size_t, size_t>> kinds;
  for (const LinearModuleRef& m : modules) {
    auto& [total, hit] = kinds[module_kind(m)];
    ++total;
    hit += targeted.count(m.name);
  }
  std::set<std::string> out;
  for (const LinearModuleRef& t : targets) {
    const auto& [total, hit] = kinds.at(module_kind(t));
    out.insert(hit == total ? module_kind(t) : t.name);
  }
  return {out.begin(), out.end()};
}

absl::StatusOr<std::regex> compile_peft_regex(const std::string& pattern, const std::string& what) {
  if (pattern.size() > kMaxPeftRegexBytes) {
    return absl::InvalidArgumentError(str_cat(what, " is ", pattern.size(), " bytes long; temper compiles regular "
                                              "expressions of at most ", kMaxPeftRegexBytes, " bytes"));
  }
  // Group depth, skipping escaped characters and bracket expressions; and the numbers the
  // compiler converts (a back-reference's \N, a repetition's {m,n}): libstdc++ 12 accumulates
  // their digits in a long without an overflow check (undefined behaviour past 18 digits, found
  // by fuzz_peft_config), so more than kMaxPeftRegexNumberDigits are refused here.
  auto digits_from = [&](size_t j) {
    size_t n = 0;
    while (j + n < pattern.size() && pattern[j + n] >= '0' && pattern[j + n] <= '9') ++n;
    return n;
  };
  auto too_long_number = [&](size_t at, size_t digits) {
    return absl::InvalidArgumentError(str_cat(what, " has a ", digits, "-digit number at byte ", at,
                                              " (a back-reference or repetition count); temper allows at most ",
                                              kMaxPeftRegexNumberDigits, " digits"));
  };
  int depth = 0;
  int max_depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      if (const size_t n = digits_from(i + 1); n > kMaxPeftRegexNumberDigits) return too_long_number(i + 1, n);
      ++i;
    } else if (c == '{') {
      // Inside brackets too: checking there costs nothing and refuses no realistic pattern.
      size_t j = i + 1;
      for (int part = 0; part < 2; ++part) {
        const size_t n = digits_from(j);
        if (n > kMaxPeftRegexNumberDigits) return too_long_number(j, n);
        j += n;
        if (j >= pattern.size() || pattern[j] != ',') break;
        ++j;
      }
    } else if (in_class) {
      in_class = c != ']';
    } else if (c == '[') {
      in_class = true;
    } else if (c == '(') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == ')') {
      --depth;
    }
  }
  if (max_depth > kMaxPeftRegexNesting) {
    return absl::InvalidArgumentError(str_cat(what, " nests groups ", max_depth, " deep; temper allows at most ",
                                              kMaxPeftRegexNesting));
  }
  try {
    auto flags = std::regex::ECMAScript;
#ifdef __GLIBCXX__
    flags |= std::regex_constants::__polynomial;
#endif
    return std::regex(pattern, flags);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(str_cat(what, " is not a regular expression temper can use (", e.what(), ")"));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(str_cat(what, " could not be compiled (", e.what(), ")"));
  }
}

absl::StatusOr<PatternKeys> PatternKeys::compile(const std::vector<std::string>& keys, const std::string& field) {
  PatternKeys table;
  for (const std::string& key : keys) {
    absl::StatusOr<std::regex> regex = compile_peft_regex("(.*\\.)?(" + key + ")", str_cat(field, " key \"", key, "\""));
    if (!regex.ok()) return regex.status();
    table.regexes_.push_back(std::move(*regex));
    table.keys_.push_back(key);
  }
  return table;
}

namespace {

template <typename T>
std::vector<std::string> keys_of(const std::vector<std::pair<std::string, T>>& table) {
  std::vector<std::string> keys;
  for (const auto& entry : table) keys.push_back(entry.first);
  return keys;
}

}  // namespace

absl::StatusOr<std::vector<ModulePlan>> plan_modules(const std::vector<LinearModuleRef>& targets, int64_t rank,
                                                     double alpha,
                                                     const std::vector<std::pair<std::string, int64_t>>& rank_pattern,
                                                     const std::vector<std::pair<std::string, double>>& alpha_pattern,
                                                     bool require_every_key) {
  auto rank_keys = PatternKeys::compile(keys_of(rank_pattern), "rank_pattern");
  if (!rank_keys.ok()) return rank_keys.status();
  auto alpha_keys = PatternKeys::compile(keys_of(alpha_pattern), "alpha_pattern");
  if (!alpha_keys.ok()) return alpha_keys.status();
  std::vector<bool> rank_used(rank_pattern.size(), false);
  std::vector<bool> alpha_used(alpha_pattern.size(), false);
  std::vector<ModulePlan> plans;
  for (const LinearModuleRef& m : targets) {
    ModulePlan plan{m, rank, alpha};
    if (std::optional<size_t> i = rank_keys->match(m.name)) {
      plan.rank = rank_pattern[*i].second;
      rank_used[*i] = true;
    }
    if (std::optional<size_t> i = alpha_keys->match(m.name)) {
      plan.alpha = alpha_pattern[*i].second;
      alpha_used[*i] = true;
    }
    const int64_t limit = std::min(m.in_features, m.out_features);
    if (plan.rank < 1 || plan.rank > limit) {
      return absl::InvalidArgumentError(
          str_cat("LoRA rank ", plan.rank, " for ", m.name, " (weight [out ", m.out_features, ", in ", m.in_features,
                  "]) must be between 1 and ", limit, ", the layer's smaller dimension; lower the rank or give this "
                  "module its own with rank_pattern"));
    }
    plans.push_back(plan);
  }
  if (require_every_key) {
    for (size_t i = 0; i < rank_pattern.size(); ++i) {
      if (!rank_used[i]) {
        return absl::InvalidArgumentError(str_cat("rank_pattern key \"", rank_pattern[i].first,
                                                  "\" applies to no targeted module (keys match the end of a full "
                                                  "module name after a \".\", e.g. \"q_proj\" or \"layers\\.0\\..*\")"));
      }
    }
    for (size_t i = 0; i < alpha_pattern.size(); ++i) {
      if (!alpha_used[i]) {
        return absl::InvalidArgumentError(str_cat("alpha_pattern key \"", alpha_pattern[i].first,
                                                  "\" applies to no targeted module (keys match the end of a full "
                                                  "module name after a \".\", e.g. \"q_proj\" or \"layers\\.0\\..*\")"));
      }
    }
  }
  return plans;
}

std::optional<size_t> PatternKeys::match(const std::string& module_name) const {
  for (size_t i = 0; i < regexes_.size(); ++i) {
    if (std::regex_match(module_name, regexes_[i])) return i;
  }
  return std::nullopt;
}

}  // namespace temper
