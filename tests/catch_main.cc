// Catch2's main in a translation unit of its own: it takes ~25 s to compile, so it compiles once.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
