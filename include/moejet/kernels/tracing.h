#pragma once
// Whether this thread is being traced by TorchScript's tracer (models/torchscript.h). The tracer
// records ATen operators as they run; moejet's fused CPU kernels write tensors' memory directly
// (oneDNN, OpenBLAS, the row kernels), on worker threads the tracer does not see, and some
// layers decide on the host from their inputs' values (which experts are active). Every such
// place takes its plain tensor-op path while tracing, so that the recorded graph is the model.

namespace moejet::kernels {

bool tracing();

}  // namespace moejet::kernels
