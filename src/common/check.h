// check.h — WALLET_CHECK: an invariant that must hold in every build. A failed
// check is a bug that could corrupt money; the process prints where and why and
// aborts rather than continue with a state it cannot trust.
#pragma once

#include <cstdio>
#include <cstdlib>

#define WALLET_CHECK(condition, message)                                              \
  do {                                                                                \
    if (__builtin_expect(!(condition), 0)) {                                          \
      std::fprintf(stderr, "%s:%d: invariant failed: %s (%s)\n", __FILE__, __LINE__, \
                   #condition, message);                                              \
      std::abort();                                                                   \
    }                                                                                 \
  } while (false)
