#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace bpnas {
namespace {

using Output = SubprocessOptions::Output;

// What a child that could not start reports to its parent over a close-on-exec pipe.
enum ChildStage : int { kEnterDirectory = 1, kRedirect = 2, kExec = 3 };
struct ChildFailure {
  int stage;
  int error;
};

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 255;
}

// Closes the descriptors it holds when it goes out of scope (the parent's copies of what only the
// child needs).
class FdList {
 public:
  ~FdList() {
    for (int fd : fds_) close(fd);
  }
  int Add(int fd) {
    if (fd >= 0) fds_.push_back(fd);
    return fd;
  }

 private:
  std::vector<int> fds_;
};

// An executable regular file?
bool IsExecutable(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

// argv[0] as a path: itself when it names a path, else the first executable of that name in PATH
// (the child's PATH when `env` sets one).
absl::StatusOr<std::string> ResolveProgram(const std::string& name, const SubprocessOptions& options) {
  if (name.find('/') != std::string::npos) return name;
  std::string path_list;
  const char* parent_path = std::getenv("PATH");
  if (parent_path != nullptr) path_list = parent_path;
  for (const auto& [key, value] : options.env) {
    if (key == "PATH") path_list = value;
  }
  if (path_list.empty()) path_list = "/usr/local/bin:/usr/bin:/bin";
  for (absl::string_view dir : absl::StrSplit(path_list, ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (IsExecutable(candidate)) return candidate;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("cannot run ", name, ": no such program in PATH (", path_list, ")"));
}

// "NAME=value" for the parent's environment with `additions` applied.
std::vector<std::string> ChildEnvironment(const std::vector<std::pair<std::string, std::string>>& additions) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const absl::string_view name = entry.substr(0, entry.find('='));
    const bool replaced =
        std::any_of(additions.begin(), additions.end(), [&](const auto& a) { return a.first == name; });
    if (!replaced) env.emplace_back(entry);
  }
  for (const auto& [name, value] : additions) env.push_back(absl::StrCat(name, "=", value));
  return env;
}

// Opens `path` for the child (close-on-exec in the parent; the child's dup2 clears that).
absl::StatusOr<int> OpenForChild(const std::string& path, bool write, const std::string& what) {
  const int fd = write ? open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)
                       : open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", path, " as the ", what, " of a child process: ", std::strerror(errno)));
  }
  return fd;
}

// In the child, between fork and exec: only async-signal-safe calls from here on.
// Makes `fd` the child's descriptor `target`.
bool RedirectInChild(int fd, int target) {
  if (fd < 0) return true;                              // inherit
  if (fd == target) return fcntl(fd, F_SETFD, 0) == 0;  // dup2 would keep close-on-exec
  return dup2(fd, target) == target;
}

void CloseRangeInChild(unsigned first, unsigned last, long max_fd) {
  if (first > last) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, first, last, 0u) == 0) return;
#endif
  for (long fd = first; fd <= static_cast<long>(last) && fd < max_fd; ++fd) close(static_cast<int>(fd));
}

