// Checkpoint directories that are whole or absent.
//
// A checkpoint is written into a temporary directory beside its destination; every file is
// fsynced, then a manifest (each file's size and XXH3-64 checksum) is written last, and the
// directory is put in place by write_directory_atomic (lib/io/atomic_directory.hpp). A reader accepts a
// directory only when its manifest is present and every file matches it, so a directory left
// by a crash at any moment (no manifest, short file, torn write) is never taken for a good one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace temper {

inline constexpr char kCheckpointManifest[] = "manifest.json";

// Calls `write_files(tmp_dir)` to fill a fresh temporary directory, then seals it with a
// manifest and puts it in place as `dir` (an existing checkpoint of that name is replaced only
// by a complete new one; anything else in the way is FAILED_PRECONDITION). On any failure `dir`
// is left as it was and the temporary is removed.
absl::Status write_checkpoint_dir(const std::filesystem::path& dir,
                                  const std::function<absl::Status(const std::filesystem::path&)>& write_files);

// Checks `dir` against its manifest (presence, sizes, checksums). DATA_LOSS when it does not match
// (a directory without a manifest included); NOT_FOUND when `dir` does not exist.
absl::Status verify_checkpoint_dir(const std::filesystem::path& dir);

// Checkpoints named "<prefix><number>" in `parent`, oldest first by number.
absl::StatusOr<std::vector<std::filesystem::path>> list_checkpoints(const std::filesystem::path& parent,
                                                                    const std::string& prefix);

// Removes all but the newest `keep` checkpoints named "<prefix><number>" in `parent`. Each is
// first renamed to a hidden name and only then deleted, so a process killed while pruning never
// leaves a half-deleted directory under a checkpoint's name. Hidden leftovers of killed writers
// and pruners (".<prefix><number>.tmp-*", ".<prefix><number>.trash-*") are removed as well:
// one trainer owns its checkpoint directory.
absl::Status prune_checkpoints(const std::filesystem::path& parent, const std::string& prefix, int64_t keep);

// The newest checkpoint "<prefix><number>" in `parent` that verify_checkpoint_dir accepts;
// NOT_FOUND when there is none. Damaged ones are skipped (and named in `skipped` if given).
absl::StatusOr<std::filesystem::path> latest_complete_checkpoint(const std::filesystem::path& parent,
                                                                 const std::string& prefix,
                                                                 std::vector<std::string>* skipped = nullptr);

// XXH3-64 of a file's contents, as 16 hex digits.
absl::StatusOr<std::string> file_checksum(const std::filesystem::path& path);

}  // namespace temper
