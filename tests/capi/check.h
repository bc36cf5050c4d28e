/* Assertions for the C ABI tests: a failed check prints where, the status, the last error, and
   exits non-zero (the tests are plain C programs run by CTest). */
#ifndef TEMPER_TESTS_CAPI_CHECK_H_
#define TEMPER_TESTS_CAPI_CHECK_H_

#include <stdio.h>
#include <stdlib.h>

#include "temper.h"

#define CHECK(cond)                                                                              \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond,   \
              temper_last_error());                                                              \
      exit(1);                                                                                   \
    }                                                                                            \
  } while (0)

/* The call must return `expected`. */
#define CHECK_STATUS(expected, call)                                                             \
  do {                                                                                           \
    int32_t check_status_ = (call);                                                              \
    if (check_status_ != (expected)) {                                                           \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); last error: %s\n", __FILE__, \
              __LINE__, #call, (int)check_status_, temper_status_name(check_status_),            \
              (int)(expected), temper_status_name(expected), temper_last_error());               \
      exit(1);                                                                                   \
    }                                                                                            \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(TEMPER_OK, call)

#endif /* TEMPER_TESTS_CAPI_CHECK_H_ */
