#include "io/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "util/strings.hpp"
#include <nlohmann/json.hpp>

#include "io/atomic_file.hpp"
#include "io/json_file.hpp"
#include "io/mapped_file.hpp"
#include "ops/compat.hpp"
#include "util/status_macros.hpp"
#include "util/torch_errors.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; temper reads it in place on little-endian hosts only");

namespace temper {
namespace {

// Bytes per element of every dtype the format names, including those some libtorch versions
// cannot represent (so that such files still validate and their other tensors load).
std::optional<uint64_t> itemsize(std::string_view dtype) {
  static const std::map<std::string_view, uint64_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},     {"C64", 8}};
  auto it = kSizes.find(dtype);
  if (it == kSizes.end()) return std::nullopt;
  return it->second;
}

std::string where(const std::filesystem::path& path) { return path.string(); }

absl::Status corrupt(const std::filesystem::path& path, std::string_view detail) {
  return absl::InvalidArgumentError(str_cat(where(path), ": invalid safetensors file: ", detail));
}

std::string shape_string(const std::vector<int64_t>& shape) {
  return str_cat("[", fmt::format("{}", fmt::join(shape, ", ")), "]");
}

absl::StatusOr<SafetensorsEntry> parse_entry(const std::filesystem::path& path, const std::string& name,
                                             const nlohmann::json& info, uint64_t data_size) {
  const std::string ctx = str_cat("tensor \"", name, "\"");
  if (!info.is_object()) return corrupt(path, str_cat(ctx, ": entry is not an object"));
  SafetensorsEntry entry;
  entry.name = name;

  auto dtype = info.find("dtype");
  if (dtype == info.end() || !dtype->is_string()) return corrupt(path, str_cat(ctx, ": missing string \"dtype\""));
  entry.dtype = dtype->get<std::string>();
  const std::optional<uint64_t> size_of = itemsize(entry.dtype);
  if (!size_of) return corrupt(path, str_cat(ctx, ": unknown dtype \"", entry.dtype, "\""));

  auto shape = info.find("shape");
  if (shape == info.end() || !shape->is_array()) return corrupt(path, str_cat(ctx, ": missing array \"shape\""));
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& dim : *shape) {
    if (!dim.is_number_unsigned() && !(dim.is_number_integer() && dim.get<int64_t>() >= 0)) {
      return corrupt(path, str_cat(ctx, ": shape ", json_preview(*shape), " holds a non-integer or negative dimension"));
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / d) overflow = true;
    numel *= d;
    entry.shape.push_back(static_cast<int64_t>(d));
  }
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / *size_of) {
    return corrupt(path, str_cat(ctx, ": shape ", json_preview(*shape), " overflows 64-bit sizes"));
  }

  auto offsets = info.find("data_offsets");
  if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    return corrupt(path, str_cat(ctx, ": \"data_offsets\" must be two non-negative integers"));
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size) {
    return corrupt(path, str_cat(ctx, ": data_offsets [", entry.begin, ", ", entry.end,
                                      "] out of the data section of ", data_size, " bytes"));
  }
  if (entry.end - entry.begin != numel * *size_of) {
    return corrupt(path, str_cat(ctx, ": ", entry.end - entry.begin, " bytes for ", entry.dtype, " ",
                                      shape_string(entry.shape), ", which needs ", numel * *size_of));
  }
  return entry;
}

}  // namespace

absl::StatusOr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  TEMPER_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return parse(std::move(file));
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::from_bytes(std::string_view bytes, const std::filesystem::path& name) {
  return parse(MappedFile::from_bytes(name, bytes));
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::parse(std::shared_ptr<MappedFile> file) {
  const std::filesystem::path path = file->path();
  if (file->size() < 8) {
    return corrupt(path, str_cat("file of ", file->size(), " bytes is shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, file->data(), 8);
  if (header_len > kSafetensorsMaxHeaderBytes) {
    return corrupt(path, str_cat("header length ", header_len, " exceeds the format's limit of ",
                                      kSafetensorsMaxHeaderBytes, " bytes"));
  }
  if (header_len > file->size() - 8) {
    return corrupt(path, str_cat("header length ", header_len, " exceeds the file (", file->size(),
                                      " bytes): truncated file?"));
  }
  const std::string_view header_text(reinterpret_cast<const char*>(file->data()) + 8, header_len);
  absl::StatusOr<nlohmann::json> header = parse_json(header_text, str_cat(where(path), " (safetensors header)"));
  if (!header.ok()) return header.status();
  if (!header->is_object()) return corrupt(path, "header is not a JSON object");

  SafetensorsFile result;
  result.file_ = std::move(file);
  result.data_start_ = 8 + header_len;
  const uint64_t data_size = result.file_->size() - result.data_start_;

  for (auto it = header->begin(); it != header->end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return corrupt(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return corrupt(path, str_cat("__metadata__ value for \"", m.key(), "\" is not a string"));
        result.metadata_.emplace(m.key(), m->get<std::string>());
      }
      continue;
    }
    TEMPER_ASSIGN_OR_RETURN(SafetensorsEntry entry, parse_entry(path, it.key(), *it, data_size));
    result.entries_.push_back(std::move(entry));
  }

  // The data section must be exactly the tensors, back to back: no overlap, no gap, no tail.
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : result.entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const SafetensorsEntry* e : by_offset) {
    if (e->begin != cursor) {
      return corrupt(path, str_cat("tensor \"", e->name, "\" starts at byte ", e->begin, " but the previous tensor ends at ",
                                        cursor, e->begin < cursor ? " (overlap)" : " (gap)"));
    }
    cursor = e->end;
  }
  if (cursor != data_size) {
    return corrupt(path, str_cat("tensors cover ", cursor, " bytes of a data section of ", data_size, " bytes"));
  }
  return result;
}

const std::filesystem::path& SafetensorsFile::path() const { return file_->path(); }

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const SafetensorsEntry& e, std::string_view n) { return e.name < n; });
  if (it == entries_.end() || it->name != name) return nullptr;
  return &*it;
}

