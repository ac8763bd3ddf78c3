#include "common/pg_cluster.h"

#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "common/subprocess.h"

namespace bpnas {
namespace {

namespace fs = std::filesystem;

constexpr char kDatabase[] = "bpnas";
constexpr char kConfFile[] = "bpnas.conf";
constexpr char kIncludeLine[] = "include_if_exists = 'bpnas.conf'";

// Runs argv[0] (an absolute path) with argv, in `cwd`, and collects what it writes to stdout and
// stderr. Returns the exit status (128 + signal number when killed), or the error that kept it
// from starting.
absl::StatusOr<int> RunCommand(const std::vector<std::string>& argv, const std::string& cwd,
                               std::string* output) {
  SubprocessOptions options;
  options.working_dir = cwd;
  options.stdout_to = SubprocessOptions::Output::kCapture;
  options.stderr_to = SubprocessOptions::Output::kStdout;
  absl::StatusOr<SubprocessResult> result = RunSubprocess(argv, options);
  if (!result.ok()) return result.status();
  *output = std::move(result->stdout_text);
  return result->exit_code;
}

// The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and psql ("" if none).
// `want_version` non-empty: that version only.
std::string FindBinDir(const std::string& want_version) {
  const fs::path root = "/usr/lib/postgresql";
  std::error_code ec;
  double best_version = -1;
  std::string best;
  for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
    const std::string version = entry.path().filename().string();
    if (!want_version.empty() && version != want_version) continue;
    double number;
    if (!absl::SimpleAtod(version, &number)) continue;
    const fs::path bin = entry.path() / "bin";
    if (!fs::exists(bin / "initdb", ec) || !fs::exists(bin / "pg_ctl", ec) || !fs::exists(bin / "psql", ec)) {
      continue;
    }
    if (number > best_version) {
      best_version = number;
      best = bin.string();
    }
  }
  return best;
}

std::string FindRunuser() {
  for (const char* path : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

// The last `n` lines of a text file (empty if it cannot be read).
std::string TailOfFile(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (lines.size() > n) lines.pop_front();
  }
  return absl::StrJoin(lines, "\n");
}

// A value for postgresql.conf: single-quoted, quotes doubled.
std::string ConfQuote(const std::string& value) {
  return absl::StrCat("'", absl::StrReplaceAll(value, {{"'", "''"}, {"\\", "\\\\"}}), "'");
}

std::string Trimmed(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

}  // namespace

int PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = -1;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::Start(const std::string& dir, int port,
                                                                    bool durable) {
  if (dir.empty()) return absl::InvalidArgumentError("the PostgreSQL folder is empty");
  if (port < 1 || port > 65535) return absl::InvalidArgumentError(absl::StrCat("bad port ", port));
  std::unique_ptr<LocalPostgres> pg(new LocalPostgres());
  pg->port_ = port;
  pg->durable_ = durable;

  std::error_code ec;
  pg->dir_ = fs::absolute(dir, ec).lexically_normal().string();
  if (pg->dir_.size() > 1 && pg->dir_.back() == '/') pg->dir_.pop_back();
  fs::create_directories(pg->dir_, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", pg->dir_, ": ", ec.message()));
  const std::string data = pg->dir_ + "/data";

  // Binaries: those of the version that created an existing cluster, else the newest installed.
  std::string data_version;
  if (std::ifstream version_file(data + "/PG_VERSION"); version_file)
    std::getline(version_file, data_version);
  data_version = Trimmed(data_version);
  pg->bin_dir_ = FindBinDir(data_version);
  if (pg->bin_dir_.empty()) {
    if (!data_version.empty() && !FindBinDir("").empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(data, " holds a PostgreSQL ", data_version, " cluster but PostgreSQL ", data_version,
                       " is not installed (/usr/lib/postgresql/", data_version,
                       "/bin): install it, or move the folder away to start afresh"));
    }
    return absl::FailedPreconditionError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin with initdb, pg_ctl and psql): "
        "install the postgresql package (scripts/bootstrap.sh does)");
  }

