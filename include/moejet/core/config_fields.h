#pragma once
// Config structs declare their JSON fields once, inside the struct, after the members:
//
//   struct OptimConfig {
//     std::string opt = "adamw";
//     double lr = 1e-3;
//     MOEJET_CONFIG_FIELDS(opt, lr)
//   };
//
// That one list gives the writer (config_to_json), the strict reader (read_config: an unknown key
// is a ConfigError with its dotted path and the known keys, a wrong type names its key) and the
// known keys (config_keys<T>()). A field whose type has such a list of its own is a nested object,
// read with its path extended; a type with a reader of its own, read_json(j, value, path) found by
// argument-dependent lookup, is read by it (e.g. a model config that dispatches on "arch"); any
// other field type goes through read_key and nlohmann's conversions. Adding a field to a config is then one member and
// one name in the same struct. Validation stays with each struct (a validate() member), since it is about meaning, not
// shape.

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "moejet/core/json_util.h"

// MOEJET_FOR_EACH_(m, a, b, c) expands to m(a) m(b) m(c), for up to 40 arguments.
#define MOEJET_EXPAND_(x) x
#define MOEJET_FE_1_(m, x) m(x)
#define MOEJET_FE_2_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_1_(m, __VA_ARGS__))
#define MOEJET_FE_3_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_2_(m, __VA_ARGS__))
#define MOEJET_FE_4_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_3_(m, __VA_ARGS__))
#define MOEJET_FE_5_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_4_(m, __VA_ARGS__))
#define MOEJET_FE_6_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_5_(m, __VA_ARGS__))
#define MOEJET_FE_7_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_6_(m, __VA_ARGS__))
#define MOEJET_FE_8_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_7_(m, __VA_ARGS__))
#define MOEJET_FE_9_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_8_(m, __VA_ARGS__))
#define MOEJET_FE_10_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_9_(m, __VA_ARGS__))
#define MOEJET_FE_11_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_10_(m, __VA_ARGS__))
#define MOEJET_FE_12_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_11_(m, __VA_ARGS__))
#define MOEJET_FE_13_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_12_(m, __VA_ARGS__))
#define MOEJET_FE_14_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_13_(m, __VA_ARGS__))
#define MOEJET_FE_15_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_14_(m, __VA_ARGS__))
#define MOEJET_FE_16_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_15_(m, __VA_ARGS__))
#define MOEJET_FE_17_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_16_(m, __VA_ARGS__))
#define MOEJET_FE_18_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_17_(m, __VA_ARGS__))
#define MOEJET_FE_19_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_18_(m, __VA_ARGS__))
#define MOEJET_FE_20_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_19_(m, __VA_ARGS__))
#define MOEJET_FE_21_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_20_(m, __VA_ARGS__))
#define MOEJET_FE_22_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_21_(m, __VA_ARGS__))
#define MOEJET_FE_23_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_22_(m, __VA_ARGS__))
#define MOEJET_FE_24_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_23_(m, __VA_ARGS__))
#define MOEJET_FE_25_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_24_(m, __VA_ARGS__))
#define MOEJET_FE_26_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_25_(m, __VA_ARGS__))
#define MOEJET_FE_27_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_26_(m, __VA_ARGS__))
#define MOEJET_FE_28_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_27_(m, __VA_ARGS__))
#define MOEJET_FE_29_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_28_(m, __VA_ARGS__))
#define MOEJET_FE_30_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_29_(m, __VA_ARGS__))
#define MOEJET_FE_31_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_30_(m, __VA_ARGS__))
#define MOEJET_FE_32_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_31_(m, __VA_ARGS__))
#define MOEJET_FE_33_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_32_(m, __VA_ARGS__))
#define MOEJET_FE_34_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_33_(m, __VA_ARGS__))
#define MOEJET_FE_35_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_34_(m, __VA_ARGS__))
#define MOEJET_FE_36_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_35_(m, __VA_ARGS__))
#define MOEJET_FE_37_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_36_(m, __VA_ARGS__))
#define MOEJET_FE_38_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_37_(m, __VA_ARGS__))
#define MOEJET_FE_39_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_38_(m, __VA_ARGS__))
#define MOEJET_FE_40_(m, x, ...) m(x) MOEJET_EXPAND_(MOEJET_FE_39_(m, __VA_ARGS__))
#define MOEJET_FE_PICK_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18, _19, _20,     \
                        _21, _22, _23, _24, _25, _26, _27, _28, _29, _30, _31, _32, _33, _34, _35, _36, _37, _38, _39, \
                        _40, NAME, ...)                                                                                \
  NAME
