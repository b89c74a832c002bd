#include "moejet/core/heap.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <limits>

namespace moejet {

bool keep_freed_memory_in_process() {
  const char* env = std::getenv("MOEJET_KEEP_HEAP");
  if (env != nullptr && std::strcmp(env, "0") == 0) {
    return false;
  }
#if defined(__GLIBC__)
  // No mmap-backed blocks (they are unmapped on free), and no trimming of the heap's top.
  const bool no_mmap = mallopt(M_MMAP_MAX, 0) == 1;
  const bool no_trim = mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
  return no_mmap && no_trim;
#else
  return false;
#endif
}

}  // namespace moejet
