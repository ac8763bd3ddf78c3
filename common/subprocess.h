// Child processes: start a program, collect what it prints, wait for it with a timeout, stop it.
//
//   // Run to completion and capture (stdout and stderr together):
//   SubprocessOptions o;
//   o.stderr_to = SubprocessOptions::Output::kStdout;
//   BPNAS_ASSIGN_OR_RETURN(SubprocessResult r,
//                          RunSubprocess({"pgbench", "-n", dsn}, o, absl::Minutes(5)));
//   if (r.exit_code != 0) return absl::InternalError(r.stdout_text);
//
//   // A long-running child with its output appended to a log file:
//   SubprocessOptions o;
//   o.stdout_to = SubprocessOptions::Output::kFile;
//   o.stdout_file = "server.log";
//   o.stderr_to = SubprocessOptions::Output::kStdout;
//   BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<Subprocess> server,
//                          Subprocess::Start({bin + "/bpnas-server", "--listen", address}, o));
//   ...
//   server->Terminate(absl::Seconds(10));  // SIGTERM, then SIGKILL after 10 s
//
// The child gets the parent's environment plus `env`, stdin from `stdin_file` (/dev/null by
// default) and no other open file of the parent's (every descriptor above stderr is closed before
// the program starts, so nothing of ours leaks into daemons it leaves behind).
//
// Exit codes: the program's exit status, or 128 + N when signal N ended it (as shells report it).
#ifndef BPNAS_COMMON_SUBPROCESS_H_
#define BPNAS_COMMON_SUBPROCESS_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bpnas {

struct SubprocessOptions {
  enum class Output {
    kInherit,  // the parent's stream
    kDiscard,  // /dev/null
    kCapture,  // collected while waiting: Subprocess::stdout_text() / stderr_text()
    kFile,     // appended to stdout_file / stderr_file (created with mode 0644 if missing)
    kStdout,   // stderr only: wherever stdout goes (one interleaved stream)
  };

  // Added to the parent's environment; a name already set there takes the value given here.
  std::vector<std::pair<std::string, std::string>> env;
  // Where the program runs; empty: the parent's working directory.
  std::string working_dir;
  // Read as the child's stdin; empty: /dev/null.
  std::string stdin_file;
  Output stdout_to = Output::kInherit;
  std::string stdout_file;
  Output stderr_to = Output::kInherit;
  std::string stderr_file;
  // Puts the child in a process group of its own, so a terminal's Ctrl-C (sent to the foreground
  // group) reaches only the parent, which then stops its children in the order it chooses.
  bool new_process_group = false;
};

// One child process. Not thread-safe: one owner starts, waits for and stops it.
class Subprocess {
 public:
  // Starts `argv` (argv[0] a path, or a bare name looked up in PATH). Errors: INVALID_ARGUMENT for
  // an empty argv or a kFile output without a file name; FAILED_PRECONDITION, naming the program
  // and the system's reason, when the program is missing or cannot be executed, the working
  // directory cannot be entered or an output or input file cannot be opened; INTERNAL when the
  // system refuses a process or pipe.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const SubprocessOptions& options = {});

  // A child still running is killed (SIGKILL) and reaped: stop it first to let it clean up.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // Waits up to `timeout` for the child to exit, collecting captured output meanwhile, and returns
  // its exit code (at once if it had already been reaped). DEADLINE_EXCEEDED if it is still
  // running then; it is left running and Wait may be called again. Zero: only looks.
  absl::StatusOr<int> Wait(absl::Duration timeout = absl::InfiniteDuration());
  // The exit code if the child has exited, without waiting.
  std::optional<int> Poll();

  // Sends `signal` to the child (not to its own children); nothing once it has been reaped.
  void Signal(int signal);
  // SIGTERM, up to `grace` for the child to exit, then SIGKILL. Returns the exit code.
  int Terminate(absl::Duration grace);
  // SIGKILL and reap. Returns the exit code.
  int Kill();

  // What the child has written so far to a captured stream (complete once Wait returned a code).
  const std::string& stdout_text() const { return stdout_text_; }
  const std::string& stderr_text() const { return stderr_text_; }

 private:
  Subprocess() = default;
  // Reads whatever the capture pipes hold, waiting at most `wait_ms` for something to arrive.
  void ReadCaptured(int wait_ms);

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  int stdout_fd_ = -1;  // read ends of the capture pipes, -1 when not capturing or at end of file
  int stderr_fd_ = -1;
  std::string stdout_text_;
  std::string stderr_text_;
};

struct SubprocessResult {
  int exit_code = -1;
  std::string stdout_text;  // when captured
  std::string stderr_text;  // when captured
};

// Starts `argv`, waits up to `timeout` and returns its exit code and captured output. A child still
// running at the timeout is killed, and the answer is DEADLINE_EXCEEDED naming the program, with
// what it had printed. Start's errors otherwise.
absl::StatusOr<SubprocessResult> RunSubprocess(const std::vector<std::string>& argv,
                                               const SubprocessOptions& options = {},
                                               absl::Duration timeout = absl::InfiniteDuration());

}  // namespace bpnas

#endif  // BPNAS_COMMON_SUBPROCESS_H_
