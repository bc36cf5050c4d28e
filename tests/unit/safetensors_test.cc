#include <cstring>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "io/checkpoint.hpp"
#include "io/directory.hpp"
#include "io/safetensors.hpp"
#include "test_support.hpp"

using temper::testing::TempDir;

namespace {

// Writes a safetensors file byte by byte as the format defines it (the independent reference
// for the reader): u64 little-endian header length, header, data.
void write_raw(const std::filesystem::path& path, const std::string& header, const std::string& data,
               std::optional<uint64_t> declared_len = std::nullopt) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = declared_len.value_or(header.size());
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out.write(bytes, 8);
  out << header << data;
}

std::string f32_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), 4);
  return out;
}

absl::Status open_status(const std::filesystem::path& path) { return temper::SafetensorsFile::open(path).status(); }

}  // namespace

TEST_CASE("safetensors reader reads a file written byte by byte per the format", "[unit]") {
  TempDir dir;
  const auto path = dir / "ref.safetensors";
  const std::string header =
      R"({"__metadata__":{"format":"pt","note":"hi"},"b":{"dtype":"I16","shape":[3],"data_offsets":[16,22]},)"
      R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  std::string data = f32_bytes({1.0f, -2.5f, 3.25f, 1e-3f});
  const int16_t ints[3] = {-7, 0, 32000};
  data.append(reinterpret_cast<const char*>(ints), sizeof ints);
  write_raw(path, header, data);

  auto file = temper::SafetensorsFile::open(path);
  REQUIRE_OK(file);
  REQUIRE(file->entries().size() == 2);
  CHECK(file->metadata().at("note") == "hi");
  auto a = file->tensor("a");
  REQUIRE_OK(a);
  CHECK(a->scalar_type() == at::kFloat);
  CHECK(a->sizes() == at::IntArrayRef({2, 2}));
  CHECK(a->flatten()[1].item<float>() == -2.5f);
  CHECK(a->flatten()[3].item<float>() == 1e-3f);
  auto b = file->tensor("b");
  REQUIRE_OK(b);
  CHECK(b->scalar_type() == at::kShort);
  CHECK(b->flatten()[2].item<int16_t>() == 32000);
  CHECK(file->tensor("c").status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("safetensors round trip keeps every dtype, shape and value", "[unit]") {
  TempDir dir;
  const auto path = dir / "all.safetensors";
  at::manual_seed(0);
  temper::NamedTensors tensors = {
      {"f64", at::randn({3, 5}, at::kDouble)},
      {"f32", at::randn({7}, at::kFloat)},
      {"f16", at::randn({2, 3, 4}).to(at::kHalf)},
      {"bf16", at::randn({5, 1}).to(at::kBFloat16)},
      {"i64", at::randint(-1000000, 1000000, {4}, at::kLong)},
      {"i32", at::randint(-100000, 100000, {4}, at::kInt)},
      {"i16", at::randint(-300, 300, {4}, at::kShort)},
      {"i8", at::randint(-100, 100, {9}, at::kChar)},
      {"u8", at::randint(0, 255, {3}, at::kByte)},
      {"bool", at::randint(0, 2, {6}, at::kLong).to(at::kBool)},
      {"scalar", at::full({}, 4.0, at::kFloat)},
      {"empty", at::empty({0, 3}, at::kFloat)},
      {"transposed", at::arange(6, at::kFloat).view({2, 3}).t()},  // non-contiguous input
  };
  REQUIRE_OK(temper::write_safetensors(path, tensors, {{"origin", "test"}}));

  // The data section starts 8-byte aligned and the header is JSON with the format marker.
  std::ifstream in(path, std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  CHECK((8 + header_len) % 8 == 0);
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  const auto json = nlohmann::json::parse(header);
  CHECK(json["__metadata__"]["format"] == "pt");
  CHECK(json["__metadata__"]["origin"] == "test");
  CHECK(json["bf16"]["dtype"] == "BF16");

  auto file = temper::SafetensorsFile::open(path);
  REQUIRE_OK(file);
  for (const auto& [name, original] : tensors) {
    INFO(name);
    auto loaded = file->tensor(name);
    REQUIRE_OK(loaded);
    CHECK(loaded->scalar_type() == original.scalar_type());
    CHECK(loaded->sizes() == original.sizes());
    CHECK(at::equal(*loaded, original.contiguous()));
  }
}

TEST_CASE("safetensors tensors are copy-on-write views: writing them never changes the file", "[unit]") {
  TempDir dir;
  const auto path = dir / "cow.safetensors";
  REQUIRE_OK(temper::write_safetensors(path, {{"w", at::zeros({16}, at::kFloat)}}));
  {
    auto file = temper::SafetensorsFile::open(path);
    REQUIRE_OK(file);
    at::Tensor w = file->tensor("w").value();
    w.add_(1.0);
    CHECK(w.sum().item<float>() == 16.0f);
  }
  auto again = temper::SafetensorsFile::open(path);
  REQUIRE_OK(again);
  CHECK(again->tensor("w").value().sum().item<float>() == 0.0f);
}

TEST_CASE("safetensors reads misaligned tensors by copying them", "[unit]") {
  TempDir dir;
  const auto path = dir / "misaligned.safetensors";
  // A 1-byte tensor first puts the f32 tensor at an odd address; the header length is odd too.
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}} )";
  write_raw(path, header, std::string("\x07", 1) + f32_bytes({1.5f, -4.0f}));
  auto file = temper::SafetensorsFile::open(path);
  REQUIRE_OK(file);
  auto b = file->tensor("b");
  REQUIRE_OK(b);
  CHECK(b->flatten()[0].item<float>() == 1.5f);
  CHECK(b->flatten()[1].item<float>() == -4.0f);
}

