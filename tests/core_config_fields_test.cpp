// Config structs that declare their fields once (core/config_fields.h): the one list gives the
// writer, the strict reader and the known keys, nested structs included.

#include <gtest/gtest.h>

#include "moejet/core/config_fields.h"
#include "test_util.h"

namespace {

struct Inner {
  int64_t size = 3;
  std::vector<double> values{0.5, 1.5};
  MOEJET_CONFIG_FIELDS(size, values)
};

struct Outer {
  std::string name = "x";
  Inner inner;
  bool flag = false;
  MOEJET_CONFIG_FIELDS(name, inner, flag)
};

struct NoFields {
  int a = 0;
};

}  // namespace

using moejet::ConfigError;
using moejet::json;
using moejet::testing::throws_error;

TEST(ConfigFields, OneListGivesTheKeysTheWriterAndTheStrictReader) {
  static_assert(moejet::has_config_fields_v<Outer> && moejet::has_config_fields_v<Inner>);
  static_assert(!moejet::has_config_fields_v<NoFields> && !moejet::has_config_fields_v<int>);
  EXPECT_EQ(moejet::config_keys<Outer>(), (std::vector<std::string>{"name", "inner", "flag"}));
  const json written = moejet::config_to_json(Outer{});
  EXPECT_EQ(written, json::parse(R"({"name": "x", "inner": {"size": 3, "values": [0.5, 1.5]}, "flag": false})"));

  // Absent keys keep their defaults; a nested object is read into the nested struct.
  Outer o;
  moejet::read_config(json::parse(R"({"inner": {"size": 7}, "flag": true})"), o, "model");
  EXPECT_EQ(o.name, "x");
  EXPECT_EQ(o.inner.size, 7);
  EXPECT_EQ(o.inner.values, (std::vector<double>{0.5, 1.5}));
  EXPECT_TRUE(o.flag);
  Outer back;
  moejet::read_config(moejet::config_to_json(o), back, "");
  EXPECT_EQ(moejet::config_to_json(back), moejet::config_to_json(o));
}

TEST(ConfigFields, UnknownKeysAndWrongTypesNameTheirDottedPath) {
  Outer o;
  EXPECT_TRUE(throws_error<ConfigError>(
      [&] {
        moejet::read_config(json{{"inner", {{"sise", 1}}}}, o, "model");
      },
      {"unknown key 'model.inner.sise'", "known keys: size, values"}));
  EXPECT_TRUE(throws_error<ConfigError>(
      [&] {
        moejet::read_config(json{{"inner", {{"size", "big"}}}}, o, "model");
      },
      {"'model.inner.size'", "expected number", "string"}));
  EXPECT_TRUE(throws_error<ConfigError>(
      [&] {
        moejet::read_config(json{{"inner", {{"size", 1.5}}}}, o, "");
      },
      {"'inner.size'", "whole number"}));
  EXPECT_TRUE(throws_error<ConfigError>([&] { moejet::read_config(json::array(), o, "model"); },
                                        {"'model'", "expected an object"}));
  // Keys the caller reads itself are allowed by name.
  moejet::read_config(json{{"preset", "tiny"}, {"flag", true}}, o, "model", {"preset"});
  EXPECT_TRUE(o.flag);
}
