// Writing torch.save() zip checkpoints, for code that reads weights with torch.load (the MoE
// Jetpack authors' mmengine `load_from`, plain PyTorch scripts). libtorch's own torch::save
// writes a TorchScript archive that torch.load does not read, so the pickle of a {name: tensor}
// dict is written here, in the form torch.save gives it (protocol 2, each tensor a
// torch._utils._rebuild_tensor_v2 call on a persistent storage reference), and the zip container
// by libtorch's PyTorchStreamWriter, as torch.save itself does.

#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <string>

#include <fmt/format.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/io/checkpoint_file.h"

namespace moejet::io {

namespace {

// The pickle opcodes used below (Python's pickletools names).
constexpr char PROTO = '\x80', EMPTY_DICT = '}', MARK = '(', BINUNICODE = 'X', GLOBAL = 'c', TUPLE = 't',
               EMPTY_TUPLE = ')', BINPERSID = 'Q', BININT = 'J', LONG1 = '\x8a', NEWFALSE = '\x89', REDUCE = 'R',
               SETITEMS = 'u', STOP = '.';

class PickleWriter {
 public:
  void op(char c) {
    out_.push_back(c);
  }
  void str(const std::string& s) {
    op(BINUNICODE);
    u32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void global(const std::string& module, const std::string& name) {
    op(GLOBAL);
    out_ += module + "\n" + name + "\n";
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op(BININT);
      u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      op(LONG1);  // 8 little-endian two's-complement bytes
      out_.push_back('\x08');
      for (int i = 0; i < 8; ++i) {
        out_.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
      }
    }
  }
  void int_tuple(c10::IntArrayRef values) {
    op(MARK);
    for (auto v : values) {
      integer(v);
    }
    op(TUPLE);
  }
  const std::string& bytes() const {
    return out_;
  }

 private:
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) {
      out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    }
  }
  std::string out_;
};

const char* storage_type(const std::string& key, c10::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return "FloatStorage";
    case torch::kDouble:
      return "DoubleStorage";
    case torch::kHalf:
      return "HalfStorage";
    case torch::kBFloat16:
      return "BFloat16Storage";
    case torch::kLong:
      return "LongStorage";
    case torch::kInt:
      return "IntStorage";
    case torch::kShort:
      return "ShortStorage";
    case torch::kChar:
      return "CharStorage";
    case torch::kByte:
      return "ByteStorage";
    case torch::kBool:
      return "BoolStorage";
    default:
      throw CheckpointError(fmt::format("{}: dtype {} cannot be written to a torch.save file", key, c10::toString(t)));
  }
}

}  // namespace

void write_torch_checkpoint(const std::string& path, const StateDict& state) {
  PickleWriter p;
  p.op(PROTO);
  p.op('\x02');
  p.op(EMPTY_DICT);
  p.op(MARK);
  std::vector<torch::Tensor> storages;
  for (const auto& item : state) {
    auto t = item.value().detach().to(torch::kCPU).contiguous();
    const char* type = storage_type(item.key(), t.scalar_type());
    p.str(item.key());
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op(MARK);
    // Persistent id ('storage', torch.<Type>Storage, '<record>', 'cpu', numel): the tensor's bytes
    // are the zip record data/<record>.
    p.op(MARK);
    p.str("storage");
    p.global("torch", type);
    p.str(std::to_string(storages.size()));
    p.str("cpu");
    p.integer(t.numel());
    p.op(TUPLE);
    p.op(BINPERSID);
    p.integer(0);  // storage offset
    p.int_tuple(t.sizes());
    p.int_tuple(t.strides());
    p.op(NEWFALSE);  // requires_grad
    p.global("collections", "OrderedDict");
    p.op(EMPTY_TUPLE);
    p.op(REDUCE);  // backward hooks: OrderedDict()
    p.op(TUPLE);
    p.op(REDUCE);
    storages.push_back(t);
  }
  p.op(SETITEMS);
  p.op(STOP);
  write_atomic(path, [&](std::ostream& os) {
    caffe2::serialize::PyTorchStreamWriter zip([&os](const void* data, size_t n) -> size_t {
      os.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
      return os ? n : 0;
    });
    zip.writeRecord("data.pkl", p.bytes().data(), p.bytes().size());
    for (size_t i = 0; i < storages.size(); ++i) {
      const auto& t = storages[i];
      zip.writeRecord("data/" + std::to_string(i), t.data_ptr(), t.nbytes());
    }
    zip.writeEndOfFile();
    if (!os) {
      throw CheckpointError(fmt::format("{}: writing the torch.save archive failed", path));
    }
  });
}

}  // namespace moejet::io
