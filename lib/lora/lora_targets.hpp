// Which projections an adapter covers and with which rank and alpha.
//
// Target entries follow PEFT's list form (tuners_utils.check_target_module_exists): an entry
// names a module whose full name equals it or ends with "." + it. temper adds globs: an entry
// with *, ? or [ is matched by fnmatch against the full name ("model.layers.*.mlp.*").
// PEFT's string form (one regular expression that must match the whole name) is accepted when
// loading a PEFT config.
//
// rank_pattern / alpha_pattern keys follow PEFT's get_pattern_key: a key is a regular expression
// K, and it applies to a module whose full name matches `(.*\.)?(K)` entirely; the first key that
// applies wins.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>

#include "model/architecture.hpp"
#include "temper/config.hpp"

namespace temper {

// A linear projection of the model that an adapter may cover.
struct LinearModuleRef {
  std::string name;  // "model.layers.0.self_attn.q_proj"
  int64_t layer = 0;
  LinearSlot slot = LinearSlot::kQ;
  int64_t in_features = 0;
  int64_t out_features = 0;
};

// Every projection of every block, in model order.
std::vector<LinearModuleRef> linear_modules(const ModelConfig& config);

// PEFT's list form: `entry` is the module's full name or a "."-separated suffix of it.
bool peft_name_matches(const std::string& entry, const std::string& module_name);

// True when `entry` names `module_name` in the list form or, for a glob entry, matches it.
bool target_entry_matches(const std::string& entry, const std::string& module_name);

// The modules `entries` select, in model order; empty `entries` selects every projection. An
// entry that selects nothing is INVALID_ARGUMENT naming it and the modules there are.
absl::StatusOr<std::vector<LinearModuleRef>> select_targets(const std::vector<LinearModuleRef>& modules,
                                                             const std::vector<std::string>& entries);

// The shortest target_modules list that selects exactly `targets` with PEFT's list semantics:
// the modules' own names ("q_proj") when every module of those kinds is targeted, full names
// otherwise. Sorted.
std::vector<std::string> peft_target_list(const std::vector<LinearModuleRef>& modules,
                                          const std::vector<LinearModuleRef>& targets);

// A regular expression from an adapter config (PEFT's string-form target_modules and
// exclude_modules, rank_pattern and alpha_pattern keys), compiled with limits that keep a hostile
// config from hanging or crashing the host: at most kMaxPeftRegexBytes long, groups nested at most
// kMaxPeftRegexNesting deep (libstdc++'s regex compiler recurses per group), and matched in
// polynomial time (libstdc++'s breadth-first executor, so "(.*.*)*x" cannot backtrack
// exponentially; back-references, which need backtracking, are refused), with no number (a
// back-reference's or a repetition count's) of more than kMaxPeftRegexNumberDigits digits, which
// libstdc++ would convert with an unchecked overflow. INVALID_ARGUMENT names `what`
// ("rank_pattern key \"...\"") and the reason.
inline constexpr size_t kMaxPeftRegexBytes = 4096;
inline constexpr int kMaxPeftRegexNesting = 32;
inline constexpr size_t kMaxPeftRegexNumberDigits = 9;
absl::StatusOr<std::regex> compile_peft_regex(const std::string& pattern, const std::string& what);

// rank_pattern / alpha_pattern keys compiled once, in precedence order.
class PatternKeys {
 public:
  // INVALID_ARGUMENT naming a key that is not a valid regular expression; `field` names the
  // table in messages ("rank_pattern").
  static absl::StatusOr<PatternKeys> compile(const std::vector<std::string>& keys, const std::string& field);

  // Index (into the keys given to compile) of the first key that applies to `module_name`.
  std::optional<size_t> match(const std::string& module_name) const;
  const std::vector<std::string>& keys() const { return keys_; }

 private:
  std::vector<std::string> keys_;
  std::vector<std::regex> regexes_;
};

// One module to adapt, with the rank and alpha the options give it.
struct ModulePlan {
  LinearModuleRef module;
  int64_t rank = 0;
  double alpha = 0.0;
};

// Resolves each target's rank and alpha from the defaults and the pattern tables (in precedence
// order). Every rank must be in [1, min(in, out)] of its layer; with `require_every_key`, a key
// that applies to no target is INVALID_ARGUMENT (a typo would otherwise be silently ignored).
absl::StatusOr<std::vector<ModulePlan>> plan_modules(const std::vector<LinearModuleRef>& targets, int64_t rank,
                                                     double alpha,
                                                     const std::vector<std::pair<std::string, int64_t>>& rank_pattern,
                                                     const std::vector<std::pair<std::string, double>>& alpha_pattern,
                                                     bool require_every_key);

}  // namespace temper