  if (geteuid() == 0) {
    // PostgreSQL refuses to run as root: it runs as the postgres system user, which must own the
    // folder and be able to reach it.
    passwd* pw = getpwnam("postgres");
    if (pw == nullptr) {
      return absl::FailedPreconditionError(
          "running as root, but there is no `postgres` system user to run PostgreSQL as (PostgreSQL refuses "
          "root): install the postgresql package, which creates it, or run as an ordinary user");
    }
    pg->run_as_ = "postgres";
    pg->user_ = "postgres";
    const std::string runuser = FindRunuser();
    if (runuser.empty()) {
      return absl::FailedPreconditionError("running as root, but runuser (util-linux) is not installed");
    }
    if (chown(pg->dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0 || chmod(pg->dir_.c_str(), 0700) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot hand ", pg->dir_, " to the postgres user: ", std::strerror(errno)));
    }
    std::string out;
    absl::StatusOr<int> can_write =
        RunCommand({runuser, "-u", "postgres", "--", "/usr/bin/test", "-w", pg->dir_}, "/", &out);
    if (!can_write.ok()) return can_write.status();
    if (*can_write != 0) {
      // Name the first folder on the way that the postgres user may not enter.
      std::string blocking = pg->dir_;
      fs::path walk;
      for (const fs::path& part : fs::path(pg->dir_)) {
        walk /= part;
        absl::StatusOr<int> can_enter =
            RunCommand({runuser, "-u", "postgres", "--", "/usr/bin/test", "-x", walk.string()}, "/", &out);
        if (can_enter.ok() && *can_enter != 0) {
          blocking = walk.string();
          break;
        }
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "PostgreSQL runs as the postgres user, which cannot reach ", pg->dir_, ": it may not enter ",
          blocking,
          ". Choose a folder it can reach (for example under /var/lib or /tmp) or allow it in (chmod o+x ",
          blocking, ")"));
    }
  } else {
    passwd* pw = getpwuid(geteuid());
    if (pw == nullptr) return absl::FailedPreconditionError("cannot find the name of the current user");
    pg->user_ = pw->pw_name;
  }

  if (data_version.empty()) {
    if (fs::exists(data, ec) && !fs::is_empty(data, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          data,
          " exists but is not a PostgreSQL cluster (no PG_VERSION): move it away or choose another folder"));
    }
    std::vector<std::string> initdb = {
        pg->bin_dir_ + "/initdb", "-D", data, "-U", pg->user_, "-A", "trust", "-E", "UTF8", "--locale=C",
        "--no-instructions"};
    if (!durable) initdb.push_back("--no-sync");
    std::string out;
    absl::StatusOr<int> rc = RunCommand(pg->RunAs(initdb), pg->dir_, &out);
    if (!rc.ok()) return rc.status();
    if (*rc != 0) {
      return absl::InternalError(absl::StrCat("initdb of ", data, " failed (exit ", *rc, "):\n", out));
    }
    std::ofstream conf(data + "/postgresql.conf", std::ios::app);
    conf << "\n# Settings of the bpnas local cluster, rewritten at every start.\n" << kIncludeLine << "\n";
    if (!conf) return absl::InternalError(absl::StrCat("cannot write ", data, "/postgresql.conf"));
  }

  absl::Status started = pg->StartServer();
  if (!started.ok()) return started;
  return pg;
}

