// torch.save() zip checkpoints and format dispatch.
//
// The file's kind is sniffed from its first bytes (zip, legacy pickle, safetensors), so each
// gets an error that says what it is. The pickle inside a torch.save zip is read by the restricted
// unpickler of unpickler.h (libtorch 1.13's own cannot read state dicts); what is left here picks
// the state dict out of the object that pickle builds.

#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/io/checkpoint_file.h"
#include "unpickler.h"
#include "zip_directory.h"

namespace moejet::io {

namespace {

using detail::describe;
using detail::PyRef;
using detail::PyValue;

std::string c10_message(const c10::Error& e) {
  return e.what_without_backtrace();
}

bool all_tensors(const PyValue& dict) {
  if (dict.kind != PyValue::Kind::Dict || dict.entries.empty()) {
    return false;
  }
  for (const auto& [k, v] : dict.entries) {
    if (v->kind != PyValue::Kind::Tensor) {
      return false;
    }
  }
  return true;
}

std::string key_summary(const PyValue& dict) {
  std::string s;
  size_t n = 0;
  for (const auto& [k, v] : dict.entries) {
    if (n++ == 8) {
      s += fmt::format(", ... ({} more)", dict.entries.size() - 8);
      break;
    }
    s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", k->kind == PyValue::Kind::Str ? k->s : describe(*k),
                     describe(*v));
  }
  return s;
}

// Picks the dict that holds the weights and turns it into a state dict.
StateDict extract_state_dict(const std::string& path, const PyValue& root) {
  using K = PyValue::Kind;
  if (root.kind != K::Dict) {
    throw CheckpointError(
        fmt::format("{}: expected a dict of tensors (a state dict), found a {}", path, describe(root)));
  }
  const PyValue* weights = &root;
  std::string where = "top level";
  if (!all_tensors(root)) {
    weights = nullptr;
    for (const char* wrapper : {"state_dict", "model", "model_ema", "module"}) {
      auto it = root.index.find(wrapper);
      if (it != root.index.end() && root.entries[it->second].second->kind == K::Dict) {
        weights = root.entries[it->second].second.get();
        where = fmt::format("'{}'", wrapper);
        break;
      }
    }
    if (!weights) {
      throw CheckpointError(
          fmt::format("{}: no state dict found: the top-level dict is not all tensors and has no "
                      "'state_dict', 'model', 'model_ema' or 'module' dict (found: {})",
                      path, root.entries.empty() ? std::string("an empty dict") : key_summary(root)));
    }
  }
  if (weights->entries.empty()) {
    throw CheckpointError(fmt::format("{}: the state dict at {} holds no tensors", path, where));
  }
  StateDict state;
  for (const auto& [k, v] : weights->entries) {
    if (k->kind != K::Str) {
      throw CheckpointError(
          fmt::format("{}: state dict at {} has a {} key; expected str keys", path, where, describe(*k)));
    }
    if (v->kind != K::Tensor) {
      throw CheckpointError(
          fmt::format("{}: state dict at {}: '{}' is a {}, not a tensor", path, where, k->s, describe(*v)));
    }
    state.insert(k->s, v->tensor);
  }
  // DataParallel / DistributedDataParallel wrap the model as .module.
  const std::string prefix = "module.";
  bool all_prefixed = true;
  for (const auto& item : state) {
    all_prefixed = all_prefixed && item.key().rfind(prefix, 0) == 0;
  }
  if (all_prefixed) {
    StateDict stripped;
    for (const auto& item : state) {
      stripped.insert(item.key().substr(prefix.size()), item.value());
    }
    return stripped;
  }
  return state;
}

enum class FileKind { Zip, LegacyPickle, Safetensors, Other };

FileKind sniff(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw CheckpointError(fmt::format("{}: cannot open checkpoint file", path));
  }
  unsigned char head[9] = {};
  in.read(reinterpret_cast<char*>(head), sizeof(head));
  const auto n = in.gcount();
  if (n >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) {
    return FileKind::Zip;
  }
  // The safetensors header must begin with '{' right after its 8-byte length (whose low byte
  // may well be 0x80, so this is tested before the pickle PROTO opcode of legacy torch.save).
  if (n == 9 && head[8] == '{') {
    return FileKind::Safetensors;
  }
  if (n >= 2 && head[0] == 0x80 && head[1] <= 5) {
    return FileKind::LegacyPickle;
  }
  return FileKind::Other;
}

[[noreturn]] void throw_legacy(const std::string& path) {
  throw CheckpointError(
      fmt::format("{}: legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it in Python "
                  "with torch.save(torch.load(path), new_path), whose default is the zip format",
                  path));
}

}  // namespace

StateDict read_torch_checkpoint(const std::string& path) {
  switch (sniff(path)) {
    case FileKind::Zip:
      break;
    case FileKind::LegacyPickle:
      throw_legacy(path);
    case FileKind::Safetensors:
      throw CheckpointError(
          fmt::format("{}: not a PyTorch checkpoint but a safetensors file; read it with read_checkpoint", path));
    case FileKind::Other:
      throw CheckpointError(
          fmt::format("{}: not a PyTorch checkpoint (expected a torch.save zip archive, the file does not "
                      "start with the zip signature)",
                      path));
  }
  // Sizes are checked against the file before libtorch allocates what the archive declares.
  const auto records = read_zip_directory(path);
  auto pkl = records.find("data.pkl");
  constexpr uint64_t kMaxPickleBytes = uint64_t{256} << 20;
  if (pkl != records.end() && pkl->second.size > kMaxPickleBytes) {
    throw CheckpointError(
        fmt::format("{}: data.pkl is {} bytes; a checkpoint's pickle holds names and tensor references "
                    "(the weights are separate records), and over {} MiB it is not a torch.save state dict",
                    path, pkl->second.size, kMaxPickleBytes >> 20));
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  std::string pickle;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    if (!zip->hasRecord("data.pkl")) {
      throw CheckpointError(
          fmt::format("{}: zip archive has no data.pkl record; not written by torch.save (a TorchScript "
                      "archive or another zip file?)",
                      path));
    }
    auto [data, size] = zip->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(data.get()), size);
  } catch (const c10::Error& e) {
    throw CheckpointError(fmt::format("{}: cannot read the torch.save zip archive: {}", path, c10_message(e)));
  }
  try {
    PyRef root = detail::unpickle(path, pickle, *zip);
    return extract_state_dict(path, *root);
  } catch (const c10::Error& e) {
    throw CheckpointError(fmt::format("{}: cannot read tensors: {}", path, c10_message(e)));
  }
}

StateDict read_checkpoint(const std::string& path, Metadata* metadata) {
  switch (sniff(path)) {
    case FileKind::Zip:
      return read_torch_checkpoint(path);
    case FileKind::LegacyPickle:
      throw_legacy(path);
    case FileKind::Safetensors:
      return read_safetensors(path, metadata);
    case FileKind::Other:
      break;
  }
  throw CheckpointError(
      fmt::format("{}: not a checkpoint: neither a torch.save zip archive nor a safetensors file (whose JSON "
                  "header starts at byte 8)",
                  path));
}

}  // namespace moejet::io
