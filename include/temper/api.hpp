// Symbol visibility for temper's shared library: the library is compiled with hidden
// visibility, and only what is marked TEMPER_API is exported.
#pragma once

#if defined(_WIN32)
#define TEMPER_API
#else
#define TEMPER_API __attribute__((visibility("default")))
#endif
