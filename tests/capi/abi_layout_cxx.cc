// temper.h compiles as C++11 with -Wall -Wextra -pedantic -Werror, with C linkage and the same
// frozen layout as in C (abi_layout.h).
#include <cstddef>
#include <type_traits>

#include "temper.h"

#define TEMPER_ABI_ASSERT(cond) static_assert(cond, #cond)

#include "abi_layout.h"

// Handles stay incomplete (opaque) in C++ too; a C++ host holds them only by pointer.
static_assert(std::is_same<decltype(&temper_model_load), int32_t (*)(temper_model**, const char*,
                                                                     const temper_model_options*)>::value,
              "temper_model_load keeps its signature");

int main() { return 0; }
