// safetensors header and offset validation (SafetensorsFile, docs/formats.md), then every tensor
// read and every byte of it touched by instrumented code, so a tensor that reached past the
// data section would be an ASan report rather than a silent read.
#include "fuzz_support.hpp"
#include "io/safetensors.hpp"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::from_bytes(fuzz::as_text(data, size), "fuzz.safetensors");
  if (!file.ok()) {
    fuzz::expect_code(file.status(), {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  uint64_t covered = 0;
  for (const SafetensorsEntry& entry : file->entries()) {
    covered += entry.end - entry.begin;
    absl::StatusOr<at::Tensor> tensor = file->tensor(entry.name);
    if (!tensor.ok()) {
      // Dtypes the format names but this libtorch cannot hold.
      fuzz::expect_code(tensor.status(), {absl::StatusCode::kUnimplemented});
      continue;
    }
    fuzz::expect(tensor->sizes().vec() == entry.shape, "tensor shape differs from its header entry");
    const size_t nbytes = tensor->numel() * tensor->element_size();
    fuzz::expect(nbytes == entry.end - entry.begin, "tensor size differs from its data_offsets");
    const uint8_t* bytes = static_cast<const uint8_t*>(tensor->data_ptr());
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < nbytes; ++i) sum += bytes[i];
    (void)sum;
  }
  fuzz::expect(size < 8 || covered <= size, "tensors cover more bytes than the file holds");
  return 0;
}