[[noreturn]] void FailInChild(int report_fd, ChildStage stage) {
  const ChildFailure failure{stage, errno};
  ssize_t unused = write(report_fd, &failure, sizeof(failure));
  (void)unused;
  _exit(127);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                              const SubprocessOptions& options) {
  if (argv.empty() || argv[0].empty()) {
    return absl::InvalidArgumentError("a child process needs a program to run (argv is empty)");
  }
  if ((options.stdout_to == Output::kFile && options.stdout_file.empty()) ||
      (options.stderr_to == Output::kFile && options.stderr_file.empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("running ", argv[0], ": an output to a file needs a file name"));
  }
  if (options.stdout_to == Output::kStdout) {
    return absl::InvalidArgumentError(absl::StrCat("running ", argv[0], ": stdout cannot go to stdout"));
  }
  absl::StatusOr<std::string> program = ResolveProgram(argv[0], options);
  if (!program.ok()) return program.status();

  // Everything the child needs is prepared before fork(): after it, only async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::vector<std::string> env_strings = ChildEnvironment(options.env);
  std::vector<char*> envp;
  for (const std::string& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  long max_fd = sysconf(_SC_OPEN_MAX);
  if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
  sigset_t no_signals_blocked;
  sigemptyset(&no_signals_blocked);

  FdList parent_closes;  // the child's ends, closed in the parent once the child has them
  std::unique_ptr<Subprocess> child(new Subprocess());

  // stdin.
  absl::StatusOr<int> in = OpenForChild(options.stdin_file.empty() ? "/dev/null" : options.stdin_file,
                                        /*write=*/false, "stdin");
  if (!in.ok()) return in.status();
  const int child_stdin = parent_closes.Add(*in);

  // stdout and stderr: -1 inherits.
  auto output_fd = [&](Output to, const std::string& file, const char* what,
                       int* read_end) -> absl::StatusOr<int> {
    switch (to) {
      case Output::kInherit:
      case Output::kStdout:
        return -1;
      case Output::kDiscard:
        return OpenForChild("/dev/null", /*write=*/true, what);
      case Output::kFile:
        return OpenForChild(file, /*write=*/true, what);
      case Output::kCapture: {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
          return absl::InternalError(absl::StrCat("pipe for a child's ", what, ": ", std::strerror(errno)));
        }
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
        *read_end = fds[0];
        return fds[1];
      }
    }
    return -1;
  };
  absl::StatusOr<int> out = output_fd(options.stdout_to, options.stdout_file, "stdout", &child->stdout_fd_);
  if (!out.ok()) return out.status();
  const int child_stdout = parent_closes.Add(*out);
  absl::StatusOr<int> err = output_fd(options.stderr_to, options.stderr_file, "stderr", &child->stderr_fd_);
  if (!err.ok()) return err.status();
  const int child_stderr = parent_closes.Add(*err);
  const bool stderr_to_stdout = options.stderr_to == Output::kStdout;

  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  FdList report_read;
  report_read.Add(report[0]);
  const int report_fd = report[1];
  const char* dir = options.working_dir.empty() ? nullptr : options.working_dir.c_str();
  const bool new_group = options.new_process_group;

  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close(report_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(error)));
  }
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &no_signals_blocked, nullptr);
    if (new_group) setpgid(0, 0);
    if (!RedirectInChild(child_stdin, 0) || !RedirectInChild(child_stdout, 1) ||
        !RedirectInChild(child_stderr, 2) || (stderr_to_stdout && dup2(1, 2) != 2)) {
      FailInChild(report_fd, kRedirect);
    }
    if (dir != nullptr && chdir(dir) != 0) FailInChild(report_fd, kEnterDirectory);
    // Nothing else of ours may leak into the program (or into daemons it leaves running).
    CloseRangeInChild(3, static_cast<unsigned>(report_fd) - 1, max_fd);
    CloseRangeInChild(static_cast<unsigned>(report_fd) + 1, ~0u, max_fd);
    execve(program->c_str(), args.data(), envp.data());
    FailInChild(report_fd, kExec);
  }
  child->pid_ = pid;
  if (new_group) setpgid(pid, pid);  // also here, so the group exists once Start returns
  close(report_fd);                  // the parent's copy: end of file below once the program runs

  // End of file: the exec succeeded. A report: the child failed before it and has exited.
  ChildFailure failure{0, 0};
  ssize_t n;
  do {
    n = read(report[0], &failure, sizeof(failure));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(failure))) {
    (void)child->Wait();
    const std::string reason = std::strerror(failure.error);
    switch (failure.stage) {
      case kEnterDirectory:
        return absl::FailedPreconditionError(
            absl::StrCat("cannot run ", argv[0], " in ", options.working_dir, ": ", reason));
      case kRedirect:
        return absl::InternalError(absl::StrCat("cannot redirect the output of ", argv[0], ": ", reason));
      default:
        return absl::FailedPreconditionError(absl::StrCat("cannot run ", *program, ": ", reason));
    }
  }
  return child;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !exit_code_.has_value()) Kill();
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (stderr_fd_ >= 0) close(stderr_fd_);
}