absl::StatusOr<at::Tensor> SafetensorsFile::tensor(std::string_view name) const {
  const SafetensorsEntry* entry = find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(str_cat(where(path()), ": no tensor named \"", name, "\""));
  }
  const std::optional<at::ScalarType> type = compat::scalar_type_from_safetensors(entry->dtype);
  if (!type) {
    return absl::UnimplementedError(str_cat(where(path()), ": tensor \"", name, "\" has dtype ", entry->dtype,
                                                 ", which this libtorch (", TORCH_VERSION, ") cannot hold"));
  }
  return guarded(str_cat("reading tensor \"", name, "\" from ", where(path())), [&]() -> absl::StatusOr<at::Tensor> {
    const auto options = at::TensorOptions().dtype(*type).device(at::kCPU);
    const size_t nbytes = entry->end - entry->begin;
    if (nbytes == 0) return at::empty(entry->shape, options);
    uint8_t* ptr = file_->data() + data_start_ + entry->begin;
    if (reinterpret_cast<uintptr_t>(ptr) % at::elementSize(*type) == 0) {
      std::shared_ptr<MappedFile> keep = file_;
      return at::from_blob(ptr, entry->shape, [keep](void*) mutable { keep.reset(); }, options);
    }
    at::Tensor copy = at::empty(entry->shape, options);
    std::memcpy(copy.data_ptr(), ptr, nbytes);
    return copy;
  });
}

absl::Status write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                               const std::map<std::string, std::string>& metadata) {
  return guarded(str_cat("writing ", path.string()), [&]() -> absl::Status {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    std::map<std::string, std::string> meta = metadata;
    meta.emplace("format", "pt");
    header["__metadata__"] = meta;

    std::set<std::string> seen;
    std::vector<at::Tensor> contiguous;
    contiguous.reserve(tensors.size());
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
      if (name.empty() || name == "__metadata__") {
        return absl::InvalidArgumentError(str_cat(path.string(), ": invalid tensor name \"", name, "\""));
      }
      if (!seen.insert(name).second) {
        return absl::InvalidArgumentError(str_cat(path.string(), ": tensor name \"", name, "\" appears twice"));
      }
      if (!tensor.defined()) {
        return absl::InvalidArgumentError(str_cat(path.string(), ": tensor \"", name, "\" is undefined"));
      }
      const std::optional<std::string_view> dtype = compat::safetensors_name(tensor.scalar_type());
      if (!dtype) {
        return absl::InvalidArgumentError(str_cat(path.string(), ": tensor \"", name, "\" has dtype ",
                                                       c10::toString(tensor.scalar_type()), ", which safetensors cannot store"));
      }
      at::Tensor data = tensor.detach().to(at::kCPU).contiguous();
      const uint64_t nbytes = data.numel() * data.element_size();
      header[name] = {{"dtype", std::string(*dtype)}, {"shape", data.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
      offset += nbytes;
      contiguous.push_back(std::move(data));
    }
    std::string text = header.dump();
    // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does:
    // readers can then map every tensor in place.
    text.append((8 - (text.size() % 8)) % 8, ' ');
    const uint64_t header_len = text.size();

    TEMPER_ASSIGN_OR_RETURN(AtomicFileWriter writer, AtomicFileWriter::create(path));
    char len_bytes[8];
    std::memcpy(len_bytes, &header_len, 8);
    TEMPER_RETURN_IF_ERROR(writer.append(len_bytes, 8));
    TEMPER_RETURN_IF_ERROR(writer.append(text));
    for (const at::Tensor& t : contiguous) {
      TEMPER_RETURN_IF_ERROR(writer.append(t.data_ptr(), t.numel() * t.element_size()));
    }
    return writer.commit();
  });
}

}  // namespace temper
