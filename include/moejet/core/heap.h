#pragma once
// Keeps freed tensor memory in the process instead of handing it back to the kernel.
//
// libtorch's CPU allocator is plain malloc. glibc serves blocks above 128 KiB-32 MiB with mmap and
// unmaps them on free, so every training step re-faults and zero-fills its activations and
// gradients: about 490k page faults (2 GB of clear_page) per V-JetMoE-T step at batch 32, a third
// of the step's time. Python users avoid this with jemalloc/tcmalloc preloads; moejet's commands
// instead tell glibc to serve every block from the heap and never trim it, so a step's buffers are
// reused by the next one. The cost is that peak memory is not returned to the OS until exit,
// which is what a training process wants. MOEJET_KEEP_HEAP=0 turns it off; under another malloc
// (an LD_PRELOADed jemalloc, say) mallopt is a no-op.

namespace moejet {

/// Applies the policy above once per process; returns whether glibc accepted it.
bool keep_freed_memory_in_process();

}  // namespace moejet