void Subprocess::ReadCaptured(int wait_ms) {
  pollfd fds[2];
  std::string* texts[2];
  int* owners[2];
  int n = 0;
  for (auto [fd, text] :
       {std::make_pair(&stdout_fd_, &stdout_text_), std::make_pair(&stderr_fd_, &stderr_text_)}) {
    if (*fd < 0) continue;
    fds[n] = pollfd{*fd, POLLIN, 0};
    texts[n] = text;
    owners[n] = fd;
    ++n;
  }
  if (n == 0) return;
  if (poll(fds, n, wait_ms) <= 0) return;
  char buffer[16384];
  for (int i = 0; i < n; ++i) {
    if (fds[i].revents == 0) continue;
    for (;;) {
      const ssize_t got = read(*owners[i], buffer, sizeof(buffer));
      if (got > 0) {
        texts[i]->append(buffer, static_cast<size_t>(got));
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      close(*owners[i]);  // end of file (or an error: nothing more will come)
      *owners[i] = -1;
      break;
    }
  }
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (exit_code_.has_value()) return *exit_code_;
  const bool forever = timeout == absl::InfiniteDuration();
  const absl::Time deadline = forever ? absl::InfiniteFuture() : absl::Now() + timeout;
  int tick_ms = 1;  // short children are noticed quickly, long ones polled every 50 ms
  for (;;) {
    const bool capturing = stdout_fd_ >= 0 || stderr_fd_ >= 0;
    int status = 0;
    const pid_t got = waitpid(pid_, &status, forever && !capturing ? 0 : WNOHANG);
    if (got == pid_) {
      ReadCaptured(0);  // what it wrote before exiting (a daemon it left may keep the pipe open)
      exit_code_ = ExitCodeOf(status);
      if (stdout_fd_ >= 0) close(stdout_fd_);
      if (stderr_fd_ >= 0) close(stderr_fd_);
      stdout_fd_ = stderr_fd_ = -1;
      return *exit_code_;
    }
    if (got < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("waiting for process ", pid_, ": ", std::strerror(errno)));
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      ReadCaptured(0);
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " still running after ", absl::FormatDuration(timeout)));
    }
    const int wait_ms = static_cast<int>(std::min<int64_t>(tick_ms, absl::ToInt64Milliseconds(left) + 1));
    if (capturing) {
      ReadCaptured(wait_ms);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    }
    tick_ms = std::min(50, tick_ms * 2);
  }
}

std::optional<int> Subprocess::Poll() {
  absl::StatusOr<int> code = Wait(absl::ZeroDuration());
  if (!code.ok()) return std::nullopt;
  return *code;
}

void Subprocess::Signal(int signal) {
  if (pid_ <= 0 || exit_code_.has_value()) return;
  kill(pid_, signal);
}

int Subprocess::Terminate(absl::Duration grace) {
  Signal(SIGTERM);
  absl::StatusOr<int> code = Wait(grace);
  if (code.ok()) return *code;
  return Kill();
}

int Subprocess::Kill() {
  Signal(SIGKILL);
  absl::StatusOr<int> code = Wait();
  return code.ok() ? *code : -1;
}

absl::StatusOr<SubprocessResult> RunSubprocess(const std::vector<std::string>& argv,
                                               const SubprocessOptions& options, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Subprocess>> child = Subprocess::Start(argv, options);
  if (!child.ok()) return child.status();
  absl::StatusOr<int> code = (*child)->Wait(timeout);
  if (!code.ok()) {
    (*child)->Kill();
    std::string printed = (*child)->stdout_text();
    if (!(*child)->stderr_text().empty())
      absl::StrAppend(&printed, printed.empty() ? "" : "\n", (*child)->stderr_text());
    return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish within ",
                                                    absl::FormatDuration(timeout), " and was killed",
                                                    printed.empty() ? "" : "; it printed:\n", printed));
  }
  SubprocessResult result;
  result.exit_code = *code;
  result.stdout_text = (*child)->stdout_text();
  result.stderr_text = (*child)->stderr_text();
  return result;
}

}  // namespace bpnas
