// safetensors reading and writing, by hand: the format is an 8-byte little-endian header length,
// a JSON header and one flat byte buffer, simple enough that a dependency buys nothing.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/io/checkpoint_file.h"

namespace moejet::io {

namespace {

// The byte buffer is read into and written from tensor memory as-is.
static_assert(sizeof(uint64_t) == 8, "safetensors needs a 64-bit header length");

bool host_is_little_endian() {
  const uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

struct DtypeName {
  const char* name;
  torch::ScalarType type;
};

constexpr DtypeName kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

const char* dtype_to_name(torch::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) {
      return d.name;
    }
  }
  return nullptr;
}

bool name_to_dtype(const std::string& name, torch::ScalarType* type) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *type = d.type;
      return true;
    }
  }
  return false;
}

std::string known_dtype_names() {
  std::string s;
  for (const auto& d : kDtypes) {
    s += s.empty() ? d.name : std::string(", ") + d.name;
  }
  return s;
}

// JSON string literal for `s`; invalid UTF-8 would produce a header no reader accepts.
std::string quote(const std::string& s, const std::string& path, const char* what) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("{}: cannot write {} '{}': not valid UTF-8", path, what, s));
  }
}

std::string layout_name(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.layout();
  return s.str();
}

std::string int_list(const std::vector<int64_t>& values) {
  return "[" + fmt::format("{}", fmt::join(values, ", ")) + "]";
}

struct Entry {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Reads a non-negative JSON integer; `what` names the field in the error.
uint64_t read_uint(const nlohmann::ordered_json& j, const std::string& path, const std::string& key, const char* what) {
  if (j.is_number_unsigned()) {
    return j.get<uint64_t>();
  }
  if (j.is_number_integer()) {
    throw CheckpointError(fmt::format("{}: tensor '{}': {} must not be negative, got {}", path, key, what, j.dump()));
  }
  throw CheckpointError(fmt::format("{}: tensor '{}': {} must be an integer, got {}", path, key, what, j.dump()));
}

Entry parse_entry(const std::string& path, const std::string& key, const nlohmann::ordered_json& j,
                  uint64_t buffer_size) {
  if (!j.is_object()) {
    throw CheckpointError(
        fmt::format("{}: tensor '{}': expected an object in the header, got {}", path, key, j.type_name()));
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!j.contains(field)) {
      throw CheckpointError(fmt::format("{}: tensor '{}': header entry lacks \"{}\"", path, key, field));
    }
  }
  Entry e;
  e.name = key;
  const auto& dtype = j.at("dtype");
  if (!dtype.is_string() || !name_to_dtype(dtype.get<std::string>(), &e.dtype)) {
    throw CheckpointError(fmt::format("{}: tensor '{}': unsupported dtype {} (supported: {})", path, key, dtype.dump(),
                                      known_dtype_names()));
  }
  const auto& shape = j.at("shape");
  if (!shape.is_array()) {
    throw CheckpointError(fmt::format("{}: tensor '{}': shape must be an array, got {}", path, key, shape.dump()));
  }
  // numel * itemsize is compared with the byte range, so guard it against overflow first.
  uint64_t bytes = torch::elementSize(e.dtype);
  bool overflow = false;
  for (const auto& dim : shape) {
    uint64_t d = read_uint(dim, path, key, "shape dimension");
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      overflow = true;
    } else if (d != 0 && bytes > std::numeric_limits<uint64_t>::max() / d) {
      overflow = true;
    }
    bytes = overflow ? 0 : bytes * d;
    e.shape.push_back(
        static_cast<int64_t>(std::min<uint64_t>(d, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))));
  }
  const auto& offsets = j.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    throw CheckpointError(
        fmt::format("{}: tensor '{}': data_offsets must be [begin, end], got {}", path, key, offsets.dump()));
  }
  e.begin = read_uint(offsets[0], path, key, "data_offsets begin");
  e.end = read_uint(offsets[1], path, key, "data_offsets end");
  if (e.begin > e.end || e.end > buffer_size) {
    throw CheckpointError(
        fmt::format("{}: tensor '{}': data_offsets [{}, {}] out of range (data buffer holds {} bytes)", path, key,
                    e.begin, e.end, buffer_size));
  }
  if (overflow || bytes != e.end - e.begin) {
    throw CheckpointError(
        fmt::format("{}: tensor '{}': shape {} of {} needs {} bytes, but data_offsets [{}, {}] span {}", path, key,
                    int_list(e.shape), dtype.get<std::string>(),
                    overflow ? std::string("more than 2^64") : std::to_string(bytes), e.begin, e.end, e.end - e.begin));
  }
  return e;
}

}  // namespace

