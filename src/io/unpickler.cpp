// The restricted pickle reader; unpickler.h says what it accepts and why it exists.

#include "unpickler.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "moejet/core/error.h"

namespace moejet::io::detail {

PyValue::~PyValue() {
  std::vector<PyRef> pending;
  auto take_children = [&pending](PyValue& v) {
    for (auto& item : v.items)
      pending.push_back(std::move(item));
    for (auto& [key, value] : v.entries) {
      pending.push_back(std::move(key));
      pending.push_back(std::move(value));
    }
    v.items.clear();
    v.entries.clear();
  };
  take_children(*this);
  while (!pending.empty()) {
    PyRef v = std::move(pending.back());
    pending.pop_back();
    if (v && v.use_count() == 1)
      take_children(*v);
  }  // v, now without children, is destroyed here without recursion
}

void PyValue::set_item(const PyRef& key, const PyRef& value) {
  if (key->kind == Kind::Str) {
    auto it = index.find(key->s);
    if (it != index.end()) {
      entries[it->second].second = value;
      return;
    }
    index.emplace(key->s, entries.size());
  }
  entries.emplace_back(key, value);
}

std::string describe(const PyValue& v) {
  using K = PyValue::Kind;
  switch (v.kind) {
    case K::None:
      return "None";
    case K::Bool:
      return "bool";
    case K::Int:
      return "int";
    case K::Float:
      return "float";
    case K::Str:
      return "str";
    case K::Bytes:
      return "bytes";
    case K::Tuple:
      return "tuple";
    case K::List:
      return "list";
    case K::Dict:
      return "dict";
    case K::Global:
      return "class " + v.s;
    case K::Object:
      return v.s + " object";
    case K::Storage:
      return "storage";
    case K::Tensor:
      return "tensor";
  }
  return "?";
}

namespace {

torch::ScalarType storage_dtype(const std::string& name, const std::string& path) {
  static const std::map<std::string, torch::ScalarType> kStorages = {
      {"torch.DoubleStorage", torch::kFloat64},
      {"torch.FloatStorage", torch::kFloat32},
      {"torch.HalfStorage", torch::kFloat16},
      {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},
      {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},
      {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},
      {"torch.BoolStorage", torch::kBool},
      {"torch.ComplexFloatStorage", torch::kComplexFloat},
      {"torch.ComplexDoubleStorage", torch::kComplexDouble},
      {"torch.UntypedStorage", torch::kUInt8},
  };
  auto it = kStorages.find(name);
  if (it == kStorages.end()) {
    throw CheckpointError(fmt::format("{}: unsupported tensor storage type {}", path, name));
  }
  return it->second;
}

class Unpickler {
 public:
  Unpickler(std::string path, const std::string& pickle, caffe2::serialize::PyTorchStreamReader& zip)
      : path_(std::move(path)), data_(pickle), zip_(zip) {}

