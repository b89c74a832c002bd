#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "moejet/core/fs.h"

namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  const auto bytes = moejet::read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

void write(const std::string& path, const std::string& text) {
  moejet::write_atomic(path, [&](std::ostream& out) { out << text; });
}

fs::path fresh_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / (name + "." + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ino_t inode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST(Fs, LinkAtomicGivesTheBytesAnotherNameAndEitherIsReplacedAlone) {
  const auto dir = fresh_dir("moejet_link_atomic");
  const std::string best = (dir / "best.safetensors").string(), last = (dir / "last.safetensors").string();
  write(best, "weights of step 10");
  write(last, "weights of step 5");
  moejet::link_atomic(best, last);
  EXPECT_EQ(read_all(last), "weights of step 10");
  EXPECT_EQ(inode(last), inode(best));  // no bytes written
  write(best, "weights of step 20");    // a later best replaces its own name only
  EXPECT_EQ(read_all(last), "weights of step 10");
  EXPECT_EQ(read_all(best), "weights of step 20");
  write(last, "weights of step 30");
  EXPECT_EQ(read_all(best), "weights of step 20");
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
  }
  fs::remove_all(dir);
}

TEST(Fs, LinkAtomicFromAMissingFileIsAnErrorNamingItAndLeavesTheTargetAlone) {
  const auto dir = fresh_dir("moejet_link_missing");
  const std::string last = (dir / "last.safetensors").string();
  write(last, "kept");
  try {
    moejet::link_atomic((dir / "nothing").string(), last);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("nothing"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_all(last), "kept");
  fs::remove_all(dir);
}

}  // namespace