StateDict read_safetensors(const std::string& path, Metadata* metadata) {
  check<CheckpointError>(host_is_little_endian(), "{}: safetensors data is little-endian; this host is not", path);
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in) {
    throw CheckpointError(fmt::format("{}: cannot open safetensors file", path));
  }
  if (file_size < 8) {
    throw CheckpointError(
        fmt::format("{}: truncated safetensors file ({} bytes; the header length alone takes 8)", path, file_size));
  }
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | len_bytes[i];
  }
  if (header_len > file_size - 8) {
    throw CheckpointError(
        fmt::format("{}: header length {} exceeds the file size ({} bytes): truncated or not a safetensors "
                    "file",
                    path, header_len, file_size));
  }
  std::string header(static_cast<size_t>(header_len), '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) {
    throw CheckpointError(fmt::format("{}: cannot read the {}-byte header", path, header_len));
  }
  const uint64_t buffer_size = file_size - 8 - header_len;

  // ordered_json keeps the header's (= the writer's state-dict) order. The callback sees every
  // top-level key, so a duplicated tensor name is reported instead of silently shadowed.
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
    // A header is {name: {dtype, shape, data_offsets}} plus string metadata: three levels. Deep
    // nesting in a hostile file would only cost stack (and crash on destruction).
    if (depth > 16) {
      throw CheckpointError(fmt::format("{}: safetensors header nested deeper than 16 levels", path));
    }
    if (event == nlohmann::ordered_json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(header, on_event);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("{}: invalid safetensors header JSON: {}", path, e.what()));
  }
  if (!j.is_object()) {
    throw CheckpointError(fmt::format("{}: safetensors header must be a JSON object, got {}", path, j.type_name()));
  }
  if (!duplicate.empty()) {
    throw CheckpointError(fmt::format("{}: tensor '{}' appears twice in the safetensors header", path, duplicate));
  }

  std::vector<Entry> entries;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) {
        throw CheckpointError(fmt::format("{}: __metadata__ must be an object, got {}", path, it->type_name()));
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          throw CheckpointError(
              fmt::format("{}: __metadata__ '{}' must be a string, got {}", path, m.key(), m->dump()));
        }
        if (metadata) {
          (*metadata)[m.key()] = m->get<std::string>();
        }
      }
      continue;
    }
    entries.push_back(parse_entry(path, it.key(), *it, buffer_size));
  }

  // Overlapping ranges mean a corrupt or hostile header: two tensors would share bytes.
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries) {
    if (e.end > e.begin) {
      by_offset.push_back(&e);
    }
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& prev = *by_offset[i - 1];
    const Entry& cur = *by_offset[i];
    if (cur.begin < prev.end) {
      throw CheckpointError(fmt::format("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap in the data buffer", path,
                                        prev.name, prev.begin, prev.end, cur.name, cur.begin, cur.end));
    }
  }

  StateDict state;
  const uint64_t data_start = 8 + header_len;
  for (const auto& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    const uint64_t n = e.end - e.begin;
    if (n > 0) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin));
      if (!in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(n))) {
        throw CheckpointError(fmt::format("{}: tensor '{}': read of {} bytes failed", path, e.name, n));
      }
    }
    state.insert(e.name, std::move(t));
  }
  return state;
}

void write_safetensors(const std::string& path, const StateDict& state, const Metadata& metadata) {
  check<CheckpointError>(host_is_little_endian(), "{}: safetensors data is little-endian; this host is not", path);
  // Validate and lay out everything before write_atomic opens the temp file, so a bad tensor
  // never costs a partial write.
  // The header is written the way Python's json.dumps does (", " and ": "), which makes a round
  // trip of a file written by the reference tooling byte-identical.
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\": {";
    bool first_meta = true;
    for (const auto& [k, v] : metadata) {
      header += first_meta ? "" : ", ";
      header += quote(k, path, "metadata key") + ": " + quote(v, path, "metadata value");
      first_meta = false;
    }
    header += "}";
    first = false;
  }
  uint64_t offset = 0;
  for (const auto& item : state) {
    const std::string& key = item.key();
    const torch::Tensor& t = item.value();
    if (key == "__metadata__") {
      throw CheckpointError(fmt::format("{}: '__metadata__' is reserved and cannot name a tensor", path));
    }
    if (!t.defined()) {
      throw CheckpointError(fmt::format("{}: tensor '{}' is undefined", path, key));
    }
    if (t.layout() != torch::kStrided) {
      throw CheckpointError(fmt::format("{}: tensor '{}' is not dense (layout {})", path, key, layout_name(t)));
    }
    const char* dtype = dtype_to_name(t.scalar_type());
    if (!dtype) {
      throw CheckpointError(
          fmt::format("{}: tensor '{}' has dtype {}, which safetensors cannot "
                      "store here (supported: {})",
                      path, key, c10::toString(t.scalar_type()), known_dtype_names()));
    }
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header += first ? "" : ", ";
    header += fmt::format("{}: {{\"dtype\": \"{}\", \"shape\": {}, \"data_offsets\": [{}, {}]}}",
                          quote(key, path, "tensor name"), dtype, int_list(t.sizes().vec()), offset, offset + bytes);
    offset += bytes;
    first = false;
  }
  header += "}";
  // Padding keeps the byte buffer 8-byte aligned for readers that map the file.
  header.append((8 - header.size() % 8) % 8, ' ');

  write_atomic(path, [&](std::ostream& out) {
    unsigned char len_bytes[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) {
      len_bytes[i] = static_cast<unsigned char>(n >> (8 * i));
    }
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& item : state) {
      // One tensor at a time, so a GPU or strided state dict never needs a second full copy.
      torch::Tensor t = item.value().detach().to(torch::kCPU).contiguous();
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
  });
}

}  // namespace moejet::io
