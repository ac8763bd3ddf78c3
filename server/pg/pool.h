// PgPool: runs a function inside one PostgreSQL transaction on a pooled connection, and is the one
// place in bpnas where libpqxx exceptions become an absl::Status.
//
//   std::shared_ptr<PgPool> pool = PgConnectionPool::Create(dsn, PgPoolOptions{});
//   absl::StatusOr<int64_t> n = pool->Run<int64_t>(
//       "count jobs", TxKind::kSingleStatement,
//       [](pqxx::transaction_base& tx) -> absl::StatusOr<int64_t> {
//         return tx.exec1("SELECT count(*) FROM jobs")[0].as<int64_t>();
//       });
//
// PgPool is an interface (an I/O edge) so that tests can wrap the real pool with one that injects
// faults: a serialization failure inside a transaction, a connection lost before or while
// committing.
//
// Errors, by what the caller should do next:
//   UNAVAILABLE  the database cannot be reached, or the connection broke. Retry the call later.
//                When the connection broke while committing, the message says that the change may
//                or may not have been stored: only an idempotent write may simply be repeated.
//   ABORTED      a serialization failure or deadlock that persisted through the pool's own
//                retries (PgPoolOptions::conflict_retries): retry the transaction.
//   INTERNAL     any other SQL error or exception (a bug: a constraint violation that should not
//                happen, a malformed statement), with the SQLSTATE and the server's message.
//   otherwise    the status the function returned (the transaction was rolled back).
// Messages name the operation (`what`) and, for connection problems, the database without the
// password (RedactedDsn).
#ifndef BPNAS_SERVER_PG_POOL_H_
#define BPNAS_SERVER_PG_POOL_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status.h"

namespace bpnas {

enum class TxKind {
  kTransaction,      // BEGIN ... COMMIT around the function
  kSingleStatement,  // autocommit: for a function that runs exactly one statement
};

// The body of one transaction. Returns OK to commit; any other status rolls the transaction back
// and becomes the result. It may run more than once (the pool repeats a transaction that hit a
// serialization failure or deadlock), so it must not change anything outside `tx` that a repeat
// would spoil.
using TxFunction = std::function<absl::Status(pqxx::transaction_base& tx)>;

class PgPool {
 public:
  virtual ~PgPool() = default;

  // Runs `fn` in one transaction of kind `kind` on a pooled connection (waiting while every
  // connection is in use) and commits when it returns OK. `what` names the operation in errors.
  // Thread-safe.
  virtual absl::Status RunTransaction(const char* what, TxKind kind, const TxFunction& fn) = 0;

  // RunTransaction for a function that produces a value: the value of the committed run.
  template <typename T>
  absl::StatusOr<T> Run(const char* what, TxKind kind,
                        const std::function<absl::StatusOr<T>(pqxx::transaction_base&)>& fn) {
    std::optional<T> out;
    BPNAS_RETURN_IF_ERROR(RunTransaction(what, kind, [&](pqxx::transaction_base& tx) -> absl::Status {
      absl::StatusOr<T> value = fn(tx);
      if (!value.ok()) return value.status();
      out = std::move(*value);
      return absl::OkStatus();
    }));
    return std::move(*out);
  }
};

struct PgPoolOptions {
  // The most connections open at once (idle + in use); at least 1.
  int max_connections = 8;
  // Statements prepared on every new connection: (name, SQL). Use them with exec_prepared.
  std::vector<std::pair<std::string, std::string>> prepared;
  // How often a transaction that failed with a serialization failure or deadlock is run again
  // before ABORTED is returned.
  int conflict_retries = 2;
};

// The real pool: up to max_connections libpqxx connections, opened on demand.
//
// Losing the database: a call that finds the connection broken returns UNAVAILABLE and closes the
// idle connections too (most likely broken as well); the next call connects again, so a
// PostgreSQL restart heals without restarting the process. A pooled connection found dead before
// anything ran on it is replaced once, silently.
class PgConnectionPool : public PgPool {
 public:
  // Does not connect (the first call does). options.max_connections < 1: INVALID_ARGUMENT.
  static absl::StatusOr<std::shared_ptr<PgConnectionPool>> Create(const std::string& dsn,
                                                                  PgPoolOptions options);
  ~PgConnectionPool() override;

  PgConnectionPool(const PgConnectionPool&) = delete;
  PgConnectionPool& operator=(const PgConnectionPool&) = delete;

  absl::Status RunTransaction(const char* what, TxKind kind, const TxFunction& fn) override;

 private:
  PgConnectionPool(std::string dsn, PgPoolOptions options);

  // A connection: an idle one (*reused = true) or a new one. UNAVAILABLE if connecting fails.
  absl::StatusOr<std::unique_ptr<pqxx::connection>> Acquire(bool* reused);
  // Returns `conn` to the idle list, or, when broken, closes it and every idle connection.
  void Release(std::unique_ptr<pqxx::connection> conn, bool broken);

  const std::string dsn_;
  const std::string connect_dsn_;
  const PgPoolOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;  // guarded by mu_
  int open_ = 0;                                         // idle + checked out; guarded by mu_
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_PG_POOL_H_