TEST_CASE("safetensors rejects corrupt files with a status naming the file and the problem", "[unit]") {
  TempDir dir;
  const auto path = dir / "bad.safetensors";
  const std::string ok_data = f32_bytes({1, 2});
  struct Case {
    const char* what;
    std::string header;
    std::string data;
    std::optional<uint64_t> declared;
    const char* message;
  };
  const Case cases[] = {
      {"header longer than file", R"({})", "", 1000, "exceeds the file"},
      {"header over 100 MB", R"({})", "", 200'000'000, "exceeds the format's limit"},
      {"header not JSON", "{not json", "", std::nullopt, "invalid JSON"},
      {"header an array", "[1,2]", "", std::nullopt, "not a JSON object"},
      {"unknown dtype", R"({"a":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", ok_data, std::nullopt, "unknown dtype"},
      {"negative dim", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", ok_data, std::nullopt, "negative"},
      {"offsets beyond data", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}})", ok_data, std::nullopt, "out of the data section"},
      {"begin after end", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", ok_data, std::nullopt, "out of the data section"},
      {"size lie", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", ok_data, std::nullopt, "which needs 12"},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       ok_data, std::nullopt, "overlap"},
      {"gap", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", ok_data, std::nullopt, "gap"},
      {"trailing bytes", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", ok_data, std::nullopt, "cover 4 bytes"},
      {"shape overflow", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", ok_data,
       std::nullopt, "overflows"},
      {"missing offsets", R"({"a":{"dtype":"F32","shape":[2]}})", ok_data, std::nullopt, "data_offsets"},
      {"metadata not strings", R"({"__metadata__":{"a":1}})", "", std::nullopt, "not a string"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    write_raw(path, c.header, c.data, c.declared);
    const absl::Status status = open_status(path);
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(status.message()), Catch::Contains(c.message) && Catch::Contains("bad.safetensors"));
  }
}

TEST_CASE("safetensors reports truncation, tiny files and missing files", "[unit]") {
  TempDir dir;
  const auto good = dir / "good.safetensors";
  REQUIRE_OK(temper::write_safetensors(good, {{"w", at::ones({64}, at::kFloat)}}));
  const auto size = std::filesystem::file_size(good);
  std::filesystem::copy_file(good, dir / "cut.safetensors");
  std::filesystem::resize_file(dir / "cut.safetensors", size - 10);
  CHECK(open_status(dir / "cut.safetensors").code() == absl::StatusCode::kInvalidArgument);

  std::ofstream(dir / "tiny.safetensors") << "abc";
  CHECK_THAT(std::string(open_status(dir / "tiny.safetensors").message()), Catch::Contains("shorter than"));
  CHECK(open_status(dir / "absent.safetensors").code() == absl::StatusCode::kNotFound);
  CHECK(open_status(dir.path()).code() == absl::StatusCode::kInvalidArgument);  // a directory
}

TEST_CASE("safetensors writer validates before touching the destination", "[unit]") {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  REQUIRE_OK(temper::write_safetensors(path, {{"keep", at::ones({2}, at::kFloat)}}));
  const auto before = std::filesystem::file_size(path);

  CHECK(temper::write_safetensors(path, {{"a", at::ones({1})}, {"a", at::ones({1})}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(temper::write_safetensors(path, {{"", at::ones({1})}}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(temper::write_safetensors(path, {{"c", at::ones({1}, at::kComplexFloat)}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(temper::write_safetensors(dir / "no_such_dir" / "x.safetensors", {{"a", at::ones({1})}}).code() ==
        absl::StatusCode::kNotFound);

  CHECK(std::filesystem::file_size(path) == before);
  auto file = temper::SafetensorsFile::open(path);
  REQUIRE_OK(file);
  CHECK(file->contains("keep"));
  // No temporary files are left behind.
  CHECK(temper::list_directory(dir.path()).value() == std::vector<std::string>{"w.safetensors"});
}

TEST_CASE("sharded checkpoints round trip through index.json", "[unit]") {
  TempDir dir;
  temper::NamedTensors tensors;
  for (int i = 0; i < 5; ++i) tensors.emplace_back("t" + std::to_string(i), at::full({256}, static_cast<float>(i)));
  REQUIRE_OK(temper::write_checkpoint(dir.path(), tensors, /*max_shard_bytes=*/2048));
  CHECK(std::filesystem::exists(dir / "model.safetensors.index.json"));
  CHECK(std::filesystem::exists(dir / "model-00003-of-00003.safetensors"));
  CHECK_FALSE(std::filesystem::exists(dir / "model.safetensors"));

  auto reader = temper::CheckpointReader::open(dir.path());
  REQUIRE_OK(reader);
  CHECK(reader->names().size() == 5);
  for (int i = 0; i < 5; ++i) {
    auto t = reader->tensor("t" + std::to_string(i));
    REQUIRE_OK(t);
    CHECK(t->sum().item<float>() == 256.0f * i);
  }
  // One file replaces the shards' index when everything fits.
  REQUIRE_OK(temper::write_checkpoint(dir.path(), tensors));
  CHECK(std::filesystem::exists(dir / "model.safetensors"));
  CHECK_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
}

TEST_CASE("a sharded index that lies about its shards is an error", "[unit]") {
  TempDir dir;
  REQUIRE_OK(temper::write_safetensors(dir / "model-00001-of-00001.safetensors", {{"a", at::ones({1})}}));
  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map":{"a":"model-00001-of-00001.safetensors","b":"model-00001-of-00001.safetensors"}})";
  auto reader = temper::CheckpointReader::open(dir.path());
  CHECK(reader.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(reader.status().message()), Catch::Contains("\"b\""));

  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map":{"a":"missing.safetensors"}})";
  CHECK(temper::CheckpointReader::open(dir.path()).status().code() == absl::StatusCode::kNotFound);
  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map":{"a":"../escape.safetensors"}})";
  CHECK(temper::CheckpointReader::open(dir.path()).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(temper::CheckpointReader::open(dir / "nowhere").status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("remove_tree removes nested directories without following links", "[unit]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "a/b/c");
  std::ofstream(dir / "a/b/c/file") << "x";
  std::ofstream(dir / "outside") << "keep";
  std::filesystem::create_symlink(dir / "outside", dir / "a/link");
  REQUIRE_OK(temper::remove_tree(dir / "a"));
  CHECK_FALSE(std::filesystem::exists(dir / "a"));
  CHECK(std::filesystem::exists(dir / "outside"));
  REQUIRE_OK(temper::remove_tree(dir / "a"));  // already gone: fine
  CHECK(temper::list_directory(dir / "a").status().code() == absl::StatusCode::kNotFound);
}
