#pragma once
// A restricted reader of the Python pickle inside a torch.save() zip archive (its data.pkl).
//
// A pickle is a program: its opcodes may import any Python name and call it. This reader runs the
// opcodes but never runs code. It builds only what a checkpoint holds -- None, bools, numbers,
// strings, tuples, lists, dicts and tensors -- and turns every other class or call into an opaque
// placeholder named by its class, so such objects can be skipped or reported, never executed.
// The only calls it honours are the torch._utils tensor-rebuild functions and OrderedDict, whose
// results it builds itself.
//
// It is separate from the format dispatch of torch_checkpoint.cpp because libtorch's own
// unpickler cannot stand in for it: libtorch 1.13's torch::pickle_load turns
// collections.OrderedDict into None and treats BUILD as a function call, so it fails on every file
// written by torch.save(model.state_dict()) -- the most common checkpoint there is (fixed upstream
// only in later releases) -- and it aborts on any Python class it does not know, such as the
// argparse.Namespace that timm's train.py stores beside the weights. The zip container and its
// tensor records are still read by libtorch's PyTorchStreamReader.
//
// Private to src/io: the rest of the library reads checkpoints through moejet/io/checkpoint_file.h.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace caffe2::serialize {
class PyTorchStreamReader;
}  // namespace caffe2::serialize

namespace moejet::io::detail {

struct PyValue;
using PyRef = std::shared_ptr<PyValue>;

// The Python objects a checkpoint pickle can build. Anything that is not a plain container,
// scalar or tensor becomes an Object named by its class, so it can be skipped or reported.
struct PyValue {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Object, Storage, Tensor };
  Kind kind = Kind::None;
  int64_t i = 0;                                  // Bool, Int
  double f = 0;                                   // Float
  std::string s;                                  // Str, Bytes; Global/Object: qualified name
  std::vector<PyRef> items;                       // Tuple, List
  std::vector<std::pair<PyRef, PyRef>> entries;   // Dict, in insertion order
  std::unordered_map<std::string, size_t> index;  // Dict: str key -> position in entries
  torch::Tensor tensor;                           // Storage (flat), Tensor

  PyValue() = default;
  PyValue(const PyValue&) = delete;
  PyValue& operator=(const PyValue&) = delete;
  // A pickle can nest containers 100k deep in a few hundred kB; the default destructor would
  // recurse once per level and overflow the stack, so this one takes children apart in a loop.
  ~PyValue();

  static PyRef make(Kind k) {
    auto v = std::make_shared<PyValue>();
    v->kind = k;
    return v;
  }
  static PyRef str(Kind k, std::string text) {
    auto v = make(k);
    v->s = std::move(text);
    return v;
  }
  static PyRef integer(int64_t value, Kind k = Kind::Int) {
    auto v = make(k);
    v->i = value;
    return v;
  }

  // Dict assignment: a str key already present keeps its position, as in Python.
  void set_item(const PyRef& key, const PyRef& value);
};

/// The Python type of `v` as error messages name it: "dict", "tensor", "argparse.Namespace object".
std::string describe(const PyValue& v);

/// Runs the pickle `pickle` (the data.pkl record of the archive `zip`) and returns the object it
/// builds, with tensors read from the archive's data/<key> records. `path` names the file in
/// errors. Throws CheckpointError on a malformed or unsupported pickle, naming the byte offset;
/// libtorch's reader may throw c10::Error on a damaged record.
PyRef unpickle(const std::string& path, const std::string& pickle, caffe2::serialize::PyTorchStreamReader& zip);

}  // namespace moejet::io::detail
