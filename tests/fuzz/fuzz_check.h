// A property check for the fuzz targets: on failure, say what and abort, so
// that libFuzzer saves the input as a crash (assert() vanishes under NDEBUG).
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                       \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "fuzz check failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   what, #cond);                                                     \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)
