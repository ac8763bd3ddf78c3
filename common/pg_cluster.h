// LocalPostgres: a private PostgreSQL server in a folder of its own, for `bpnas up` (DESIGN.md §5)
// and for the tests that need a real database.
//
//   BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg,
//                          LocalPostgres::Start(state_dir + "/postgres", 5433));
//   BPNAS_RETURN_IF_ERROR(ApplyMigrations(pg->dsn()));
//
// The server's data lives in `dir`/data, its log in `dir`/postgres.log and its unix socket in
// `dir` (when the path is short enough for a socket name). It listens on 127.0.0.1:`port` only and
// trusts every connection from this machine without a password (any local user may connect as
// the cluster's superuser): right for a laptop or a container, not for a shared host.
// A folder that already holds a cluster from an earlier run is reused (started only); a fresh
// folder gets initdb first. Database `bpnas` is created when missing.
//
// When the process runs as root, PostgreSQL (which refuses to run as root) runs as the `postgres`
// system user: `dir` is handed to that user and every PostgreSQL command runs through runuser.
//
// Errors: FAILED_PRECONDITION with what to do about it when the PostgreSQL binaries are missing
// (looked for in /usr/lib/postgresql/<version>/bin, newest version first), when the `postgres`
// user cannot reach `dir` (a parent folder it may not traverse), or when another server already
// runs on the data; INTERNAL with the last lines of the server log when the server fails to start.
//
// Not thread-safe: one owner starts, restarts and stops it.
#ifndef BPNAS_COMMON_PG_CLUSTER_H_
#define BPNAS_COMMON_PG_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace bpnas {

class LocalPostgres {
 public:
  // durable = true: every commit reaches the disk before it returns (what `bpnas up` needs: a job
  // a user submitted must survive a power cut). durable = false: fsync, synchronous commit and
  // full-page writes are off and initdb skips its final sync, which is several times faster, but a
  // crash of the machine may lose or corrupt the data: only for tests and throw-away clusters. The
  // setting applies to every start (a reused folder takes the current one).
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> Start(const std::string& dir, int port,
                                                              bool durable = true);

  // Stops the server (fast shutdown) unless Stop() was called.
  ~LocalPostgres();
  LocalPostgres(const LocalPostgres&) = delete;
  LocalPostgres& operator=(const LocalPostgres&) = delete;

  // "host=127.0.0.1 port=N dbname=bpnas user=U" (U: the cluster's superuser).
  std::string dsn() const;
  const std::string& dir() const { return dir_; }
  int port() const { return port_; }

  // Fast shutdown: open connections are closed, committed data is kept. A stopped server stays
  // stopped; calling Stop() again does nothing.
  absl::Status Stop();
  // Stop, then start again on the same data and port (clients see their connections break).
  absl::Status Restart();

 private:
  LocalPostgres() = default;
  // Writes the settings file, starts the server on the existing cluster, creates the database.
  absl::Status StartServer();
  // `argv` prefixed with runuser when the server runs as another user.
  std::vector<std::string> RunAs(std::vector<std::string> argv) const;

  std::string dir_;      // absolute
  std::string bin_dir_;  // /usr/lib/postgresql/<version>/bin
  std::string run_as_;   // "postgres" when started by root, else empty (run as ourselves)
  std::string user_;     // the cluster's superuser name
  int port_ = 0;
  bool durable_ = true;
  bool running_ = false;
};

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
int PickFreePort();

}  // namespace bpnas

#endif  // BPNAS_COMMON_PG_CLUSTER_H_