  PyRef run() {
    using K = PyValue::Kind;
    while (true) {
      const size_t at = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          uint8_t proto = u8();
          if (proto > 5) {
            fail(at, fmt::format("pickle protocol {} is newer than any Python writes", proto));
          }
        } break;
        case 0x95:
          u64();
          break;     // FRAME: only a read-ahead hint
        case '.': {  // STOP
          if (stack_.size() != 1 || !marks_.empty()) {
            fail(at, "malformed pickle: stack not empty at STOP");
          }
          return stack_.back();
        }
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '0':
          pop(at);
          break;
        case '1':
          pop_mark(at);
          break;
        case '2':
          push(top(at));
          break;
        case 'N':
          push(PyValue::make(K::None));
          break;
        case 0x88:
          push(PyValue::integer(1, K::Bool));
          break;
        case 0x89:
          push(PyValue::integer(0, K::Bool));
          break;
        case 'I': {
          std::string text = line(at);
          if (text == "00" || text == "01") {
            push(PyValue::integer(text == "01", K::Bool));
          } else {
            push(PyValue::integer(std::strtoll(text.c_str(), nullptr, 10)));
          }
        } break;
        case 'J':
          push(PyValue::integer(static_cast<int32_t>(u32())));
          break;
        case 'K':
          push(PyValue::integer(u8()));
          break;
        case 'M':
          push(PyValue::integer(u16()));
          break;
        case 'L':
          push(PyValue::integer(std::strtoll(line(at).c_str(), nullptr, 10)));
          break;
        case 0x8a:
          push(long_int(at, u8()));
          break;
        case 0x8b:
          push(long_int(at, u32()));
          break;
        case 'F': {
          auto v = PyValue::make(K::Float);
          v->f = std::strtod(line(at).c_str(), nullptr);
          push(v);
        } break;
        case 'G': {
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) {
            bits = (bits << 8) | u8();  // big-endian
          }
          auto v = PyValue::make(K::Float);
          std::memcpy(&v->f, &bits, 8);
          push(v);
        } break;
        case 'S': {  // STRING: a Python 2 repr; only names and keys matter, so strip the quotes
          std::string text = line(at);
          if (text.size() >= 2 && (text[0] == '\'' || text[0] == '"')) {
            text = text.substr(1, text.size() - 2);
          }
          push(PyValue::str(K::Str, text));
        } break;
        case 'T':
          push(PyValue::str(K::Str, bytes(at, u32())));
          break;
        case 'U':
          push(PyValue::str(K::Str, bytes(at, u8())));
          break;
        case 'B':
          push(PyValue::str(K::Bytes, bytes(at, u32())));
          break;
        case 'C':
          push(PyValue::str(K::Bytes, bytes(at, u8())));
          break;
        case 0x8e:
        case 0x96:
          push(PyValue::str(K::Bytes, bytes(at, u64())));
          break;
        case 'V':
          push(PyValue::str(K::Str, line(at)));
          break;
        case 'X':
          push(PyValue::str(K::Str, bytes(at, u32())));
          break;
        case 0x8c:
          push(PyValue::str(K::Str, bytes(at, u8())));
          break;
        case 0x8d:
          push(PyValue::str(K::Str, bytes(at, u64())));
          break;
        case ')':
          push(PyValue::make(K::Tuple));
          break;
        case 't': {
          auto v = PyValue::make(K::Tuple);
          v->items = pop_mark(at);
          push(v);
        } break;
        case 0x85:
        case 0x86:
        case 0x87: {
          auto v = PyValue::make(K::Tuple);
          v->items.resize(op - 0x84);
          for (size_t k = v->items.size(); k-- > 0;) {
            v->items[k] = pop(at);
          }
          push(v);
        } break;
        case ']':
          push(PyValue::make(K::List));
          break;
        case 'l': {
          auto v = PyValue::make(K::List);
          v->items = pop_mark(at);
          push(v);
        } break;
        case 'a': {
          PyRef item = pop(at);
          append(at, {item});
        } break;
        case 'e':
          append(at, pop_mark(at));
          break;
        case '}':
          push(PyValue::make(K::Dict));
          break;
        case 'd': {
          auto v = PyValue::make(K::Dict);
          set_items(at, *v, pop_mark(at));
          push(v);
        } break;
        case 's': {
          PyRef value = pop(at);
          PyRef key = pop(at);
          set_items_on_top(at, {key, value});
        } break;
        case 'u':
          set_items_on_top(at, pop_mark(at));
          break;
        case 0x8f:
          push(PyValue::str(K::Object, "builtins.set"));
          break;
        case 0x90:
          pop_mark(at);
          break;  // ADDITEMS: sets never hold weights
        case 0x91:
          pop_mark(at);
          push(PyValue::str(K::Object, "builtins.frozenset"));
          break;
        case 'g':
          push(memo_get(at, std::strtoull(line(at).c_str(), nullptr, 10)));
          break;
        case 'h':
          push(memo_get(at, u8()));
          break;
        case 'j':
          push(memo_get(at, u32()));
          break;
        case 'p':
          memo_[std::strtoull(line(at).c_str(), nullptr, 10)] = top(at);
          break;
        case 'q':
          memo_[u8()] = top(at);
          break;
        case 'r':
          memo_[u32()] = top(at);
          break;
        case 0x94:
          memo_[memo_.size()] = top(at);
          break;
        case 'c': {
          std::string module = line(at);
          std::string name = line(at);
          push(PyValue::str(K::Global, module + "." + name));
        } break;
        case 0x93: {
          PyRef name = pop(at);
          PyRef module = pop(at);
          push(PyValue::str(K::Global, module->s + "." + name->s));
        } break;
        case 'R': {
          PyRef args = pop(at);
          PyRef callable = pop(at);
          push(call(at, *callable, *args));
        } break;
        case 0x81: {
          pop(at);
          PyRef cls = pop(at);
          push(instance(*cls));
        } break;
        case 0x92: {
          pop(at);
          pop(at);
          PyRef cls = pop(at);
          push(instance(*cls));
        } break;
        case 'b':
          pop(at);
          top(at);
          break;  // BUILD sets attributes (OrderedDict._metadata)
        case 'Q':
          push(persistent_load(at, *pop(at)));
          break;
        case 'o': {
          auto items = pop_mark(at);
          push(items.empty() ? PyValue::str(K::Object, "?") : instance(*items[0]));
        } break;
        case 'i': {
          std::string module = line(at);
          std::string name = line(at);
          pop_mark(at);
          push(PyValue::str(K::Object, module + "." + name));
        } break;
        default:
          fail(at, fmt::format("unsupported pickle opcode 0x{:02x}", op));
      }
    }
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw CheckpointError(fmt::format("{}: data.pkl byte {}: {}", path_, at, what));
  }

  void need(size_t n) {
    if (n > data_.size() - pos_) {
      fail(pos_, "truncated pickle");
    }
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t little(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t k = n; k-- > 0;) {
      v = (v << 8) | static_cast<uint8_t>(data_[pos_ + k]);
    }
    pos_ += n;
    return v;
  }
  uint16_t u16() {
    return static_cast<uint16_t>(little(2));
  }
  uint32_t u32() {
    return static_cast<uint32_t>(little(4));
  }
  uint64_t u64() {
    return little(8);
  }
  std::string bytes(size_t at, uint64_t n) {
    if (n > data_.size() - pos_) {
      fail(at, fmt::format("truncated pickle: a {}-byte string runs past the end", n));
    }
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line(size_t at) {
    size_t end = data_.find('\n', pos_);
    if (end == std::string::npos) {
      fail(at, "truncated pickle: unterminated text argument");
    }
    std::string s = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  PyRef long_int(size_t at, uint64_t n) {
    if (n > 8) {
      bytes(at, n);
      return PyValue::str(PyValue::Kind::Object, "builtins.int (over 64 bits)");
    }
    uint64_t v = n ? little(n) : 0;
    if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) {
      v |= ~uint64_t{0} << (8 * n);  // sign-extend two's complement
    }
    return PyValue::integer(static_cast<int64_t>(v));
  }

  void push(PyRef v) {
    stack_.push_back(std::move(v));
  }
  PyRef& top(size_t at) {
    if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size())) {
      fail(at, "malformed pickle: stack underflow");
    }
    return stack_.back();
  }
  PyRef pop(size_t at) {
    PyRef v = top(at);
    stack_.pop_back();
    return v;
  }
  std::vector<PyRef> pop_mark(size_t at) {
    if (marks_.empty()) {
      fail(at, "malformed pickle: no MARK");
    }
    size_t start = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(start), stack_.end());
    stack_.resize(start);
    return items;
  }
  PyRef memo_get(size_t at, uint64_t id) {
    auto it = memo_.find(id);
    if (it == memo_.end()) {
      fail(at, fmt::format("malformed pickle: memo entry {} is not defined", id));
    }
    return it->second;
  }

  void append(size_t at, const std::vector<PyRef>& items) {
    PyValue& list = *top(at);
    if (list.kind == PyValue::Kind::List) {
      list.items.insert(list.items.end(), items.begin(), items.end());
    }
  }
  void set_items(size_t at, PyValue& dict, const std::vector<PyRef>& items) {
    if (items.size() % 2 != 0) {
      fail(at, "malformed pickle: odd number of dict items");
    }
    for (size_t k = 0; k < items.size(); k += 2) {
      dict.set_item(items[k], items[k + 1]);
    }
  }
  void set_items_on_top(size_t at, const std::vector<PyRef>& items) {
    PyValue& target = *top(at);
    // Items of dict subclasses built through NEWOBJ (opaque objects) are ignored.
    if (target.kind == PyValue::Kind::Dict) {
      set_items(at, target, items);
    } else if (items.size() % 2 != 0) {
      fail(at, "malformed pickle: odd number of dict items");
    }
  }

  PyRef instance(const PyValue& cls) {
    if (cls.kind == PyValue::Kind::Global && cls.s == "collections.OrderedDict") {
      return PyValue::make(PyValue::Kind::Dict);
    }
    return PyValue::str(PyValue::Kind::Object, cls.kind == PyValue::Kind::Global ? cls.s : "?");
  }

  PyRef call(size_t at, const PyValue& callable, const PyValue& args) {
    using K = PyValue::Kind;
    if (callable.kind != K::Global) {
      return PyValue::str(K::Object, "<call result>");
    }
    const std::string& name = callable.s;
    if (name == "collections.OrderedDict") {
      return PyValue::make(K::Dict);
    }
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      return rebuild_tensor(at, args);
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      if (args.kind == K::Tuple && !args.items.empty() && args.items[0]->kind == K::Tensor) {
        return args.items[0];
      }
      fail(at, fmt::format("malformed {} arguments", name));
    }
    return PyValue::str(K::Object, name);
  }

  // ('storage', storage class, record key, location, numel): the tensor bytes live in the zip
  // record data/<key>. Storages shared by several tensors (views, tied weights) are read once.
  PyRef persistent_load(size_t at, const PyValue& pid) {
    using K = PyValue::Kind;
    if (pid.kind != K::Tuple || pid.items.size() < 3 || pid.items[0]->kind != K::Str || pid.items[0]->s != "storage" ||
        pid.items[1]->kind != K::Global || pid.items[2]->kind != K::Str) {
      fail(at, "unsupported persistent id (expected a torch.save storage reference)");
    }
    const std::string& key = pid.items[2]->s;
    auto cached = storages_.find(key);
    if (cached != storages_.end()) {
      return cached->second;
    }
    const torch::ScalarType dtype = storage_dtype(pid.items[1]->s, path_);
    const std::string record = "data/" + key;
    if (!zip_.hasRecord(record)) {
      throw CheckpointError(fmt::format("{}: tensor data record '{}' is missing from the archive", path_, record));
    }
    auto [data, size] = zip_.getRecord(record);
    const size_t item = c10::elementSize(dtype);
    if (size % item != 0) {
      throw CheckpointError(
          fmt::format("{}: record '{}' holds {} bytes, not a whole number of "
                      "{}-byte elements",
                      path_, record, size, item));
    }
    auto v = PyValue::make(K::Storage);
    v->tensor = torch::empty({static_cast<int64_t>(size / item)}, torch::dtype(dtype));
    if (size > 0) {
      std::memcpy(v->tensor.data_ptr(), data.get(), size);
    }
    storages_.emplace(key, v);
    return v;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])
  PyRef rebuild_tensor(size_t at, const PyValue& args) {
    using K = PyValue::Kind;
    auto int_tuple = [&](const PyValue& t, std::vector<int64_t>* out) {
      if (t.kind != K::Tuple) {
        return false;
      }
      for (const auto& e : t.items) {
        if (e->kind != K::Int || e->i < 0) {
          return false;
        }
        out->push_back(e->i);
      }
      return true;
    };
    std::vector<int64_t> sizes, strides;
    if (args.kind != K::Tuple || args.items.size() < 4 || args.items[0]->kind != K::Storage ||
        args.items[1]->kind != K::Int || !int_tuple(*args.items[2], &sizes) || !int_tuple(*args.items[3], &strides) ||
        sizes.size() != strides.size()) {
      fail(at, "malformed _rebuild_tensor_v2 arguments");
    }
    const torch::Tensor& storage = args.items[0]->tensor;
    const int64_t offset = args.items[1]->i;
    // Bounds are checked here because as_strided on a bad header would read out of bounds.
    // 128-bit so that hostile sizes cannot wrap around into range.
    __int128 numel = 1, last = offset;
    for (size_t d = 0; d < sizes.size(); ++d) {
      numel = std::min<__int128>(numel * sizes[d], __int128{1} << 64);
      if (sizes[d] > 0) {
        last += static_cast<__int128>(sizes[d] - 1) * strides[d];
      }
    }
    if (offset < 0 || (numel > 0 && last >= storage.numel())) {
      fail(at, fmt::format("tensor view (offset {}, sizes {}, strides {}) exceeds its storage of "
                           "{} elements",
                           offset, fmt::join(sizes, "x"), fmt::join(strides, ","), storage.numel()));
    }
    torch::Tensor t = storage.as_strided(sizes, strides, offset);
    // A view of part of a storage is copied out, so it does not pin (and alias) the whole buffer.
    if (offset != 0 || t.numel() != storage.numel() || !t.is_contiguous()) {
      t = t.clone(at::MemoryFormat::Contiguous);
    }
    auto v = PyValue::make(K::Tensor);
    v->tensor = t;
    return v;
  }

  std::string path_;
  const std::string& data_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  size_t pos_ = 0;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
  std::unordered_map<std::string, PyRef> storages_;
};

}  // namespace

PyRef unpickle(const std::string& path, const std::string& pickle, caffe2::serialize::PyTorchStreamReader& zip) {
  Unpickler unpickler(path, pickle, zip);
  return unpickler.run();
}

}  // namespace moejet::io::detail
