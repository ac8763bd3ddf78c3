// `bpnas up`: one machine, no setup (DESIGN.md §5). Starts a private PostgreSQL cluster under the
// state folder (unless --db is given), the coordinator and N local workers as child processes,
// prints where each listens, and stops them all in order on Ctrl-C (workers, coordinator,
// database). Run again with the same --state, it reuses the database: earlier jobs are still there.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_util.h"
#include "cli/client_commands.h"
#include "common/http_server.h"
#include "common/pg_cluster.h"
#include "common/status.h"
#include "common/subprocess.h"

namespace bpnas {
namespace {

namespace fs = std::filesystem;

volatile sig_atomic_t g_up_stop = 0;
void OnUpSignal(int) { g_up_stop = 1; }

struct Child {
  std::string what;
  std::string log;
  std::unique_ptr<Subprocess> process;  // null once it has been stopped or seen to exit
};

std::string SelfDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

// Starts `argv` with stdout/stderr appended to `log`, in its own process group (a terminal's
// Ctrl-C reaches only `bpnas up`, which then stops the children in order).
absl::StatusOr<Child> Spawn(const std::string& what, const std::vector<std::string>& argv,
                            const std::string& log) {
  if (access(argv[0].c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": ", argv[0], " is not there or not executable (build it first)"));
  }
  SubprocessOptions options;
  options.stdout_to = SubprocessOptions::Output::kFile;
  options.stdout_file = log;
  options.stderr_to = SubprocessOptions::Output::kStdout;
  options.new_process_group = true;
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(argv, options);
  if (!process.ok())
    return absl::Status(process.status().code(), absl::StrCat(what, ": ", process.status().message()));
  return Child{what, log, std::move(*process)};
}

std::string Tail(const std::string& path, int lines) {
  std::ifstream f(path);
  std::vector<std::string> all;
  for (std::string l; std::getline(f, l);) all.push_back(l);
  std::string out;
  for (size_t i = all.size() > size_t(lines) ? all.size() - lines : 0; i < all.size(); ++i)
    out += "    " + all[i] + "\n";
  return out;
}

// SIGTERM, then SIGKILL after `seconds`.
void StopChild(Child& c, int seconds) {
  if (c.process == nullptr) return;
  c.process->Terminate(absl::Seconds(seconds));
  c.process.reset();
}

// True (once) when the child has exited on its own.
bool Exited(Child& c) {
  if (c.process == nullptr || !c.process->Poll().has_value()) return false;
  c.process.reset();
  return true;
}

int PortOf(const std::string& address) {
  const auto colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) return -1;
  return port;
}

}  // namespace

