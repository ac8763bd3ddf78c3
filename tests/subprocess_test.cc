#include "common/subprocess.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>

#include <gtest/gtest.h>

#include "absl/time/clock.h"

namespace bpnas {
namespace {

using Output = SubprocessOptions::Output;

SubprocessOptions Capture() {
  SubprocessOptions o;
  o.stdout_to = Output::kCapture;
  o.stderr_to = Output::kCapture;
  return o;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(Subprocess, ReturnsTheExitStatus) {
  for (int code : {0, 1, 3, 42}) {
    auto r = RunSubprocess({"/bin/sh", "-c", "exit " + std::to_string(code)});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, code);
  }
}

TEST(Subprocess, ReportsDeathBySignalAs128PlusSignal) {
  auto r = RunSubprocess({"/bin/sh", "-c", "kill -TERM $$"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 128 + SIGTERM);
}

TEST(Subprocess, CapturesStdoutAndStderrSeparately) {
  auto r = RunSubprocess({"/bin/sh", "-c", "echo out; echo err >&2; echo more"}, Capture());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "out\nmore\n");
  EXPECT_EQ(r->stderr_text, "err\n");
}

TEST(Subprocess, StderrCanJoinStdout) {
  SubprocessOptions o;
  o.stdout_to = Output::kCapture;
  o.stderr_to = Output::kStdout;
  auto r = RunSubprocess({"/bin/sh", "-c", "echo out; echo err >&2"}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "out\nerr\n");
  EXPECT_EQ(r->stderr_text, "");
}

TEST(Subprocess, CapturesMoreThanAPipeHolds) {
  // 1 MiB: the child blocks on a full pipe unless the parent reads while it waits.
  auto r = RunSubprocess({"/bin/sh", "-c", "head -c 1048576 /dev/zero"}, Capture(), absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text.size(), 1048576u);
}

TEST(Subprocess, AppendsOutputToAFile) {
  const std::string log = ::testing::TempDir() + "/subprocess_append.log";
  std::ofstream(log) << "before\n";
  SubprocessOptions o;
  o.stdout_to = Output::kFile;
  o.stdout_file = log;
  o.stderr_to = Output::kStdout;
  auto r = RunSubprocess({"/bin/sh", "-c", "echo out; echo err >&2"}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadAll(log), "before\nout\nerr\n");
}

TEST(Subprocess, ReadsStdinFromAFileAndRunsInTheWorkingDirectory) {
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "/subprocess_stdin.txt") << "hello\n";
  SubprocessOptions o = Capture();
  o.stdin_file = dir + "/subprocess_stdin.txt";
  o.working_dir = "/";
  auto r = RunSubprocess({"/bin/sh", "-c", "cat; pwd"}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "hello\n/\n");
}

TEST(Subprocess, StdinIsEmptyByDefault) {
  auto r = RunSubprocess({"/bin/sh", "-c", "cat"}, Capture(), absl::Seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "");
}

TEST(Subprocess, PassesAddedEnvironmentAndKeepsTheParents) {
  setenv("BPNAS_SUBPROCESS_TEST_KEPT", "kept", 1);
  setenv("BPNAS_SUBPROCESS_TEST_REPLACED", "old", 1);
  SubprocessOptions o = Capture();
  o.env = {{"BPNAS_SUBPROCESS_TEST_ADDED", "a b=c"}, {"BPNAS_SUBPROCESS_TEST_REPLACED", "new"}};
  auto r =
      RunSubprocess({"/bin/sh", "-c",
                     "echo \"$BPNAS_SUBPROCESS_TEST_ADDED|$BPNAS_SUBPROCESS_TEST_KEPT|"
                     "$BPNAS_SUBPROCESS_TEST_REPLACED\"; env | grep -c '^BPNAS_SUBPROCESS_TEST_REPLACED='"},
                    o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "a b=c|kept|new\n1\n");
}

TEST(Subprocess, LooksUpABareNameInPath) {
  auto r = RunSubprocess({"sh", "-c", "echo found"}, Capture());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "found\n");
}

