// Helpers for tests that drive the project's binaries (bpnas, bpnas-server, bpnas-worker) as
// processes: where the binaries are, reading their files, parsing their --json output.
#ifndef BPNAS_TESTS_BINARY_TEST_UTIL_H_
#define BPNAS_TESTS_BINARY_TEST_UTIL_H_

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_split.h"
#include "common/subprocess.h"
#include "google/protobuf/util/json_util.h"

namespace bpnas {

// The path of binary `name` in BPNAS_BIN_DIR (set by ctest), else in the working directory.
inline std::string Bin(const std::string& name) {
  const char* dir = std::getenv("BPNAS_BIN_DIR");
  return std::string(dir ? dir : ".") + "/" + name;
}

// Bin(name) followed by `args` split at spaces (no quoting: the tests' paths and values have no
// spaces), as the argv of a child process.
inline std::vector<std::string> BinArgv(const std::string& name, const std::string& args) {
  std::vector<std::string> argv = {Bin(name)};
  for (absl::string_view a : absl::StrSplit(args, ' ', absl::SkipEmpty())) argv.emplace_back(a);
  return argv;
}

// Starts a long-running binary with its stdout and stderr appended to `log`. A failure to start it
// fails the test and returns null.
inline std::unique_ptr<Subprocess> StartBin(const std::vector<std::string>& argv, const std::string& log) {
  SubprocessOptions options;
  options.stdout_to = SubprocessOptions::Output::kFile;
  options.stdout_file = log;
  options.stderr_to = SubprocessOptions::Output::kStdout;
  absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(argv, options);
  EXPECT_TRUE(started.ok()) << started.status();
  return started.ok() ? std::move(*started) : nullptr;
}

// What a finished run of a binary printed (stdout and stderr together) and its exit code (-1 with
// the reason in `output` when it could not run).
struct CliRun {
  int exit_code = -1;
  std::string output;
};

// Runs `argv` to completion with `env` added to the environment.
inline CliRun RunBin(const std::vector<std::string>& argv,
                     std::vector<std::pair<std::string, std::string>> env = {},
                     absl::Duration timeout = absl::Seconds(120)) {
  SubprocessOptions options;
  options.stdout_to = SubprocessOptions::Output::kCapture;
  options.stderr_to = SubprocessOptions::Output::kStdout;
  options.env = std::move(env);
  CliRun r;
  absl::StatusOr<SubprocessResult> run = RunSubprocess(argv, options, timeout);
  if (!run.ok()) {
    r.output = run.status().ToString();
    return r;
  }
  r.exit_code = run->exit_code;
  r.output = std::move(run->stdout_text);
  return r;
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
