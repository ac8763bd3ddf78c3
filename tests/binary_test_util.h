// Helpers for tests that drive the project's binaries (bpnas, bpnas-server, bpnas-worker) as
// processes: where the binaries are, reading their files, parsing their --json output.
#ifndef BPNAS_TESTS_BINARY_TEST_UTIL_H_
#define BPNAS_TESTS_BINARY_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "google/protobuf/util/json_util.h"

namespace bpnas {

// The path of binary `name` in BPNAS_BIN_DIR (set by ctest), else in the working directory.
inline std::string Bin(const std::string& name) {
  const char* dir = std::getenv("BPNAS_BIN_DIR");
  return std::string(dir ? dir : ".") + "/" + name;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A message from the proto3 JSON a command printed (unknown fields ignored); a parse failure fails
// the test and shows the text.
template <typename M>
M ParseJson(const std::string& text) {
  M m;
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(text, &m, o);
  EXPECT_TRUE(st.ok()) << st.message() << "\n" << text;
  return m;
}

}  // namespace bpnas

#endif  // BPNAS_TESTS_BINARY_TEST_UTIL_H_
