#pragma once
// Reading and writing checkpoint files. safetensors is our canonical format (what timm publishes
// on the hub); PyTorch .pth/.pt/.bin zip checkpoints written by torch.save are read through
// libtorch's own unpickler. Files are recognised by content, not by extension.

#include <string>

#include "moejet/io/state_dict.h"

namespace moejet::io {

/// Reads a safetensors file (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL). Throws
/// CheckpointError naming the file for a truncated file, a bad header, overlapping or
/// out-of-range offsets, or an unknown dtype. `metadata`, if given, receives `__metadata__`.
StateDict read_safetensors(const std::string& path, Metadata* metadata = nullptr);

/// Writes a safetensors file atomically (temp file + rename); tensors are stored contiguous on CPU.
void write_safetensors(const std::string& path, const StateDict& state, const Metadata& metadata = {});

/// Reads a torch.save() zip checkpoint. A dict holding the weights under "state_dict", "model",
/// "model_ema" or "module" is unwrapped; a "module." prefix on every key (DataParallel) is stripped.
StateDict read_torch_checkpoint(const std::string& path);

/// Writes `state` as torch.save({name: tensor}) would (a zip archive that torch.load reads),
/// atomically (temp file + rename).
void write_torch_checkpoint(const std::string& path, const StateDict& state);

/// Reads either format, chosen by the file's first bytes.
StateDict read_checkpoint(const std::string& path, Metadata* metadata = nullptr);

}  // namespace moejet::io