TEST(Subprocess, MissingProgramIsAClearError) {
  auto by_path = Subprocess::Start({"/nonexistent/bpnas-no-such-program", "--flag"});
  ASSERT_FALSE(by_path.ok());
  EXPECT_EQ(by_path.status().code(), absl::StatusCode::kFailedPrecondition) << by_path.status();
  EXPECT_NE(by_path.status().message().find("/nonexistent/bpnas-no-such-program"), absl::string_view::npos)
      << by_path.status();
  EXPECT_NE(by_path.status().message().find("No such file"), absl::string_view::npos) << by_path.status();

  auto by_name = Subprocess::Start({"bpnas-no-such-program"});
  ASSERT_FALSE(by_name.ok());
  EXPECT_EQ(by_name.status().code(), absl::StatusCode::kFailedPrecondition) << by_name.status();
  EXPECT_NE(by_name.status().message().find("bpnas-no-such-program"), absl::string_view::npos);
}

TEST(Subprocess, MissingWorkingDirectoryIsAClearError) {
  SubprocessOptions o;
  o.working_dir = "/nonexistent/dir";
  auto r = Subprocess::Start({"/bin/true"}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("/nonexistent/dir"), absl::string_view::npos) << r.status();
}

TEST(Subprocess, EmptyArgvIsInvalid) {
  EXPECT_EQ(Subprocess::Start({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Subprocess, WaitTimesOutThenKillEndsTheChild) {
  auto child = Subprocess::Start({"/bin/sleep", "30"});
  ASSERT_TRUE(child.ok()) << child.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<int> waited = (*child)->Wait(absl::Milliseconds(100));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded) << waited.status();
  EXPECT_FALSE((*child)->Poll().has_value());
  EXPECT_EQ((*child)->Kill(), 128 + SIGKILL);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ((*child)->Poll(), 128 + SIGKILL);
  EXPECT_EQ(kill((*child)->pid(), 0), -1) << "the child must be reaped";
}

TEST(Subprocess, RunKillsAChildPastItsTimeout) {
  const absl::Time start = absl::Now();
  auto r =
      RunSubprocess({"/bin/sh", "-c", "echo started; exec sleep 30"}, Capture(), absl::Milliseconds(300));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_NE(r.status().message().find("started"), absl::string_view::npos) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(Subprocess, TerminateLetsTheChildHandleSigterm) {
  SubprocessOptions o = Capture();
  auto child = Subprocess::Start(
      {"/bin/sh", "-c", "trap 'echo bye; exit 7' TERM; echo ready; while :; do sleep 0.05; done"}, o);
  ASSERT_TRUE(child.ok()) << child.status();
  while ((*child)->stdout_text().find("ready") == std::string::npos) {
    ASSERT_FALSE((*child)->Wait(absl::Milliseconds(20)).ok()) << "exited early";
  }
  EXPECT_EQ((*child)->Terminate(absl::Seconds(10)), 7);
  EXPECT_NE((*child)->stdout_text().find("bye"), std::string::npos) << (*child)->stdout_text();
}

TEST(Subprocess, TerminateKillsAChildThatIgnoresSigterm) {
  auto child = Subprocess::Start({"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"},
                                 Capture());
  ASSERT_TRUE(child.ok()) << child.status();
  while ((*child)->stdout_text().find("ready") == std::string::npos) {
    ASSERT_FALSE((*child)->Wait(absl::Milliseconds(20)).ok()) << "exited early";
  }
  EXPECT_EQ((*child)->Terminate(absl::Milliseconds(200)), 128 + SIGKILL);
}

TEST(Subprocess, DestructorKillsAndReapsARunningChild) {
  pid_t pid = -1;
  {
    auto child = Subprocess::Start({"/bin/sleep", "30"});
    ASSERT_TRUE(child.ok()) << child.status();
    pid = (*child)->pid();
  }
  EXPECT_EQ(kill(pid, 0), -1);
}

TEST(Subprocess, ChildGetsNoOtherDescriptorOfTheParent) {
  const int fd = dup(1);  // not close-on-exec
  ASSERT_GE(fd, 3);
  auto r = RunSubprocess({"/bin/sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"}, Capture());
  close(fd);
  ASSERT_TRUE(r.ok()) << r.status();
  // 0, 1, 2 and the descriptor ls opens to read the folder.
  EXPECT_EQ(r->stdout_text, "0 1 2 3 ") << "descriptor " << fd << " leaked";
}

}  // namespace
}  // namespace bpnas