int CmdUp(int argc, char** argv) {
  auto args =
      ParseArgs(argc, argv, 2, {"workers", "state", "db", "listen", "http", "threads", "pg-port"}, {});
  if (!args.ok()) return Fail(args.status());
  if (!args->positional.empty()) return Fail(absl::InvalidArgumentError("up: takes no positional arguments"));
  int workers = 1, threads = 0, pg_port = 0;
  if (args->options.count("workers") &&
      (!absl::SimpleAtoi(args->options["workers"], &workers) || workers < 0 || workers > 64)) {
    return Fail(absl::InvalidArgumentError("--workers: an integer in [0, 64]"));
  }
  if (args->options.count("threads") &&
      (!absl::SimpleAtoi(args->options["threads"], &threads) || threads < 0)) {
    return Fail(absl::InvalidArgumentError(
        "--threads: a non-negative integer (threads per worker; 0: cores / workers)"));
  }
  if (args->options.count("pg-port") &&
      (!absl::SimpleAtoi(args->options["pg-port"], &pg_port) || pg_port < 0 || pg_port > 65535)) {
    return Fail(absl::InvalidArgumentError("--pg-port: a TCP port"));
  }
  const std::string state = args->options.count("state") ? args->options["state"] : "bpnas-state";
  const std::string listen = args->options.count("listen") ? args->options["listen"] : "127.0.0.1:50051";
  const std::string http = args->options.count("http") ? args->options["http"] : "127.0.0.1:9464";
  const int http_port = PortOf(http);
  if (PortOf(listen) <= 0) return Fail(absl::InvalidArgumentError("--listen: HOST:PORT with a port > 0"));
  if (http_port <= 0) return Fail(absl::InvalidArgumentError("--http: HOST:PORT with a port > 0"));
  if (threads == 0) threads = std::max(1, int(std::thread::hardware_concurrency()) / std::max(1, workers));

  std::error_code ec;
  fs::create_directories(fs::path(state) / "logs", ec);
  if (ec) return Fail(absl::InvalidArgumentError(absl::StrCat("--state ", state, ": ", ec.message())));
  const std::string state_abs = fs::absolute(state).string();
  const std::string logs = state_abs + "/logs";

  std::signal(SIGINT, OnUpSignal);
  std::signal(SIGTERM, OnUpSignal);

  // 1. The database.
  std::unique_ptr<LocalPostgres> pg;
  std::string dsn = args->options.count("db") ? args->options["db"] : "";
  if (dsn.empty()) {
    // The port is remembered in the state folder so a restart finds the same cluster address.
    const std::string port_file = state_abs + "/postgres.port";
    if (pg_port == 0) {
      std::ifstream pf(port_file);
      if (!(pf >> pg_port)) pg_port = PickFreePort();
    }
    auto started = LocalPostgres::Start(state_abs + "/postgres", pg_port, /*durable=*/true);
    if (!started.ok()) return Fail(started.status());
    pg = std::move(*started);
    std::ofstream(port_file) << pg_port << "\n";
    dsn = pg->dsn();
  }

  // 2. The coordinator, then the workers once it is ready.
  const std::string bin = SelfDir();
  std::vector<Child> children;
  auto stop_all = [&] {
    for (auto it = children.rbegin(); it != children.rend(); ++it) StopChild(*it, 10);
    if (pg) (void)pg->Stop();
  };
  auto server = Spawn("coordinator", {bin + "/bpnas-server", "--listen", listen, "--db", dsn, "--http", http},
                      logs + "/server.log");
  if (!server.ok()) {
    stop_all();
    return Fail(server.status());
  }
  children.push_back(std::move(*server));
  bool ready = false;
  for (int i = 0; i < 600 && !g_up_stop; ++i) {
    auto r = HttpGet("127.0.0.1", http_port, "/readyz", 1000);
    if (r.ok()) {
      ready = true;
      break;
    }
    if (Exited(children[0])) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!ready) {
    std::fprintf(stderr, "bpnas: the coordinator did not become ready; last lines of %s/server.log:\n%s",
                 logs.c_str(), Tail(logs + "/server.log", 15).c_str());
    stop_all();
    return 1;
  }
  for (int i = 0; i < workers; ++i) {
    auto w = Spawn(absl::StrCat("worker ", i),
                   {bin + "/bpnas-worker", "--server", listen, "--threads", absl::StrCat(threads), "--name",
                    absl::StrCat("local-", i), "--http", absl::StrCat("127.0.0.1:", http_port + 1 + i)},
                   absl::StrCat(logs, "/worker-", i, ".log"));
    if (!w.ok()) {
      stop_all();
      return Fail(w.status());
    }
    children.push_back(std::move(*w));
  }

  std::printf("bpnas up: coordinator on %s (gRPC), http://%s/metrics\n", listen.c_str(), http.c_str());
  std::printf("  database: %s\n",
              pg ? absl::StrCat("private PostgreSQL in ", state_abs, "/postgres (port ", pg_port, ")").c_str()
                 : "--db (external)");
  for (int i = 0; i < workers; ++i) {
    std::printf("  worker %d: %d threads, metrics on 127.0.0.1:%d\n", i, threads, http_port + 1 + i);
  }
  std::printf("  logs: %s\n  submit with: bpnas submit SPEC.json --server %s   (Ctrl-C stops everything)\n",
              logs.c_str(), listen.c_str());
  std::fflush(stdout);

  // 3. Wait for Ctrl-C; a child that dies takes everything down with a pointer to its log.
  int rc = 0;
  while (!g_up_stop) {
    for (auto& c : children) {
      if (Exited(c)) {
        std::fprintf(stderr, "bpnas: %s exited unexpectedly; last lines of %s:\n%s", c.what.c_str(),
                     c.log.c_str(), Tail(c.log, 15).c_str());
        g_up_stop = 1;
        rc = 1;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::printf("bpnas up: stopping\n");
  std::fflush(stdout);
  stop_all();
  return rc;
}

}  // namespace bpnas
