/* temper.h compiles as C99 with -Wall -Wextra -pedantic -Wpadded -Werror (see CMakeLists.txt), and
   its structs and enums have the frozen layout of abi_layout.h. Compiling is the test; main only
   makes it a program CTest runs. */
#include <stddef.h>

#include "temper.h"

#define TEMPER_ABI_CONCAT_(a, b) a##b
#define TEMPER_ABI_CONCAT(a, b) TEMPER_ABI_CONCAT_(a, b)
/* C99 has no _Static_assert: an array of negative size stops the compilation instead. */
#define TEMPER_ABI_ASSERT(cond) typedef char TEMPER_ABI_CONCAT(temper_abi_assert_line_, __LINE__)[(cond) ? 1 : -1]

#include "abi_layout.h"

int main(void) { return 0; }