std::vector<std::string> LocalPostgres::RunAs(std::vector<std::string> argv) const {
  if (run_as_.empty()) return argv;
  std::vector<std::string> wrapped = {FindRunuser(), "-u", run_as_, "--"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

absl::Status LocalPostgres::StartServer() {
  const std::string data = dir_ + "/data";
  const std::string log = dir_ + "/postgres.log";

  // A postmaster.pid left behind blocks the start when its PID belongs to a live process.
  if (std::ifstream pid_file(data + "/postmaster.pid"); pid_file) {
    std::string first_line;
    std::getline(pid_file, first_line);
    int pid = 0;
    if (absl::SimpleAtoi(Trimmed(first_line), &pid) && pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)) {
      std::string comm;
      if (std::ifstream comm_file(absl::StrCat("/proc/", pid, "/comm")); comm_file)
        std::getline(comm_file, comm);
      if (absl::StartsWith(comm, "postgres") || absl::StartsWith(comm, "postmaster")) {
        return absl::FailedPreconditionError(
            absl::StrCat("a PostgreSQL server (PID ", pid, ") already runs on ", data, ": stop it (",
                         bin_dir_, "/pg_ctl stop -D ", data, run_as_.empty() ? "" : ", as user postgres",
                         ") or, if it is not using this folder, delete ", data, "/postmaster.pid"));
      }
      // The PID was reused by an unrelated process after a crash: the file is stale.
      std::error_code ec;
      fs::remove(data + "/postmaster.pid", ec);
    }
  }

  // Our settings, in a file of their own that postgresql.conf includes last (so they win).
  {
    const std::string socket_name = absl::StrCat(dir_, "/.s.PGSQL.", port_);
    const bool socket_fits = socket_name.size() < sizeof(sockaddr_un::sun_path);
    std::ostringstream conf;
    conf << "listen_addresses = '127.0.0.1'\n"
         << "port = " << port_
         << "\n"
         // A unix socket only where its path fits in a socket address; TCP on loopback always.
         << "unix_socket_directories = " << ConfQuote(socket_fits ? dir_ : "") << "\n"
         << "max_connections = 200\n";
    const char* on_off = durable_ ? "on" : "off";
    conf << "fsync = " << on_off << "\n"
         << "synchronous_commit = " << on_off << "\n"
         << "full_page_writes = " << on_off << "\n";
    const std::string path = absl::StrCat(data, "/", kConfFile);
    std::ofstream out(path, std::ios::trunc);
    out << conf.str();
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
    if (!run_as_.empty()) {
      passwd* pw = getpwnam(run_as_.c_str());
      if (pw == nullptr || chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        return absl::InternalError(absl::StrCat("cannot hand ", path, " to user ", run_as_));
      }
    }
  }

  std::string out;
  absl::StatusOr<int> rc = RunCommand(
      RunAs({bin_dir_ + "/pg_ctl", "start", "-D", data, "-l", log, "-w", "-t", "60", "-s"}), dir_, &out);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) {
    std::string hint;
    if (out.find("postmaster.pid") != std::string::npos ||
        TailOfFile(log, 30).find("postmaster.pid") != std::string::npos) {
      hint = absl::StrCat(" (a stale ", data,
                          "/postmaster.pid blocks the start: if no server runs on this folder, delete it)");
    }
    return absl::InternalError(absl::StrCat("PostgreSQL did not start on 127.0.0.1:", port_, hint, ": ",
                                            Trimmed(out), "\nlast lines of ", log, ":\n",
                                            TailOfFile(log, 20)));
  }
  running_ = true;

  // Database `bpnas`, created when missing.
  const std::vector<std::string> psql = {
      bin_dir_ + "/psql",    "-X", "-q",  "-v", "ON_ERROR_STOP=1", "-h",  "127.0.0.1", "-p",
      std::to_string(port_), "-U", user_, "-d", "postgres",        "-tA", "-c"};
  std::vector<std::string> query = psql;
  query.push_back(absl::StrCat("SELECT 1 FROM pg_database WHERE datname = '", kDatabase, "'"));
  rc = RunCommand(RunAs(query), dir_, &out);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) return absl::InternalError(absl::StrCat("cannot query the new PostgreSQL server: ", out));
  if (Trimmed(out) != "1") {
    std::vector<std::string> create = psql;
    create.push_back(absl::StrCat("CREATE DATABASE ", kDatabase));
    rc = RunCommand(RunAs(create), dir_, &out);
    if (!rc.ok()) return rc.status();
    if (*rc != 0) return absl::InternalError(absl::StrCat("cannot create database ", kDatabase, ": ", out));
  }
  return absl::OkStatus();
}

std::string LocalPostgres::dsn() const {
  return absl::StrCat("host=127.0.0.1 port=", port_, " dbname=", kDatabase, " user=", user_);
}

absl::Status LocalPostgres::Stop() {
  if (!running_) return absl::OkStatus();
  std::string out;
  absl::StatusOr<int> rc = RunCommand(
      RunAs({bin_dir_ + "/pg_ctl", "stop", "-D", dir_ + "/data", "-m", "fast", "-w", "-t", "60", "-s"}), dir_,
      &out);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) {
    return absl::InternalError(absl::StrCat("PostgreSQL did not stop: ", Trimmed(out), "\nlast lines of ",
                                            dir_, "/postgres.log:\n",
                                            TailOfFile(dir_ + "/postgres.log", 20)));
  }
  running_ = false;
  return absl::OkStatus();
}

absl::Status LocalPostgres::Restart() {
  absl::Status stopped = Stop();
  if (!stopped.ok()) return stopped;
  return StartServer();
}

LocalPostgres::~LocalPostgres() { Stop().IgnoreError(); }

}  // namespace bpnas
