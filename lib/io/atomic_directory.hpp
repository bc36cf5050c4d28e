// Directories that appear whole or not at all (a PEFT adapter, an exported model).
//
// The files are written into a fresh temporary directory beside the destination; once every one
// is durable the temporary directory is synced and renamed to the destination, and the parent is
// synced. An existing destination is swapped out atomically (renameat2 RENAME_EXCHANGE) where the
// file system supports it, otherwise moved aside first and removed only after the new directory
// is in place, so that at every moment the name holds a complete directory (or, after a crash
// in the fallback's short window, its aside copy does).
#pragma once

#include <filesystem>
#include <functional>

#include <absl/status/status.h>

namespace temper {

// Calls `write_files(tmp_dir)` to fill an empty temporary directory, then puts it in place as
// `dir`. Every file written into `tmp_dir` must already be durable (AtomicFileWriter and
// write_safetensors make them so). On any failure `dir` is left as it was and the temporary is
// removed.
//
// `may_replace(dir)` is asked before an existing `dir` is replaced; it returns OK or the status
// that refuses it (so a caller never deletes a directory that is not one of its own outputs).
// An existing empty directory is always replaced.
absl::Status write_directory_atomic(const std::filesystem::path& dir,
                                    const std::function<absl::Status(const std::filesystem::path&)>& write_files,
                                    const std::function<absl::Status(const std::filesystem::path&)>& may_replace);

}  // namespace temper