#define MOEJET_FOR_EACH_(m, ...)                                                                               \
  MOEJET_EXPAND_(MOEJET_FE_PICK_(                                                                              \
      __VA_ARGS__, MOEJET_FE_40_, MOEJET_FE_39_, MOEJET_FE_38_, MOEJET_FE_37_, MOEJET_FE_36_, MOEJET_FE_35_,   \
      MOEJET_FE_34_, MOEJET_FE_33_, MOEJET_FE_32_, MOEJET_FE_31_, MOEJET_FE_30_, MOEJET_FE_29_, MOEJET_FE_28_, \
      MOEJET_FE_27_, MOEJET_FE_26_, MOEJET_FE_25_, MOEJET_FE_24_, MOEJET_FE_23_, MOEJET_FE_22_, MOEJET_FE_21_, \
      MOEJET_FE_20_, MOEJET_FE_19_, MOEJET_FE_18_, MOEJET_FE_17_, MOEJET_FE_16_, MOEJET_FE_15_, MOEJET_FE_14_, \
      MOEJET_FE_13_, MOEJET_FE_12_, MOEJET_FE_11_, MOEJET_FE_10_, MOEJET_FE_9_, MOEJET_FE_8_, MOEJET_FE_7_,    \
      MOEJET_FE_6_, MOEJET_FE_5_, MOEJET_FE_4_, MOEJET_FE_3_, MOEJET_FE_2_, MOEJET_FE_1_)(m, __VA_ARGS__))

#define MOEJET_VISIT_FIELD_(name) visit(#name, self.name);

/// Declares the struct's JSON fields: a static for_each_field(self, visit) calling
/// visit("name", self.name) for each, in order; Self may be const.
#define MOEJET_CONFIG_FIELDS(...)                           \
  template <class Self, class Visitor>                      \
  static void for_each_field(Self& self, Visitor&& visit) { \
    MOEJET_FOR_EACH_(MOEJET_VISIT_FIELD_, __VA_ARGS__)      \
  }

namespace moejet {

namespace detail {
struct NoopFieldVisitor {
  template <class V>
  void operator()(const char*, V&) const {}
};
}  // namespace detail

/// True for structs that declare MOEJET_CONFIG_FIELDS.
template <class T, class = void>
struct has_config_fields : std::false_type {};
template <class T>
struct has_config_fields<T, std::void_t<decltype(T::for_each_field(std::declval<T&>(), detail::NoopFieldVisitor{}))>>
    : std::true_type {};
template <class T>
inline constexpr bool has_config_fields_v = has_config_fields<T>::value;

/// True for types with a read_json(const json&, T&, const std::string& path) of their own.
template <class T, class = void>
struct has_json_reader : std::false_type {};
template <class T>
struct has_json_reader<T, std::void_t<decltype(read_json(std::declval<const json&>(), std::declval<T&>(),
                                                         std::declval<const std::string&>()))>> : std::true_type {};

/// The JSON keys of T, in declaration order.
template <class T>
std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  T probe{};
  T::for_each_field(probe, [&](const char* key, auto&) { keys.emplace_back(key); });
  return keys;
}

/// T as a JSON object: every declared field, nested configs as nested objects.
template <class T>
json config_to_json(const T& config) {
  json j = json::object();
  T::for_each_field(config, [&](const char* key, const auto& value) {
    using V = std::decay_t<decltype(value)>;
    if constexpr (has_config_fields_v<V>) {
      j[key] = config_to_json(value);
    } else {
      j[key] = value;
    }
  });
  return j;
}

/// Reads the object `j` into `config`, which keeps its values for absent keys. Keys that are not
/// fields are errors, except those in `extra_keys` (which the caller reads itself).
template <class T>
void read_config(const json& j, T& config, const std::string& path, const std::vector<std::string>& extra_keys = {}) {
  std::vector<std::string> known = config_keys<T>();
  known.insert(known.end(), extra_keys.begin(), extra_keys.end());
  check_known_keys(j, known, path);
  T::for_each_field(config, [&](const char* key, auto& value) {
    using V = std::decay_t<decltype(value)>;
    if constexpr (has_config_fields_v<V> || has_json_reader<V>::value) {
      auto it = j.find(key);
      if (it != j.end() && !it->is_null()) {
        const std::string sub_path = path.empty() ? std::string(key) : path + "." + key;
        if constexpr (has_json_reader<V>::value) {
          read_json(*it, value, sub_path);
        } else {
          read_config(*it, value, sub_path);
        }
      }
    } else {
      read_key(j, key, value, path);
    }
  });
}

}  // namespace moejet
