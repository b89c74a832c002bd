#include "moejet/kernels/tracing.h"

#include <torch/csrc/jit/frontend/tracer.h>

namespace moejet::kernels {

bool tracing() {
  return torch::jit::tracer::isTracing();
}

}  // namespace moejet::kernels
